#!/usr/bin/env python
"""Side-by-side benchmark suite: SAGE vs plain KD vs ablations vs peer toolkits, quality, speed, memory.

    python benchmarks/run.py --suite small                       # SST-2 + RTE, 1 seed, KD vs SAGE vs reducer none
    python benchmarks/run.py --suite full --seeds 0 1 2          # 5 tasks, every system, mean and std over seeds
    python benchmarks/run.py --suite small --resume              # skip cells already in the results file
    python benchmarks/run.py --suite protocol --tasks rte --systems kd sage --resume   # one slice of the protocol

Each cell runs `benchmarks/cell.py` in its own process. Writes benchmarks/results/<suite>-<date>.json (top-level
`cells`) after every cell, a markdown table <suite>-<date>.md and plots <suite>-<date>-*.png beside it.
The `protocol` suite first trains (or reuses) each task's strong teacher as a step of its own, prints an estimated
time, and its table gives paired differences to plain KD with 95% intervals (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import protocol  # noqa: E402
from cell import SUITES, SYSTEMS, machine, versions  # noqa: E402

SMALL_SYSTEMS = ["kd", "sage", "sage_reducer_none"]
SST2_TRANSFER = SUITES["protocol"]["tasks"]["sst2"]["max_train_samples"]


def plan(suite: str, tasks: list[str] | None, systems: list[str] | None, seeds: list[int] | None):
    tasks = tasks or list(SUITES[suite]["tasks"])
    if systems is None:
        systems = protocol.SYSTEMS if suite == "protocol" else (
            SMALL_SYSTEMS if suite in ("small", "cpu") else list(SYSTEMS))
    seeds = seeds if seeds is not None else ([0] if suite in ("small", "cpu") else [0, 1, 2])
    # teachers first (every task's first cell trains and caches its teacher), systems in a stable order
    return [(t, s, seed) for seed in seeds for t in tasks for s in systems]


def results_path(args) -> Path:
    """<suite>-<date>.json; a protocol run on another SST-2 transfer set than 8,000, or for other epochs than the
    suite's, gets its own file."""
    date = args.date or dt.date.today().isoformat()
    stem = args.suite
    if args.suite == "protocol" and args.transfer_sst2 not in (None, SST2_TRANSFER):
        stem += f"-sst2x{args.transfer_sst2}"
    if args.epochs not in (None, SUITES[args.suite]["epochs"]):
        stem += f"-e{args.epochs}"
    return Path(args.results_dir) / f"{stem}-{date}.json"


def run_process(cmd: list[str]) -> subprocess.CompletedProcess:
    """One cell or teacher step in a process of its own (tests replace this)."""
    return subprocess.run(cmd, capture_output=True, text=True)


def _step(cmd: list[str], out_file: Path, fallback: dict) -> dict:
    out_file.unlink(missing_ok=True)  # a process that dies must not pass for the last run's output
    proc = run_process(cmd)
    if out_file.is_file():
        return json.loads(out_file.read_text())
    return {**fallback, "error": f"process exited {proc.returncode}: {proc.stderr[-1500:]}"}


def _common_args(args, task: str) -> list[str]:
    cmd = ["--suite", args.suite, "--device", args.device, "--work", str(Path(args.results_dir) / "work")]
    if args.glue_dir:
        cmd += ["--glue_dir", args.glue_dir]
    if task == "sst2" and args.suite == "protocol":
        cmd += ["--teacher_dir", args.teacher_dir_sst2]
        if args.transfer_sst2 is not None:
            cmd += ["--transfer_sst2", str(args.transfer_sst2)]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    return cmd


