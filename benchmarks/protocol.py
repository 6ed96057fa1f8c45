"""The protocol suite's plan, time estimates and table: strong teachers, small transfer sets, seeds, paired intervals.

`run.py --suite protocol` uses this module; see docs/benchmarks.md for how to run it in slices.
"""

from __future__ import annotations

import math

import numpy as np
import stats

SYSTEMS = ["kd", "sage", "sage_hardest_of_4", "sage_same_label_of_3", "sage_balanced", "sage_swap_shared",
           "sage_shift", "sage_replace", "sage_interpolate", "sage_random_anchors", "sage_adversarial", "sage_repeat",
           "kd_same_passes", "sage_quarter_synthetic", "sage_mix", "sage_late", "kd_hidden", "sage_hidden",
           "kd_hidden_x12", "sage_hidden_x12", "sage_hidden_x3", "kd_shuffled",
           "textbrewer_kd", "torchdistill_kd", "textbrewer_hidden"]
TASKS = ["sst2", "cola", "mrpc", "rte", "stsb"]
BASELINE = "kd"
RATE_SYSTEMS = ("kd", "sage")  # the systems whose finished cells set a task's seconds per step
TRAIN_SIZES = {"sst2": 67349, "cola": 8551, "mrpc": 3668, "rte": 2490, "stsb": 5749}  # GLUE train sets
BATCH_SIZE = 32

# Seconds per student optimiser step (batch 32), whole cell (logit caching, SAGE rounds, agreement callback and
# evaluation included), measured with default SAGE on the `cpu` suite (2 AMD EPYC cores, 2026-11-22: cell wall_s /
# steps). GPU: the H100 `explore` run's SST-2 cells (0.12 s/step), other tasks scaled as on the CPU. Finished cells
# of the same task and device in the results file replace these (see `rates`).
SECONDS_PER_STEP = {"cpu": {"sst2": 0.68, "cola": 0.48, "mrpc": 1.27, "rte": 1.60, "stsb": 0.88},
                    "cuda": {"sst2": 0.12, "cola": 0.085, "mrpc": 0.22, "rte": 0.28, "stsb": 0.155}}
# Teacher fine-tuning, training examples per second (the packaged MiniLM, batch 32), from the same runs' first cells.
TEACHER_EXAMPLES_PER_S = {"cpu": {"sst2": 60, "cola": 80, "mrpc": 20, "rte": 15, "stsb": 35},
                          "cuda": {"sst2": 900, "cola": 1200, "mrpc": 300, "rte": 225, "stsb": 525}}


def teacher_mismatch(recorded: dict, fresh: dict, min_agreement: float = 0.995, max_abs: float = 0.01) -> str | None:
    """Why `fresh` (a teacher step's output) is not the teacher the results file recorded, or None when it is.

    The same weights on another CPU may round a few borderline examples the other way, so classification
    predictions must agree on `min_agreement` of dev and regression scores within `max_abs`; a teacher trained
    again differs by far more (CoLA: 27.56 vs 25.12 MCC).
    """
    old, new = recorded.get("dev_predictions"), fresh.get("dev_predictions")
    if old is None or new is None:
        return None  # recorded before teachers kept their predictions: nothing to compare
    a, b = stats.decode_predictions(old), stats.decode_predictions(new)
    if a.shape != b.shape:
        return f"the dev predictions differ in length ({len(a)} recorded, {len(b)} now)"
    if isinstance(old, str):
        agree = float(np.mean(a == b))
        same, detail = agree >= min_agreement, f"its dev predictions agree on {agree:.1%} of examples"
    else:
        gap = float(np.max(np.abs(a - b))) if len(a) else 0.0
        same, detail = gap <= max_abs, f"its dev scores differ by up to {gap:.3f}"
    if same:
        return None
    return (f"the teacher in the work folder ({fresh.get('teacher_id')}) is not the one this results file's cells "
            f"were paired with: {detail}, metric {fresh.get('teacher_metric')} now vs {recorded.get('teacher_metric')}"
            " recorded. A teacher fine-tuned again (another machine, another library version) is another teacher: "
            "bring back the recorded teacher's folder, or run these cells into a results file of their own (--date).")


def majority_baseline(task: str, teacher: dict) -> float | None:
    """The dev metric of one answer for every example (the commonest dev label; STS-B: a constant score).

    The floor a teacher must clear before its students' differences mean anything: RTE's fine-tuned MiniLM sits a
    few points above it. None when the teacher record holds no dev labels.
    """
    labels = teacher.get("dev_labels")
    if labels is None or len(labels) == 0:
        return None
    gold = stats.decode_predictions(labels)
    answer = gold.mean() if task == "stsb" else np.bincount(gold).argmax()
    return stats.task_metric(task, np.full_like(gold, answer), gold)


