"""The benchmark suite's bookkeeping: which cells a suite plans, and how the table aggregates them."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testing_utils import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import protocol  # noqa: E402
import run as bench  # noqa: E402
import stats  # noqa: E402
from cell import BENCH_KEYS, CELL_ARGS  # noqa: E402


def test_small_suite_plans_kd_sage_and_reducer_none_on_sst2_and_rte():
    cells = bench.plan("small", None, None, None)
    assert sorted({(t, s) for t, s, _ in cells}) == sorted(
        (t, s) for t in ("sst2", "rte") for s in ("kd", "sage", "sage_reducer_none"))
    assert {seed for *_, seed in cells} == {0}


def test_full_suite_plans_every_system_on_five_tasks_with_three_seeds():
    cells = bench.plan("full", None, None, None)
    assert len(cells) == 5 * len(bench.SYSTEMS) * 3


def test_table_reports_mean_std_average_and_retention():
    cells = []
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.84, 0.62)]):
        cells.append({"task": "sst2", "system": "kd", "seed": seed, "dev_metric": a, "teacher_metric": 0.90,
                      "metric_name": "accuracy", "wall_s": 10.0, "peak_rss_mb": 900.0, "error": None,
                      "seconds_train": 6.0, "seconds_stages": {"score": 1.0, "label": 1.0}})
        cells.append({"task": "rte", "system": "kd", "seed": seed, "dev_metric": b, "teacher_metric": 0.70,
                      "metric_name": "accuracy", "wall_s": 20.0, "peak_rss_mb": 1000.0, "error": None,
                      "seconds_train": 12.0, "seconds_stages": {}})
    cells.append({"task": "rte", "system": "textbrewer_kd", "seed": 0, "dev_metric": None,
                  "error": "PeerUnavailable: textbrewer needs X"})
    table = bench.markdown({"suite": "small", "date": "2026-11-22", "machine": {"cpu": "Test CPU", "cores": 2},
                            "command": "python benchmarks/run.py --suite small", "cells": cells})
    kd = next(line for line in table.splitlines() if line.startswith("| kd |"))
    assert "82.00 ± 2.00" in kd and "61.00 ± 1.00" in kd
    assert "71.50" in kd and f"{100 * 0.715 / 0.80:.1f}%" in kd and "| 10 | 15 | 1000 |" in kd
    peer = next(line for line in table.splitlines() if line.startswith("| textbrewer_kd |"))
    assert "error: PeerUnavailable: textbrewer needs X" in peer


def test_kd_budget_matches_default_sage_steps_and_leaves_the_accelerator_alone():
    import cell
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    before = accelerator.distributed_type
    spec = {"epochs": 3, "warmup_max_samples": 1000}
    # augment (the default) trains on real + as many synthetic examples: 2 x 3000 / 32 -> 188 steps per epoch
    assert cell.kd_step_budget(3000, spec, 32, None) == 3 * 188
    assert accelerator.distributed_type == before  # raised AttributeError when the budget built an arguments object


def test_every_system_differs_from_default_sage_and_from_every_other():
    import dataclasses

    from sage_hf import SageTrainingArguments

    defaults = {f.name: f.default for f in dataclasses.fields(SageTrainingArguments)}
    assert set(CELL_ARGS) <= set(defaults)
    defaults.update(CELL_ARGS)  # what a cell runs with before its system's overrides
    settings = [tuple(sorted(overrides.items())) for overrides in bench.SYSTEMS.values()]
    assert len(set(settings)) == len(settings)
    for name, overrides in bench.SYSTEMS.items():
        for key, value in overrides.items():
            if key in BENCH_KEYS:
                continue
            assert key in defaults, f"{name} sets {key}, which SageTrainingArguments does not have"
            assert defaults[key] != value, f"{name} sets {key}={value!r}, the default"


def test_the_default_row_is_composed_of_the_rows_that_run_the_library_defaults():
    """benchmarks/default_row.py relabels cells instead of running the default again: only true while each task's row
    runs what SageTrainingArguments() resolves to on that task's head."""
    import dataclasses

    import default_row

    from sage_hf import SageTrainingArguments
    from sage_hf.hidden_loss import resolve_hidden_loss

    library = SageTrainingArguments(output_dir="x")
    defaults = {f.name: getattr(library, f.name) for f in dataclasses.fields(SageTrainingArguments)}
    assert set(default_row.DEFAULT_ROWS) == set(protocol.TASKS)
    for task, system in default_row.DEFAULT_ROWS.items():
        cell = {**defaults, **CELL_ARGS, **bench.SYSTEMS[system]}
        num_labels = 1 if task == "stsb" else 2
        kind = resolve_hidden_loss(library.hidden_loss, num_labels)
        assert cell["hidden_loss"] == kind, f"{task}: row {system} runs {cell['hidden_loss']}, the default {kind}"
        if kind != "none":
            assert cell["alpha_hidden"] == library.alpha_hidden
        assert set(bench.SYSTEMS[system]) <= {"hidden_loss", "alpha_hidden"}, f"{system} changes more than that"

    report = {"cells": [{"task": "stsb", "system": "sage", "seed": 0}, {"task": "sst2", "system": "sage", "seed": 0},
                        {"task": "sst2", "system": "sage_hidden_x12", "seed": 0}]}
    composed = default_row.with_default_row(report)
    assert [(c["task"], c["system"]) for c in composed["cells"][3:]] == [("stsb", "default"), ("sst2", "default")]
    assert len(report["cells"]) == 3  # the input is left as it was