def run_teachers(args, report: dict, tasks: list[str], out: Path, verify: set[str] = frozenset()) -> set[str]:
    """Each task's teacher as a step of its own (trained once, cached in the work folder); returns failed tasks.

    A teacher the results file already records is checked again for the tasks in `verify` (those with cells to
    run): the cached one scores dev anew and must predict what the recorded one did. Cells pair only under one
    teacher, and a teacher fine-tuned again on another machine is another teacher (2026-12-06: the same code,
    seed and versions on an AMD EPYC instead of an Intel Xeon gave CoLA MCC 27.56 instead of 25.12).
    """
    failed = set()
    for task in tasks:
        recorded = report["teachers"].get(task, {})
        check = recorded.get("error", True) is None
        if check and task not in verify:
            continue
        teacher_file = Path(args.results_dir) / "cells" / f"{out.stem}-teacher-{task}.json"
        cmd = [sys.executable, str(HERE / "cell.py"), "--teacher_only", "--task", task, "--out", str(teacher_file),
               *_common_args(args, task)]
        print(f"[teacher] {task}" + (" (checking it is the recorded one)" if check else ""), flush=True)
        teacher = _step(cmd, teacher_file, {"task": task})
        if check:
            why = teacher.get("error") or protocol.teacher_mismatch(recorded, teacher)
            if why:
                failed.add(task)
                print(f"  ERROR {str(why)[:600]}", flush=True)
            continue
        teacher.update(device=args.device, run_command=f"python benchmarks/run.py --suite {args.suite} "
                       f"--teachers_only --tasks {task} --device {args.device}")
        report["teachers"][task] = teacher
        out.write_text(json.dumps(report, indent=2, default=str))
        if teacher.get("error"):
            failed.add(task)
            print(f"  ERROR {str(teacher['error'])[:300]}", flush=True)
        else:
            print(f"  {teacher.get('metric_name')}={teacher.get('teacher_metric')} ({teacher.get('source')}, "
                  f"{teacher.get('seconds')}s)", flush=True)
    return failed


def run_suite(args) -> Path:
    out = results_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    date = args.date or dt.date.today().isoformat()
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    report = {"suite": args.suite, "date": date, "machine": machine(), "versions": versions(),
              "command": command, "cells": []}
    if args.resume and out.is_file():
        report = {**report, **json.loads(out.read_text()), "command": command}
    report.setdefault("teachers", {})
    done = {(c["task"], c["system"], c["seed"]) for c in report["cells"]
            if c.get("error") is None or (c.get("final") and not args.retry_failed)}
    cells = plan(args.suite, args.tasks, args.systems, args.seeds)
    pending = [c for c in cells if c not in done]
    is_protocol = args.suite == "protocol"
    tasks = list(dict.fromkeys(t for t, _, _ in cells))
    if is_protocol:
        report["systems_order"] = list(dict.fromkeys([*report.get("systems_order", []), *protocol.SYSTEMS,
                                                     *(s for _, s, _ in cells)]))
        teachers_due = [t for t in tasks if report["teachers"].get(t, {}).get("error", True) is not None]
        spec = SUITES[args.suite] if args.epochs is None else {**SUITES[args.suite], "epochs": args.epochs}
        est = protocol.estimate([] if args.teachers_only else pending, teachers_due, report, spec, SYSTEMS,
                                args.device, args.transfer_sst2)
        print(protocol.estimate_text(est), flush=True)
        report["estimate_s"] = round(est["total_s"], 1)
    if args.dry_run:
        for task, system, seed in pending:
            print(f"  would run {task} {system} seed {seed}")
        return out
    start, started = time.time(), dt.datetime.now().isoformat(timespec="seconds")
    to_run = set() if args.teachers_only else {t for t, _, _ in pending}
    failed_teachers = run_teachers(args, report, tasks, out, verify=to_run) if is_protocol else set()
    for i, (task, system, seed) in enumerate([] if args.teachers_only else cells, 1):
        if (task, system, seed) in done:
            continue
        if task in failed_teachers:
            print(f"[{i}/{len(cells)}] {task} {system} seed {seed}: skipped, the teacher step failed or the "
                  "teacher is not the recorded one", flush=True)
            continue
        if args.budget_s and time.time() - start > args.budget_s:
            print(f"budget of {args.budget_s}s spent: {len(cells) - i + 1} cells left out", flush=True)
            report.setdefault("left_out", []).extend([list(c) for c in cells[i - 1:]])
            break
        cell_file = out.parent / "cells" / f"{out.stem}-{task}-{system}-{seed}.json"
        cmd = [sys.executable, str(HERE / "cell.py"), "--task", task, "--system", system, "--seed", str(seed),
               "--out", str(cell_file), *_common_args(args, task)]
        print(f"[{i}/{len(cells)}] {task} {system} seed {seed}", flush=True)
        t0 = time.time()
        cell = _step(cmd, cell_file, {"task": task, "system": system, "seed": seed, "dev_metric": None})
        cell.setdefault("wall_s", round(time.time() - t0, 1))
        cell["device"] = args.device
        peer_error = str(cell.get("error")).startswith(("Peer", "textbrewer", "torchdistill"))
        cell["final"] = cell.get("error") is not None and peer_error
        if is_protocol and cell.get("teacher_metric") is None:
            cell["teacher_metric"] = report["teachers"].get(task, {}).get("teacher_metric")
        report["cells"] = [c for c in report["cells"] if (c["task"], c["system"], c["seed"]) != (task, system, seed)]
        report["cells"].append(cell)
        summary = f"  {cell.get('metric_name')}={cell.get('dev_metric')} agreement={cell.get('agreement')} " \
                  f"wall={cell.get('wall_s')}s rss={cell.get('peak_rss_mb')}MB"
        print(summary + (f" ERROR {str(cell['error'])[:300]}" if cell.get("error") else ""), flush=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    wall = round(time.time() - start, 1)
    report.setdefault("runs", []).append({"command": command, "started": started, "wall_s": wall})
    report["suite_wall_s"] = round(sum(r["wall_s"] for r in report["runs"]), 1)
    out.write_text(json.dumps(report, indent=2, default=str))
    write_table(report, out)
    return out


def write_table(report: dict, out: Path) -> None:
    table = protocol.markdown(report) if report["suite"] == "protocol" else markdown(report)
    out.with_suffix(".md").write_text(table)
    plots(report, out.with_suffix(""))
    print(table)


def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals)) if len(vals) > 1 else None


