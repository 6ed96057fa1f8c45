"""The benchmark suite's bookkeeping: which cells a suite plans, and how the table aggregates them."""

import sys

from testing_utils import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import run as bench  # noqa: E402


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
    settings = [tuple(sorted(overrides.items())) for overrides in bench.SYSTEMS.values()]
    assert len(set(settings)) == len(settings)
    for name, overrides in bench.SYSTEMS.items():
        for key, value in overrides.items():
            assert key == "peer" or defaults[key] != value, f"{name} sets {key}={value!r}, the default"