# ---- protocol suite -------------------------------------------------------------------------------------------------


def test_protocol_plans_every_protocol_system_on_five_tasks_with_three_seeds():
    cells = bench.plan("protocol", None, None, None)
    assert len(cells) == 5 * len(protocol.SYSTEMS) * 3
    assert {t for t, _, _ in cells} == set(protocol.TASKS) and {s for *_, s in cells} == {0, 1, 2}
    assert {"kd", "sage", "textbrewer_kd", "torchdistill_kd", "textbrewer_hidden"} <= {s for _, s, _ in cells}
    assert all(s in bench.SYSTEMS for s in protocol.SYSTEMS)


def test_t_interval_over_seeds_has_the_textbook_half_width():
    mean, low, high = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert mean == pytest.approx(2.0) and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert stats.t_interval([0.5]) == (0.5, None, None)
    assert stats.mean_std([0.80, 0.84]) == (pytest.approx(0.82), pytest.approx(0.02 * np.sqrt(2)))
    assert stats.excludes_zero(0.1, 0.3) == "above" and stats.excludes_zero(-0.3, -0.1) == "below"
    assert stats.excludes_zero(-0.1, 0.3) == "no" and stats.excludes_zero(None, None) == "n/a"


def test_task_metrics_match_glue_definitions_on_known_answers():
    gold = np.array([1, 1, 0, 0, 1, 0])
    pred = np.array([1, 0, 0, 1, 1, 0])  # tp 2, tn 2, fp 1, fn 1
    assert stats.task_metric("rte", pred, gold) == pytest.approx(4 / 6)
    assert stats.task_metric("cola", pred, gold) == pytest.approx((2 * 2 - 1 * 1) / 9)  # (tp tn - fp fn) / 3 / 3
    assert stats.task_metric("mrpc", pred, gold) == pytest.approx((4 / 6 + 2 / 3) / 2)  # F1 = 2 tp / (3 + 3)
    scores, target = np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0, 7.0])
    pearson = np.corrcoef(scores, target)[0, 1]
    assert stats.task_metric("stsb", scores, target) == pytest.approx((pearson + 1.0) / 2)  # ranks agree: 1
    assert stats.teacher_agreement("sst2", pred, gold) == pytest.approx(4 / 6)


def test_predictions_round_trip_compactly():
    classes = np.array([0, 1, 1, 2, 0])
    assert stats.encode_predictions(classes) == "01120"
    assert np.array_equal(stats.decode_predictions("01120"), classes)
    scores = stats.encode_predictions(np.array([0.123456, 4.9], dtype=np.float32))
    assert scores == [0.1235, 4.9] and np.allclose(stats.decode_predictions(scores), [0.1235, 4.9])