def _fmt(mean, std, scale=100.0):
    if mean is None:
        return "n/a"
    return f"{mean * scale:.2f}" + (f" ± {std * scale:.2f}" if std is not None else "")


def markdown(report: dict) -> str:
    cells = report["cells"]
    tasks = sorted({c["task"] for c in cells})
    systems = [s for s in SYSTEMS if any(c["system"] == s for c in cells)]
    teacher = {t: _mean_std([c.get("teacher_metric") for c in cells if c["task"] == t])[0] for t in tasks}
    metric = {t: next((c.get("metric_name") for c in cells if c["task"] == t and c.get("metric_name")), "")
              for t in tasks}
    head = ("| system | " + " | ".join(f"{t} ({metric[t]})" for t in tasks)
            + " | average | retention | train s | wall s | peak RSS MB |")
    lines = [f"Suite `{report['suite']}`, {report['date']}, on {_machine_text(report['machine'])}.",
             f"Command: `{report['command']}`", "", head, "|" + "---|" * (len(tasks) + 6)]
    lines.append("| teacher | " + " | ".join(_fmt(teacher[t], None) for t in tasks) + " | "
                 + _fmt(_avg([teacher[t] for t in tasks]), None) + " | 100% | | | |")
    for system in systems:
        row, per_task_means = [], []
        for t in tasks:
            sel = [c for c in cells if c["task"] == t and c["system"] == system]
            mean, std = _mean_std([c.get("dev_metric") for c in sel])
            per_task_means.append(mean)
            err = next((c["error"] for c in sel if c.get("error")), None)
            row.append(_fmt(mean, std) if mean is not None else f"error: {str(err)[:60]}" if err else "n/a")
        avg = _avg(per_task_means)
        t_avg = _avg([teacher[t] for t in tasks])
        retention = f"{100 * avg / t_avg:.1f}%" if avg is not None and t_avg else "n/a"
        sel = [c for c in cells if c["system"] == system]
        wall = _mean_std([c.get("wall_s") for c in sel])[0]
        train = _mean_std([_train_seconds(c) for c in sel])[0]
        rss = max([c.get("peak_rss_mb") or 0 for c in sel] or [0])
        train_text = f"{train:.0f}" if train is not None else ""
        cells_text = f"| {system} | " + " | ".join(row)
        if wall is None:
            lines.append(cells_text + " | | | | | |")
        else:
            lines.append(cells_text + f" | {_fmt(avg, None)} | {retention} | {train_text} | {wall:.0f} | {rss:.0f} |")
    lines += ["", "Metric: GLUE dev, x100, mean ± std over seeds where there are several. Retention: student average /"
              " teacher average. Train s: mean per cell of the seconds inside training, SAGE rounds included (teacher"
              " stage, logit caching and evaluation excluded). Wall s: mean per cell, all of it, the teacher stage"
              " included in each task's first cell. Peak RSS: the largest cell's."]
    left = report.get("left_out")
    if left:
        lines.append(f"Left out (budget): {len(left)} cells: {', '.join('/'.join(map(str, c)) for c in left[:20])}")
    return "\n".join(lines) + "\n"