def transfer_size(task: str, suite_tasks: dict, transfer_sst2: int | None) -> int:
    n = suite_tasks[task]["max_train_samples"] if not (task == "sst2" and transfer_sst2) else transfer_sst2
    return min(n or TRAIN_SIZES[task], TRAIN_SIZES[task])


def cell_steps(task: str, system: str, spec: dict, transfer_sst2: int | None, overrides: dict) -> int:
    """Optimiser steps of a cell: default SAGE's (augment: real + as many synthetic a epoch, plus the warm-up),
    which plain KD and the peers match; the paper's replace mode trains on the synthetic set alone."""
    n = transfer_size(task, spec["tasks"], transfer_sst2)
    if overrides.get("budget") == "real_passes":  # plain KD for the suite's epochs over the real set
        return int(spec["epochs"] * math.ceil(n / BATCH_SIZE))
    per_epoch = n if overrides.get("synthesis_mode") == "replace" else 2 * n
    warm = math.ceil(spec["warmup_max_samples"] / BATCH_SIZE)
    return int(spec["epochs"] * math.ceil(per_epoch / BATCH_SIZE) + warm)


def _finished(report: dict, device: str) -> list[dict]:
    return [c for c in report.get("cells", []) if c.get("error") is None and c.get("steps") and c.get("wall_s")
            and c.get("device", "cpu") == device]


def rates(report: dict, device: str) -> tuple[dict, dict]:
    """Seconds per step per task (plain KD and default SAGE) and teacher examples per second: recorded defaults,
    refined by finished work.

    A task with finished kd/sage cells (or a trained teacher) on this device uses their mean; the others get the
    recorded default scaled by how much faster or slower the finished ones ran than their defaults (this machine's
    speed).
    """
    finished = [c for c in _finished(report, device) if c["system"] in RATE_SYSTEMS]
    per_step = _calibrated(SECONDS_PER_STEP[device], {
        task: [c["wall_s"] / c["steps"] for c in finished if c["task"] == task] for task in SECONDS_PER_STEP[device]})
    teacher = _calibrated(TEACHER_EXAMPLES_PER_S[device], {
        task: [t["train_examples"] * t["epochs"] / t["seconds"]]
        for task, t in report.get("teachers", {}).items()
        if t.get("error") is None and t.get("train_examples") and t.get("seconds") and t.get("device") == device
        and not t.get("reused")})  # a teacher loaded from the work folder took seconds, not a fine-tuning
    return per_step, teacher


def system_rates(report: dict, device: str, per_step: dict) -> tuple[dict, dict]:
    """(task, system) -> seconds per step of its finished cells, and system -> how many times the kd/sage rate of
    the same tasks it runs at (the peers run the teacher every step: about 2-3x on this CPU)."""
    measured: dict[tuple, list] = {}
    for c in _finished(report, device):
        measured.setdefault((c["task"], c["system"]), []).append(c["wall_s"] / c["steps"])
    exact = {key: float(np.mean(v)) for key, v in measured.items()}
    ratios: dict[str, list] = {}
    for (task, system), rate in exact.items():
        if task in per_step:
            ratios.setdefault(system, []).append(np.log(rate / per_step[task]))
    return exact, {system: float(np.exp(np.mean(v))) for system, v in ratios.items()}


def _calibrated(defaults: dict, measured: dict) -> dict:
    found = {task: float(np.mean(v)) for task, v in measured.items() if v and task in defaults}
    scale = float(np.exp(np.mean([np.log(v / defaults[t]) for t, v in found.items()]))) if found else 1.0
    return {task: found.get(task, default * scale) for task, default in defaults.items()}


def estimate(cells: list, teachers: list, report: dict, spec: dict, systems: dict, device: str,
             transfer_sst2: int | None) -> dict:
    """Seconds per pending cell and teacher, with the total; `cells` are (task, system, seed) still to run.

    A (task, system) with finished cells runs at their rate; another cell of a system measured elsewhere at the
    task's kd/sage rate times the system's factor; an unmeasured system at the task's rate.
    """
    per_step, teacher_rate = rates(report, device)
    exact, factor = system_rates(report, device, per_step)
    out = {"cells": {}, "teachers": {}}
    for task, system, seed in cells:
        steps = cell_steps(task, system, spec, transfer_sst2, systems[system])
        rate = exact.get((task, system), per_step[task] * factor.get(system, 1.0))
        out["cells"][(task, system, seed)] = steps * rate
    for task in teachers:
        out["teachers"][task] = spec["teacher_epochs"] * TRAIN_SIZES[task] / teacher_rate[task]
    out["total_s"] = sum(out["cells"].values()) + sum(out["teachers"].values())
    return out