def test_paired_bootstrap_is_exact_when_the_difference_is_the_same_on_every_example():
    gold = np.array([0, 1] * 20)
    right, wrong = gold.copy(), 1 - gold
    reps = stats.bootstrap_differences("sst2", gold, [right, right], [wrong, wrong], samples=50)
    assert np.allclose(reps, 1.0)
    same = stats.bootstrap_differences("sst2", gold, [right], [right], samples=50)
    assert np.allclose(same, 0.0)


def test_paired_bootstrap_is_seeded_and_centred_on_the_observed_difference():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 400)
    a = np.where(rng.random(400) < 0.85, gold, 1 - gold)
    b = np.where(rng.random(400) < 0.80, gold, 1 - gold)
    observed = np.mean(a == gold) - np.mean(b == gold)
    reps = stats.bootstrap_differences("sst2", gold, [a], [b], samples=400)
    assert np.array_equal(reps, stats.bootstrap_differences("sst2", gold, [a], [b], samples=400))
    low, high = stats.percentile_interval(reps)
    assert low < observed < high and abs(reps.mean() - observed) < 0.01


def _args(tmp_path, **kw) -> argparse.Namespace:
    base = dict(suite="protocol", tasks=["rte", "mrpc"], systems=["kd", "sage"], seeds=[0, 1], resume=False,
                device="cpu", glue_dir=None, results_dir=str(tmp_path), date="2026-12-03", budget_s=None,
                table_only=False, dry_run=False, teachers_only=False, teacher_dir_sst2=str(tmp_path / "none"),
                transfer_sst2=None, retry_failed=False, epochs=None)
    return argparse.Namespace(**{**base, **kw})