def _train_seconds(cell: dict):
    if cell.get("seconds_train") is None:
        return None
    return cell["seconds_train"] + sum((cell.get("seconds_stages") or {}).values())


def _avg(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else None


def _machine_text(m: dict) -> str:
    return m.get("gpu") or f"{m.get('cpu', 'CPU')} ({m.get('cores')} cores)"


def plots(report: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in report["cells"] if c.get("dev_metric") is not None]
    if not cells:
        return
    tasks = sorted({c["task"] for c in cells})
    systems = [s for s in SYSTEMS if any(c["system"] == s for c in cells)]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(systems) * len(tasks) / 2), 4), dpi=110)
    width = 0.8 / max(len(systems), 1)
    for i, system in enumerate(systems):
        means = [_mean_std([c["dev_metric"] for c in cells if c["task"] == t and c["system"] == system])[0] or 0
                 for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, [100 * m for m in means], width, label=system)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(systems) - 1) / 2, tasks)
    ax.set_ylabel("dev metric x100")
    ax.legend(fontsize=7)
    ax.set_title(f"{report['suite']} suite: dev metric by system")
    fig.tight_layout()
    fig.savefig(f"{stem}-dev.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for c in cells:
        curve = c.get("train_agreement_per_epoch")
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{c['task']} {c['system']} s{c['seed']}")
    ax.axhline(0.99, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("agreement with teacher (train)")
    if any(c.get("train_agreement_per_epoch") for c in cells):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(f"{stem}-agreement.png")
    plt.close(fig)


def _transfer(value: str) -> int:
    if value == "full":
        return protocol.TRAIN_SIZES["sst2"]
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--transfer_sst2 takes a number of examples or 'full', got {value!r}"
                                         ) from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="small", choices=sorted(SUITES))
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--systems", nargs="*", choices=sorted(SYSTEMS), metavar="SYSTEM")
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--resume", action="store_true", help="skip cells already in the results file")
    p.add_argument("--retry_failed", action="store_true",
                   help="with --resume, also rerun cells recorded as failed for good (a peer that could not be "
                        "imported, since installed)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"))
    p.add_argument("--results_dir", default=str(HERE / "results"))
    p.add_argument("--date", default=None, help="results file date (default today; reuse one to resume)")
    p.add_argument("--budget_s", type=float, default=None, help="stop starting new cells after this many seconds")
    p.add_argument("--table_only", action="store_true", help="rewrite the table and plots from the results file")
    p.add_argument("--dry_run", action="store_true", help="print the plan and the estimated time, run nothing")
    p.add_argument("--teachers_only", action="store_true", help="protocol: train (or reuse) the teachers only")
    p.add_argument("--teacher_dir_sst2", default=str(HERE.parent.parent / "shared" / "teachers" / "minilm-l6-sst2"),
                   help="protocol: SST-2's teacher, used as given when the folder exists (else fine-tuned)")
    p.add_argument("--transfer_sst2", type=_transfer, default=None,
                   help=f"protocol: SST-2 transfer set size (default {SST2_TRANSFER}; 'full' = the whole train set, "
                        "written to its own results file)")
    p.add_argument("--epochs", type=int, default=None,
                   help="the students' epochs instead of the suite's (plain KD and the peers follow default SAGE's "
                        "steps at these epochs); written to its own results file (-e<N>)")
    args = p.parse_args()
    if args.table_only:
        out = results_path(args)
        write_table(json.loads(out.read_text()), out)
        return
    run_suite(args)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