def estimate_text(est: dict) -> str:
    lines = [f"Estimated time: {est['total_s'] / 3600:.1f} h ({len(est['cells'])} cells, {len(est['teachers'])} "
             "teachers to train)"]
    for task, s in est["teachers"].items():
        lines.append(f"  teacher {task}: {s / 60:.0f} min")
    by_task: dict[str, list] = {}
    for (task, system, _), s in est["cells"].items():
        by_task.setdefault(task, []).append((system, s))
    for task, items in by_task.items():
        per = sorted({(sys_, round(s / 60)) for sys_, s in items})
        lines.append(f"  {task}: {len(items)} cells, " + ", ".join(f"{n} ~{m} min" for n, m in per))
    return "\n".join(lines)


# ---- table ---------------------------------------------------------------------------------------------------------

def _pm(mean, std) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _interval(mean, low, high) -> str:
    if mean is None:
        return "n/a"
    if low is None:
        return f"{100 * mean:+.2f}"
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _ok(cells: list, task: str, system: str) -> dict:
    """Seed -> cell, for the finished (error-free) cells of one task and system."""
    return {c["seed"]: c for c in cells if c["task"] == task and c["system"] == system
            and c.get("error") is None and c.get("dev_metric") is not None}


def summarise(report: dict, baseline: str = BASELINE) -> dict:
    """Per system: per task and on the task average, mean/std over seeds, agreement, paired differences to one."""
    cells, teachers = report["cells"], report.get("teachers", {})
    tasks = [t for t in TASKS if any(c["task"] == t for c in cells)]
    systems = [s for s in report.get("systems_order", SYSTEMS) if any(c["system"] == s for c in cells)]
    systems += sorted({c["system"] for c in cells} - set(systems))
    out = {"tasks": tasks, "systems": {}}
    for system in systems:
        row = {"tasks": {}, "errors": sorted({str(c["error"])[:120] for c in cells
                                              if c["system"] == system and c.get("error")})}
        boot_avg = []
        for task in tasks:
            mine, base = _ok(cells, task, system), _ok(cells, task, baseline)
            entry = dict(zip(("mean", "std"), stats.mean_std([c["dev_metric"] for c in mine.values()])))
            entry["seeds"] = len(mine)
            teacher = teachers.get(task, {})
            agreements = []
            for c in mine.values():
                if c.get("dev_predictions") is not None and teacher.get("dev_predictions") is not None:
                    agreements.append(stats.teacher_agreement(task, stats.decode_predictions(c["dev_predictions"]),
                                                              stats.decode_predictions(teacher["dev_predictions"])))
                elif c.get("agreement") is not None:
                    agreements.append(c["agreement"])
            entry["agreement"] = stats.mean_std(agreements)[0]
            paired = sorted(s for s in mine if s in base and mine[s].get("teacher_id") == base[s].get("teacher_id"))
            entry["paired_seeds"] = paired
            entry["diffs"] = {s: mine[s]["dev_metric"] - base[s]["dev_metric"] for s in paired}
            entry["t"] = stats.t_interval(list(entry["diffs"].values()))
            entry["boot"] = None
            preds = [mine[s].get("dev_predictions") is not None and base[s].get("dev_predictions") is not None
                     for s in paired]
            if system != baseline and paired and all(preds) and teacher.get("dev_labels") is not None:
                reps = stats.bootstrap_differences(
                    task, stats.decode_predictions(teacher["dev_labels"]),
                    [stats.decode_predictions(mine[s]["dev_predictions"]) for s in paired],
                    [stats.decode_predictions(base[s]["dev_predictions"]) for s in paired],
                    seed=stats.BOOTSTRAP_SEED + TASKS.index(task))
                entry["boot"] = (float(reps.mean()), *stats.percentile_interval(reps))
                boot_avg.append(reps)
            row["tasks"][task] = entry
        # the task average per seed, over the seeds every task has
        seeds = set.intersection(*[set(_ok(cells, t, system)) for t in tasks]) if tasks else set()
        per_seed = {s: float(np.mean([_ok(cells, t, system)[s]["dev_metric"] for t in tasks])) for s in sorted(seeds)}
        avg = {"seeds": len(per_seed), **dict(zip(("mean", "std"), stats.mean_std(list(per_seed.values()))))}
        common = [s for s in per_seed if all(s in row["tasks"][t]["diffs"] for t in tasks)]
        avg["t"] = stats.t_interval([np.mean([row["tasks"][t]["diffs"][s] for t in tasks]) for s in common])
        avg["boot"] = None
        if len(boot_avg) == len(tasks) and tasks:
            reps = np.mean(boot_avg, axis=0)
            avg["boot"] = (float(reps.mean()), *stats.percentile_interval(reps))
        row["average"] = avg
        out["systems"][system] = row
    return out