def _fake_process(calls: list, n_dev: int = 60):
    """Stands in for cell.py: writes what a cell or teacher step would, from made-up predictions."""
    gold = np.arange(n_dev) % 2

    def run(cmd):
        get = lambda flag: cmd[cmd.index(flag) + 1] if flag in cmd else None  # noqa: E731
        out, task = Path(get("--out")), get("--task")
        calls.append(("teacher", task) if "--teacher_only" in cmd else (task, get("--system"), int(get("--seed"))))
        if get("--system") == "sage_broken":
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback ... RuntimeError: broken system")
        if get("--system") == "textbrewer_missing" and not os.environ.get("PEER_INSTALLED"):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"task": task, "system": get("--system"), "seed": int(get("--seed")),
                                       "dev_metric": None, "error": "textbrewer cannot be imported: no tensorboard"}))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if "--teacher_only" in cmd:
            retrained = os.environ.get("TEACHER_RETRAINED") == "1"  # another machine fine-tuned it again
            pred = np.where(np.arange(n_dev) < n_dev // 4, 1 - gold, gold) if retrained else gold
            cell = {"task": task, "metric_name": "accuracy", "teacher_metric": 0.75 if retrained else 0.9,
                    "teacher_id": f"t-{task}", "source": "fine-tuned", "train_examples": 100, "epochs": 3,
                    "transfer_examples": 100, "dev_predictions": stats.encode_predictions(pred),
                    "dev_labels": stats.encode_predictions(gold), "seconds": 10.0, "error": None}
        else:
            seed, better = int(get("--seed")), get("--system") == "sage"
            wrong = np.arange(n_dev) < (10 - 3 * better + seed)  # kd misses 10 + seed, sage 3 fewer
            pred = np.where(wrong, 1 - gold, gold)
            cell = {"task": task, "system": get("--system"), "seed": seed, "metric_name": "accuracy",
                    "dev_metric": float(np.mean(pred == gold)), "teacher_id": f"t-{task}", "steps": 100,
                    "wall_s": 50.0, "dev_predictions": stats.encode_predictions(pred), "error": None}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cell))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_protocol_run_trains_teachers_first_writes_every_cell_and_a_paired_table(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    out = bench.run_suite(_args(tmp_path))
    assert out == tmp_path / "protocol-2026-12-03.json"
    assert calls[:2] == [("teacher", "rte"), ("teacher", "mrpc")] and len(calls) == 2 + 2 * 2 * 2
    report = json.loads(out.read_text())
    assert set(report["teachers"]) == {"rte", "mrpc"} and len(report["cells"]) == 8
    assert report["suite_wall_s"] >= 0 and report["estimate_s"] > 0
    assert all(c["teacher_metric"] == 0.9 and c["device"] == "cpu" for c in report["cells"])
    table = out.with_suffix(".md").read_text()
    sage = [line for line in table.splitlines() if line.startswith("| sage |")]
    # sage is 3/60 = 5 points better than kd on every seed and every example pattern: t interval of zero width
    assert sage[1].count("+5.00 [+5.00, +5.00]") == 3 and sage[1].endswith("| above |")
    assert "| 90.00 | 50.00 | fine-tuned | 100 | 100 |" in table  # teacher, then one answer for 30/30 labels
    out.with_suffix(".md").unlink()
    bench.write_table(json.loads(out.read_text()), out)  # what --table_only does: the same table from the JSON
    assert out.with_suffix(".md").read_text() == table


def test_majority_baseline_is_the_metric_of_one_answer_for_every_dev_example():
    assert protocol.majority_baseline("rte", {"dev_labels": "1101"}) == pytest.approx(0.75)
    assert protocol.majority_baseline("mrpc", {"dev_labels": "1101"}) == pytest.approx((0.75 + 6 / 7) / 2)
    assert protocol.majority_baseline("cola", {"dev_labels": "1101"}) == 0.0
    assert protocol.majority_baseline("stsb", {"dev_labels": [0.5, 4.0, 2.5]}) == 0.0
    assert protocol.majority_baseline("rte", {}) is None


def test_dry_run_prints_the_estimate_and_runs_nothing(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    out = bench.run_suite(_args(tmp_path, dry_run=True))
    assert calls == [] and not out.exists()
    printed = capsys.readouterr().out
    assert "Estimated time" in printed and "teacher rte" in printed and "would run mrpc sage seed 1" in printed


def test_protocol_resume_skips_finished_cells_and_teachers(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    bench.run_suite(_args(tmp_path, tasks=["rte"], seeds=[0]))
    calls.clear()
    bench.run_suite(_args(tmp_path, tasks=["rte"], seeds=[0, 1], resume=True))
    assert calls == [("teacher", "rte"), ("rte", "kd", 1), ("rte", "sage", 1)], "the teacher is checked, not trained"
    report = json.loads((tmp_path / "protocol-2026-12-03.json").read_text())
    assert len(report["cells"]) == 4 and len(report["runs"]) == 2


def test_resume_refuses_a_teacher_that_is_not_the_recorded_one(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    bench.run_suite(_args(tmp_path, tasks=["rte"], seeds=[0]))
    monkeypatch.setenv("TEACHER_RETRAINED", "1")
    calls.clear()
    capsys.readouterr()
    bench.run_suite(_args(tmp_path, tasks=["rte"], seeds=[0, 1], resume=True))
    assert calls == [("teacher", "rte")], "no cell runs under another teacher"
    printed = capsys.readouterr().out
    assert "is not the one this results file's cells were paired with: its dev predictions agree on 75.0%" in printed
    assert "rte kd seed 1: skipped" in printed
    report = json.loads((tmp_path / "protocol-2026-12-03.json").read_text())
    assert report["teachers"]["rte"]["teacher_metric"] == 0.9 and len(report["cells"]) == 2


def test_teacher_mismatch_tolerates_rounding_but_not_another_teacher():
    recorded = {"dev_predictions": "0110" * 100, "teacher_metric": 0.9}
    assert protocol.teacher_mismatch(recorded, {"dev_predictions": "1110" + "0110" * 99}) is None  # 1 of 400
    assert "agree on 99.0%" in protocol.teacher_mismatch(recorded, {"dev_predictions": "1001" + "0110" * 99})
    assert protocol.teacher_mismatch({"teacher_metric": 0.9}, {"dev_predictions": "01"}) is None
    scores = {"dev_predictions": [0.5, 4.25, 3.0]}
    assert protocol.teacher_mismatch(scores, {"dev_predictions": [0.505, 4.25, 3.0]}) is None
    assert "differ by up to 0.200" in protocol.teacher_mismatch(scores, {"dev_predictions": [0.5, 4.05, 3.0]})
    assert "differ in length" in protocol.teacher_mismatch(scores, {"dev_predictions": [0.5]})


def test_a_failing_system_is_recorded_as_an_error_and_retried_on_resume(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    monkeypatch.setitem(bench.SYSTEMS, "sage_broken", {"synthesis": "broken"})
    bench.run_suite(_args(tmp_path, tasks=["rte"], systems=["kd", "sage_broken"], seeds=[0]))
    report = json.loads((tmp_path / "protocol-2026-12-03.json").read_text())
    broken = next(c for c in report["cells"] if c["system"] == "sage_broken")
    assert "broken system" in broken["error"] and broken["dev_metric"] is None
    assert "broken system" in (tmp_path / "protocol-2026-12-03.md").read_text()
    calls.clear()
    bench.run_suite(_args(tmp_path, tasks=["rte"], systems=["kd", "sage_broken"], seeds=[0], resume=True))
    assert calls == [("teacher", "rte"), ("rte", "sage_broken", 0)]


def test_a_peer_that_cannot_be_imported_is_final_until_retry_failed(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "run_process", _fake_process(calls))
    monkeypatch.setitem(bench.SYSTEMS, "textbrewer_missing", {"peer": "textbrewer_kd"})
    slice_ = dict(tasks=["rte"], systems=["kd", "textbrewer_missing"], seeds=[0])
    bench.run_suite(_args(tmp_path, **slice_))
    calls.clear()
    bench.run_suite(_args(tmp_path, **slice_, resume=True))
    assert calls == []  # recorded once, not retried (and nothing to run: the teacher is not checked either)
    monkeypatch.setenv("PEER_INSTALLED", "1")
    bench.run_suite(_args(tmp_path, **slice_, resume=True, retry_failed=True))
    assert calls == [("teacher", "rte"), ("rte", "textbrewer_missing", 0)]
    report = json.loads((tmp_path / "protocol-2026-12-03.json").read_text())
    cells = [c for c in report["cells"] if c["system"] == "textbrewer_missing"]
    assert len(cells) == 1 and cells[0]["error"] is None and cells[0]["dev_metric"] is not None


def test_a_system_with_fields_sage_hf_lacks_fails_its_cell_before_any_work(tmp_path, monkeypatch):
    import cell

    monkeypatch.setitem(cell.SYSTEMS, "sage_future", {"future_field": 1})
    monkeypatch.setitem(cell.SYSTEMS, "sage_new_method", {"synthesis": "not_a_method"})
    for system, field in (("sage_future", "no field 'future_field'"), ("sage_new_method", "accepts only")):
        out = tmp_path / f"{system}.json"
        monkeypatch.setattr(sys, "argv", ["cell.py", "--task", "rte", "--system", system, "--suite", "protocol",
                                          "--glue_dir", str(tmp_path / "missing"), "--out", str(out)])
        cell.main()
        result = json.loads(out.read_text())
        assert result["error"].startswith("UnsupportedSystem") and field in result["error"]
        assert "leave " + system + " out of --systems" in result["error"]


def test_estimate_uses_recorded_rates_then_finished_cells(tmp_path):
    spec = bench.SUITES["protocol"]
    # SST-2: 8,000 transfer examples, augment doubles them: 3 x 500 steps + 32 warm-up steps
    assert protocol.cell_steps("sst2", "sage", spec, None, {}) == 3 * 500 + 32
    assert protocol.cell_steps("sst2", "sage_replace", spec, None, {"synthesis_mode": "replace"}) == 3 * 250 + 32
    assert protocol.cell_steps("sst2", "kd", spec, 67349, {}) == 3 * 4210 + 32
    # the passes control: plain KD for the suite's 3 epochs over the real set, no warm-up
    assert protocol.cell_steps("sst2", "kd_same_passes", spec, None, bench.SYSTEMS["kd_same_passes"]) == 3 * 250
    est = protocol.estimate([("rte", "kd", 0)], ["rte"], {"cells": []}, spec, bench.SYSTEMS, "cpu", None)
    rte_steps = 3 * 156 + 32
    assert est["cells"][("rte", "kd", 0)] == pytest.approx(rte_steps * protocol.SECONDS_PER_STEP["cpu"]["rte"])
    assert est["teachers"]["rte"] == pytest.approx(3 * 2490 / protocol.TEACHER_EXAMPLES_PER_S["cpu"]["rte"])
    done = {"cells": [{"task": "rte", "system": "sage", "seed": 0, "steps": 100, "wall_s": 300.0, "error": None,
                       "device": "cpu"}]}
    est = protocol.estimate([("rte", "kd", 1), ("cola", "kd", 0)], [], done, spec, bench.SYSTEMS, "cpu", None)
    assert est["cells"][("rte", "kd", 1)] == pytest.approx(rte_steps * 3.0)
    # a task without finished cells runs as much slower (or faster) than its default as the finished ones did
    speed = 3.0 / protocol.SECONDS_PER_STEP["cpu"]["rte"]
    cola = protocol.cell_steps("cola", "kd", spec, None, {}) * protocol.SECONDS_PER_STEP["cpu"]["cola"]
    assert est["cells"][("cola", "kd", 0)] == pytest.approx(cola * speed)
    assert "Estimated time" in protocol.estimate_text(est)
    # a teacher loaded from the work folder (seconds to load, not to fine-tune) says nothing of the teacher rate
    teachers = {"cola": {"train_examples": 8551, "epochs": 3, "seconds": 5.9, "device": "cpu", "error": None,
                         "reused": True},
                "mrpc": {"train_examples": 3668, "epochs": 3, "seconds": 500.0, "device": "cpu", "error": None}}
    rate = protocol.rates({"cells": [], "teachers": teachers}, "cpu")[1]
    assert rate["mrpc"] == pytest.approx(3 * 3668 / 500.0)
    slower = rate["mrpc"] / protocol.TEACHER_EXAMPLES_PER_S["cpu"]["mrpc"]
    assert rate["cola"] == pytest.approx(protocol.TEACHER_EXAMPLES_PER_S["cpu"]["cola"] * slower)


def test_a_synthetic_share_sets_the_synthetic_count_of_an_epoch():
    import cell

    assert cell.synthetic_count_for_share(3668, 0.5) == 3668  # default SAGE: as many synthetic as real
    assert cell.synthetic_count_for_share(3000, 0.25) == 1000  # a quarter of 4,000
    with pytest.raises(ValueError, match="synthetic_share"):
        cell.synthetic_count_for_share(100, 1.0)


def test_estimate_scales_a_slow_system_by_what_its_finished_cells_took():
    spec = bench.SUITES["protocol"]
    cells = [{"task": "rte", "system": "kd", "seed": 0, "steps": 100, "wall_s": 200.0},
             {"task": "rte", "system": "textbrewer_hidden", "seed": 0, "steps": 100, "wall_s": 500.0},
             {"task": "sst2", "system": "kd", "seed": 0, "steps": 100, "wall_s": 100.0}]
    done = {"cells": [{**c, "error": None, "device": "cpu"} for c in cells]}
    est = protocol.estimate([("rte", "textbrewer_hidden", 1), ("sst2", "textbrewer_hidden", 0), ("sst2", "sage", 0)],
                            [], done, spec, bench.SYSTEMS, "cpu", None)
    rte = protocol.cell_steps("rte", "kd", spec, None, {})
    sst2 = protocol.cell_steps("sst2", "kd", spec, None, {})
    assert est["cells"][("rte", "textbrewer_hidden", 1)] == pytest.approx(rte * 5.0)  # its own finished cell
    assert est["cells"][("sst2", "textbrewer_hidden", 0)] == pytest.approx(sst2 * 1.0 * 2.5)  # 2.5x kd on RTE
    assert est["cells"][("sst2", "sage", 0)] == pytest.approx(sst2 * 1.0)  # the task's kd/sage rate
    # a slow peer's cells do not slow down the task's kd/sage rate
    assert protocol.rates(done, "cpu")[0]["rte"] == pytest.approx(2.0)


def test_full_sst2_transfer_set_writes_its_own_results_file(tmp_path):
    assert bench.results_path(_args(tmp_path)).name == "protocol-2026-12-03.json"
    assert bench.results_path(_args(tmp_path, transfer_sst2=67349)).name == "protocol-sst2x67349-2026-12-03.json"
    assert bench.results_path(_args(tmp_path, epochs=9)).name == "protocol-e9-2026-12-03.json"
    assert bench.results_path(_args(tmp_path, epochs=3)).name == "protocol-2026-12-03.json"  # the suite's own
    assert bench._common_args(_args(tmp_path, epochs=9), "rte")[-2:] == ["--epochs", "9"]


def _tiny_rte(glue_dir: Path, tmp_path: Path, n_train: int = 40, n_dev: int = 16) -> Path:
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = (glue_dir / "RTE" / f"{split}.tsv").read_text().splitlines()[: n + 1]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder.parent


def test_protocol_cells_run_for_real_on_a_tiny_task(glue_dir, tmp_path, monkeypatch):
    """A teacher step and two cells on 40 RTE examples (a few optimiser steps): the teacher sees all 40, the
    students a fixed 24 of them, and every cell stores per-example dev predictions for the bootstrap."""
    import cell

    tiny = {"epochs": 1, "tasks": {"rte": {"max_train_samples": 24, "max_seq_length": 32}}, "teacher_epochs": 1,
            "warmup_max_samples": 32, "teacher_on_whole_train": True}
    monkeypatch.setitem(cell.SUITES, "protocol", tiny)
    tiny_glue, work = str(_tiny_rte(glue_dir, tmp_path)), tmp_path / "work"
    teacher = cell.run_teacher("rte", "protocol", tiny_glue, work, "cpu")
    assert teacher["train_examples"] == 40 and teacher["transfer_examples"] == 24 and not teacher["reused"]
    again = cell.run_teacher("rte", "protocol", tiny_glue, work, "cpu")  # the work folder's teacher, loaded
    assert again["reused"] and again["dev_predictions"] == teacher["dev_predictions"]
    assert len(teacher["dev_predictions"]) == len(teacher["dev_labels"]) == 16
    assert teacher["teacher_metric"] == pytest.approx(stats.task_metric(
        "rte", stats.decode_predictions(teacher["dev_predictions"]), stats.decode_predictions(teacher["dev_labels"])))
    labels = stats.decode_predictions(teacher["dev_labels"])
    # reducer none: a UMAP map needs more than 24 examples (n_neighbors 100)
    cells = [cell.run_cell("rte", s, 0, "protocol", tiny_glue, work, "cpu") for s in ("kd", "sage_reducer_none")]
    for result in cells:
        assert result["error"] is None and result["teacher_id"] == teacher["teacher_id"]
        assert result["transfer_examples"] == 24 and len(result["dev_predictions"]) == 16
        predictions = stats.decode_predictions(result["dev_predictions"])
        assert result["dev_metric"] == pytest.approx(stats.task_metric("rte", predictions, labels))
    assert cells[0]["steps"] == cells[1]["steps"]  # plain KD at default SAGE's optimiser steps
    cell.set_epochs("protocol", 2)  # --epochs 2: twice the steps, the same teacher
    longer = cell.run_cell("rte", "kd", 0, "protocol", tiny_glue, work, "cpu")
    assert longer["error"] is None and longer["steps"] == 2 * cells[0]["steps"]
    assert longer["teacher_id"] == teacher["teacher_id"]