def markdown(report: dict) -> str:
    summary = summarise(report)
    tasks, teachers = summary["tasks"], report.get("teachers", {})
    cols = tasks + ["average"]
    head = ("| system | " + " | ".join(f"{t} ({_metric_name(report, t)})" for t in tasks)
            + f" | {len(tasks)}-task average |")
    rule = "|" + "---|" * (len(cols) + 1)
    wall = report.get("suite_wall_s")
    lines = [f"Suite `protocol`, {report['date']}, on {_machine_text(report.get('machine', {}))}"
             + (f"; wall time {wall / 3600:.2f} h." if wall else "."),
             f"Command: `{report.get('command', '')}`", "",
             "Teachers (dev metric x100; one answer for every dev example, the commonest label; source; examples it "
             "was fine-tuned on / transfer set the students see):", "",
             "| task | teacher dev | one answer | source | teacher train | transfer set |", "|---" * 6 + "|"]
    for t in tasks:
        tt = teachers.get(t, {})
        lines.append(f"| {t} | {_pm(tt.get('teacher_metric'), None)} | {_pm(majority_baseline(t, tt), None)} | "
                     f"{tt.get('source', 'n/a')} | "
                     f"{tt.get('train_examples') or 'n/a'} | {tt.get('transfer_examples') or 'n/a'} |")
    lines += ["", "Dev metric x100, mean ± std over seeds (sample std), and in brackets agreement with the teacher on "
              "dev (x100; STS-B: Pearson r with the teacher's scores):", "", head, rule]
    for system, row in summary["systems"].items():
        parts = []
        for t in tasks:
            e = row["tasks"][t]
            agr = f" ({100 * e['agreement']:.1f})" if e["agreement"] is not None else ""
            text = _pm(e["mean"], e["std"]) if e["seeds"] or not row["errors"] else "error"
            parts.append(text + agr + (f" n={e['seeds']}" if e["seeds"] not in (0, 3) else ""))
        a = row["average"]
        avg_text = _pm(a["mean"], a["std"]) + (f" n={a['seeds']}" if a["seeds"] not in (0, 3) else "")
        lines.append(f"| {system} | " + " | ".join(parts) + f" | {avg_text} |")
    for kind, title in (("t", "t interval over seeds"),
                        ("boot", f"paired bootstrap over dev examples pooled across seeds ({stats.BOOTSTRAP_SAMPLES} "
                                 f"replicates, seed {stats.BOOTSTRAP_SEED})")):
        lines += ["", f"Paired difference to `{BASELINE}` (same seed, same teacher), x100, with its 95% {title}:", "",
                  head + " excludes 0 (average) |", rule + "---|"]
        for system, row in summary["systems"].items():
            if system == BASELINE:
                continue
            vals = [row["tasks"][t][kind] for t in tasks] + [row["average"][kind]]
            texts = [_interval(*(v or (None, None, None))) for v in vals]
            avg = vals[-1] or (None, None, None)
            lines.append(f"| {system} | " + " | ".join(texts) + f" | {stats.excludes_zero(avg[1], avg[2])} |")
    lines += ["", "Seconds per cell (mean over finished cells) and errors:", "", "| system | s per cell | errors |",
              "|---|---|---|"]
    for system, row in summary["systems"].items():
        secs = [c.get("wall_s") for c in report["cells"] if c["system"] == system and c.get("error") is None]
        mean = stats.mean_std(secs)[0]
        errors = "; ".join(row["errors"]) or ""
        lines.append(f"| {system} | {'' if mean is None else f'{mean:.0f}'} | {errors} |")
    lines += ["", "Excludes 0: 'above' when the whole interval is above zero (better than KD), 'below' when below, "
              "'no' when it holds zero; the 5-task average uses the seeds (t) or replicates (bootstrap) where every "
              "task has both cells. n=k marks a figure over k seeds instead of 3."]
    return "\n".join(lines) + "\n"


def _metric_name(report: dict, task: str) -> str:
    t = report.get("teachers", {}).get(task, {})
    return t.get("metric_name") or next((c.get("metric_name") for c in report["cells"] if c["task"] == task
                                         and c.get("metric_name")), "")


def _machine_text(m: dict) -> str:
    return m.get("gpu") or f"{m.get('cpu', 'CPU')} ({m.get('cores')} cores)"
