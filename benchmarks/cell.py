#!/usr/bin/env python
"""One benchmark cell: one (task, system, seed), run in its own process so its peak RSS is its own.

    python benchmarks/cell.py --task sst2 --system sage --seed 0 --suite small --out cell.json

Every system distils the same teacher (the packaged MiniLM fine-tuned once per task by the recipe's teacher
stage, reused by every cell) into the same 3-layer student with the same data, tokenisation and optimiser
budget. Writes one JSON object with the cell's measures, per-example dev predictions included.

    python benchmarks/cell.py --task rte --suite protocol --teacher_only --out teacher.json   # the teacher step
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # peers.py

# What each system changes relative to CELL_ARGS (below) and SAGE's defaults; "sage": False is plain logit KD. Keys
# in BENCH_KEYS are the benchmark's own: "peer" runs a peer toolkit; "budget": "real_passes" trains plain KD for the
# suite's epochs instead of default SAGE's optimiser steps; "synthetic_share": the synthetic part of each epoch, at
# default SAGE's steps.
BENCH_KEYS = ("peer", "budget", "synthetic_share")
SYSTEMS: dict[str, dict] = {
    "kd": {"sage": False},
    # swap synthesis on logits, the default until 2026-12-07 (before 2026-12-03 "shift", now the `sage_shift` row)
    "sage": {},
    "sage_shift": {"synthesis": "shift"},  # the paper's synthesis, real + synthetic each epoch
    # swap, a pair's shared words swapped alike (single-sentence tasks: the same draws as `sage`)
    "sage_swap_shared": {"swap_shared_words": True},
    "sage_replace": {"synthesis": "shift", "synthesis_mode": "replace"},  # the paper's exact setting
    "sage_reducer_none": {"reducer": "none"},
    "sage_pca": {"reducer": "pca"},
    "sage_umap3": {"n_components": 3},
    "sage_umap8": {"n_components": 8},
    "sage_umap16": {"n_components": 16},
    "sage_random_anchors": {"anchor_policy": "random"},
    "sage_once": {"regenerate": "once"},
    "sage_no_warmup": {"warmup_epochs": 0.0},
    "sage_weighted": {"anchor_policy": "weighted"},
    "sage_balanced": {"anchor_policy": "balanced"},  # hard anchors per teacher class, in the data's proportions
    # four swap candidates per anchor, the one the student finds hardest kept (Glitter-style selection)
    "sage_hardest_of_4": {"candidates_per_anchor": 4},
    # three swap candidates per anchor, the first the teacher gives its anchor's label kept (label-preserving swaps)
    "sage_same_label_of_3": {"candidates_per_anchor": 3, "candidate_choice": "label_preserving"},
    "sage_scale_0.25": {"synthesis": "shift", "shift_scale": 0.25},
    # sequence-level inversion: (1 - t) anchor + t map-neighbour, token by token (see README, Results)
    "sage_interpolate": {"synthesis": "interpolate"},
    "sage_interpolate_none": {"synthesis": "interpolate", "reducer": "none"},
    "sage_adversarial": {"synthesis": "adversarial"},
    # the control: the map's hard anchors repeated, nothing synthesised
    "sage_repeat": {"synthesis": "repeat"},
    # the control for "fewer passes over the real set": plain KD for the suite's epochs over the real examples,
    # as many passes as default SAGE makes over them (half its optimiser steps), no synthetic examples
    "kd_same_passes": {"sage": False, "budget": "real_passes"},
    # a quarter of each epoch synthetic (synthetic_count = n / 3) instead of half, at default SAGE's steps: more
    # passes over the real set (4.5 instead of 3)
    "sage_quarter_synthetic": {"synthetic_share": 0.25},
    # each batch of 32 real examples carries as many synthetic ones, at default SAGE's steps: as many real passes
    # as plain KD (6.3 on MRPC instead of 3) with the synthetic examples on top, at about twice the compute a step
    "sage_mix": {"synthesis_mode": "mix"},
    # a curriculum: the first epoch's synthetic slots hold a second pass over the real examples, rounds start
    # after epoch 1 (at 3 epochs: 4 real passes and 2 synthetic halves instead of 3 and 3), same steps
    "sage_late": {"synthesis_start_epoch": 1},
    "kd_hidden": {"sage": False, "hidden_loss": "mse"},
    "sage_hidden": {"hidden_loss": "mse"},
    # hidden-state matching weighed as TextBrewer's `textbrewer_hidden` weighs it against KD: it sums the MSE of 4
    # matched layers (3 here: the student's layer-1 input is the teacher's) where we average, and its soft
    # cross-entropy lacks our T^2 = 4, so its hidden term is 3 x 4 = 12 times ours at alpha_hidden=1
    "kd_hidden_x12": {"sage": False, "hidden_loss": "mse", "alpha_hidden": 12.0},
    # the library's default on classification tasks since 2026-12-07
    "sage_hidden_x12": {"hidden_loss": "mse", "alpha_hidden": 12.0},
    # a quarter of the default's hidden weight: is STS-B's loss under the default (and TextBrewer's) the weight?
    "sage_hidden_x3": {"hidden_loss": "mse", "alpha_hidden": 3.0},
    # the control for batch order: plain KD with shuffled batches, as the peers draw them, instead of the cells'
    # length-grouped ones
    "kd_shuffled": {"sage": False, "train_sampling_strategy": "random"},
    "textbrewer_kd": {"peer": "textbrewer_kd"},
    "textbrewer_hidden": {"peer": "textbrewer_hidden"},
    "torchdistill_kd": {"peer": "torchdistill_kd"},
}

# Every cell's SageTrainingArguments before its system's overrides (a system that sets one of these to another
# value changes the cell, even where that value is SageTrainingArguments' own default). Cells match logits only
# unless their system says otherwise, as every row did before the library's default took hidden states on
# (2026-12-07): `kd` stays plain logit KD, `sage` stays swap on logits. Today's default (`hidden_loss="auto"`) is
# `sage_hidden_x12` on a classification task and `sage` on a regression one (STS-B): the same computations.
CELL_ARGS = dict(learning_rate=1e-4, per_device_train_batch_size=32, temperature=2.0, save_strategy="no",
                 eval_strategy="no", agreement_threshold=1.0, warmup_max_length=64, save_round_plots=False,
                 decode_examples=0, train_sampling_strategy="group_by_length", hidden_loss="none", alpha_hidden=1.0)

# Per suite and task: training subset, sequence length, epochs. Dev sets are always whole.
_SMALL_TASKS = {"sst2": {"max_train_samples": 3000, "max_seq_length": 64},
                "rte": {"max_train_samples": 1500, "max_seq_length": 128}}
SUITES: dict[str, dict] = {
    # `small`: anyone's 2-core laptop, under an hour (RTE subsampled: whole, it alone took 45 min here)
    "small": {"epochs": 3, "tasks": _SMALL_TASKS, "teacher_epochs": 3, "warmup_max_samples": 1000},
    # `cpu`: the five tasks at small's scale, for a 5-task average where no GPU is lent (SST-2/RTE as small)
    "cpu": {"epochs": 3, "tasks": {**_SMALL_TASKS, "mrpc": {"max_train_samples": 1500, "max_seq_length": 128},
                                   "cola": {"max_train_samples": 3000, "max_seq_length": 64},
                                   "stsb": {"max_train_samples": 1500, "max_seq_length": 128}},
            "teacher_epochs": 3, "warmup_max_samples": 1000},
    "explore": {"epochs": 3, "tasks": {"sst2": {"max_train_samples": 10000, "max_seq_length": 64}},
                "teacher_epochs": 2, "warmup_max_samples": 2000},
    "full": {"epochs": 10, "tasks": {"sst2": {"max_train_samples": None, "max_seq_length": 64},
                                     "mrpc": {"max_train_samples": None, "max_seq_length": 128},
                                     "rte": {"max_train_samples": None, "max_seq_length": 128},
                                     "cola": {"max_train_samples": None, "max_seq_length": 64},
                                     "stsb": {"max_train_samples": None, "max_seq_length": 128}},
             "teacher_epochs": 3, "warmup_max_samples": 20000},
    # `protocol`: strong teachers (fine-tuned on the task's whole train set, or given), small transfer sets the
    # student sees (SST-2: a fixed 8,000 of train, the rest never shown; the others whole), 3 seeds; see
    # docs/benchmarks.md for its slices and times
    "protocol": {"epochs": 3, "tasks": {"sst2": {"max_train_samples": 8000, "max_seq_length": 64},
                                        "cola": {"max_train_samples": None, "max_seq_length": 64},
                                        "mrpc": {"max_train_samples": None, "max_seq_length": 128},
                                        "rte": {"max_train_samples": None, "max_seq_length": 128},
                                        "stsb": {"max_train_samples": None, "max_seq_length": 128}},
                 "teacher_epochs": 3, "warmup_max_samples": 1000, "teacher_on_whole_train": True,
                 # round passes in float32 on every machine, so cells run before `round_precision` existed and
                 # cells on bf16 hardware compare (bf16 moves a logit by <= 6e-4: bench_round_precision.py)
                 "round_precision": "float32"},
}
TEACHER_SEED = 0  # one teacher per task, whatever the cell's seed
TRANSFER_SEED = 0  # one transfer set per task (the same examples for every system and seed)


class UnsupportedSystem(ValueError):
    """A system sets a SageTrainingArguments field, or a value, that this sage_hf does not accept."""


def check_overrides(system: str) -> None:
    """Fails fast, before any data or teacher work, when `system` needs fields this sage_hf lacks."""
    import typing

    from sage_hf import SageTrainingArguments

    fields = {f.name: f for f in dataclasses.fields(SageTrainingArguments)}
    hints = typing.get_type_hints(SageTrainingArguments)
    for key, value in SYSTEMS[system].items():
        if key in BENCH_KEYS:
            continue
        if key not in fields:
            raise UnsupportedSystem(f"system {system!r} sets {key}={value!r}, but this sage_hf's "
                                    f"SageTrainingArguments has no field {key!r}: update sage_hf, or leave {system} "
                                    "out of --systems")
        allowed = typing.get_args(hints[key]) if typing.get_origin(hints[key]) is typing.Literal else None
        if allowed and value not in allowed:
            raise UnsupportedSystem(f"system {system!r} sets {key}={value!r}, but this sage_hf accepts only "
                                    f"{', '.join(map(repr, allowed))}: update sage_hf, or leave {system} out of "
                                    "--systems")


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("sage-hf", "torch", "transformers", "accelerate", "datasets", "umap-learn", "scikit-learn",
                 "textbrewer", "torchdistill"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def source_commit() -> str | None:
    """The checkout's commit ('+dirty' when tracked files other than results differ): what a cell came from."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _task_setup(task: str, suite: str, glue_dir: str, work: Path, device: str, teacher_dir: str | None,
                transfer_sst2: int | None) -> dict:
    """Data, tokenisation and the task's teacher, shared by every system; the teacher sees the whole train set
    in the protocol suite, the student only the transfer set."""
    from transformers import AutoTokenizer

    from sage_hf import SageTrainingArguments, default_teacher_path
    from sage_hf.data import get_task
    from sage_hf.data.stages import load_task_data, teacher_stage, tokenize_task

    spec = SUITES[suite]
    tconf = spec["tasks"][task]
    transfer = transfer_sst2 if task == "sst2" and transfer_sst2 is not None else tconf["max_train_samples"]
    use_cpu = device == "cpu"
    common = dict(report_to=[], use_cpu=use_cpu, disable_tqdm=True, seed=TEACHER_SEED, logging_steps=50,
                  per_device_eval_batch_size=128, bf16=not use_cpu, dataloader_pin_memory=not use_cpu)
    teacher_args = SageTrainingArguments(output_dir=str(work / "teachers" / task), save_strategy="no", **common)
    data = load_task_data(task, glue_dir=glue_dir)
    whole_teacher = spec.get("teacher_on_whole_train", False)
    if not whole_teacher:
        data.subsample(transfer, seed=TEACHER_SEED)
    base = str(default_teacher_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenized = tokenize_task(data, tokenizer, tconf["max_seq_length"], training_args=teacher_args)
    given = teacher_dir if teacher_dir and Path(teacher_dir).is_dir() else None
    stage = teacher_stage(data, tokenized, tokenizer, teacher_args, base_model=base, teacher_model=given,
                          max_seq_length=tconf["max_seq_length"], epochs=spec["teacher_epochs"])
    n_whole = len(tokenized["train"])
    if whole_teacher and transfer is not None and transfer < n_whole:
        # the same examples for every system and seed; the rest of train is never shown to the student
        tokenized["train"] = tokenized["train"].shuffle(seed=TRANSFER_SEED).select(range(transfer))
    return dict(spec=spec, data=data, tokenizer=tokenizer, tokenized=tokenized, stage=stage, common=common,
                teacher_args=teacher_args, task_spec=get_task(task), given_teacher=given, teacher_train=n_whole,
                teacher_id=str(Path(given or stage.folder).resolve()))  # one id through symlinks


def set_epochs(suite: str, epochs: int) -> None:
    """The students' epochs for this process: every step count (default SAGE's, plain KD's budget, the peers')
    reads the suite's epochs. The teacher's are its own (`teacher_epochs`), so the cached teachers stay valid."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    SUITES[suite] = {**SUITES[suite], "epochs": epochs}


def run_teacher(task: str, suite: str, glue_dir: str, work: Path, device: str, teacher_dir: str | None = None,
                transfer_sst2: int | None = None) -> dict:
    """The task's teacher as a step of its own: trained (or reused, or given) and scored on dev, per example."""
    from stats import encode_predictions

    from sage_hf import TeacherInterface

    start = time.time()
    setup = _task_setup(task, suite, glue_dir, work, device, teacher_dir, transfer_sst2)
    teacher = TeacherInterface(setup["stage"].model.eval()).to(setup["teacher_args"].device)
    dev = setup["tokenized"][setup["data"].eval_splits[0]]
    metrics, t_logits, labels = _dev_scores(teacher.model, dev, setup["tokenizer"], setup["data"].compute_metrics())
    main_metric = setup["task_spec"].main_metric
    spec = setup["spec"]
    folder = setup["stage"].folder  # a fine-tuned teacher written before this step started was only loaded
    reused = folder is not None and (folder / "teacher_results.json").stat().st_mtime < start
    return {"task": task, "metric_name": main_metric, "teacher_metric": metrics.get(main_metric), "reused": reused,
            "dev_metrics": metrics, "teacher_id": setup["teacher_id"],
            "source": "given" if setup["given_teacher"] else "fine-tuned",
            "train_examples": None if setup["given_teacher"] else setup["teacher_train"],
            "epochs": None if setup["given_teacher"] else spec["teacher_epochs"],
            "transfer_examples": len(setup["tokenized"]["train"]), "transfer_seed": TRANSFER_SEED,
            "dev_predictions": encode_predictions(_as_predictions(t_logits)),
            "dev_labels": encode_predictions(labels), "seconds": round(time.time() - start, 1)}


def run_cell(task: str, system: str, seed: int, suite: str, glue_dir: str, work: Path, device: str,
             teacher_dir: str | None = None, transfer_sst2: int | None = None) -> dict:
    import torch
    from stats import encode_predictions
    from transformers import TrainerCallback

    from sage_hf import (
        SageStudentForSequenceClassification,
        SageTrainer,
        SageTrainingArguments,
        TeacherInterface,
        cache_teacher_logits,
        export_student,
    )
    from sage_hf.rounds.scoring import score_examples

    check_overrides(system)
    overrides = dict(SYSTEMS[system])
    peer = overrides.pop("peer", None)
    budget = overrides.pop("budget", "sage_steps")
    share = overrides.pop("synthetic_share", None)
    cell: dict = {"task": task, "system": system, "seed": seed, "suite": suite}
    start = time.time()

    # ---- data and teacher (shared by every system) ---------------------------------------------------
    setup = _task_setup(task, suite, glue_dir, work, device, teacher_dir, transfer_sst2)
    spec, data, tokenizer, tokenized = setup["spec"], setup["data"], setup["tokenizer"], setup["tokenized"]
    common, teacher_args, task_spec = setup["common"], setup["teacher_args"], setup["task_spec"]
    use_cpu = device == "cpu"
    compute_metrics = data.compute_metrics()
    dev = tokenized[data.eval_splits[0]]
    cell.update(metric_name=task_spec.main_metric, teacher_id=setup["teacher_id"],
                transfer_examples=len(tokenized["train"]))
    cell["teacher_metric"] = _main(setup["stage"].results or {}, "teacher_validation_", task_spec.main_metric)
    teacher = TeacherInterface(setup["stage"].model.eval()).to(teacher_args.device)

    t0 = time.time()
    train = cache_teacher_logits(teacher, tokenized["train"], batch_size=256, tokenizer=tokenizer)
    cell["seconds_teacher_logits"] = round(time.time() - t0, 2)

    torch.manual_seed(seed)
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=3)
    wiki = Path(glue_dir).parent / "wikitext-2-raw"
    args = dict(CELL_ARGS, output_dir=str(work / "runs" / f"{task}-{system}-{seed}"),
                num_train_epochs=spec["epochs"], warmup_source=str(wiki) if wiki.is_dir() else None,
                warmup_max_samples=spec["warmup_max_samples"], map_cache_dir=str(work / "maps"),
                **{**common, "seed": seed})
    if "round_precision" in spec:
        args["round_precision"] = spec["round_precision"]
    args.update(overrides)
    if share is not None:
        args["synthetic_count"] = synthetic_count_for_share(len(train), share)
    if not args.get("sage", True):
        args["warmup_source"] = None  # plain KD: real data only; its step budget is matched below
    training_args = SageTrainingArguments(**args)

    agreement_per_epoch: list[float] = []

    class TrainAgreement(TrainerCallback):
        """Agreement with the teacher on the real training set after every epoch, for every system alike."""

        def on_epoch_end(self, a, state, control, model=None, **kw):
            feats = {c: train[c] for c in ("input_ids", "attention_mask", "token_type_ids") if c in train.column_names}
            logits = torch.tensor(train["teacher_logits"])
            _, agree = score_examples(model, teacher, feats, logits, range(len(train)), batch_size=256,
                                      show_progress=False)
            agreement_per_epoch.append(float(agree.mean()))

    if peer is not None:
        from peers import PeerUnavailable, run_peer

        exported = export_student(student, teacher)
        try:
            # the same optimiser steps as plain KD (and default SAGE), on the same real examples
            steps = kd_step_budget(len(train), spec, 32, str(wiki) if wiki.is_dir() else None)
            out = run_peer(peer, teacher.model, exported, tokenized["train"], num_train_epochs=spec["epochs"],
                           learning_rate=1e-4, batch_size=32, temperature=2.0, seed=seed,
                           device=str(teacher_args.device), bf16=not use_cpu, max_steps=steps)
        except PeerUnavailable as err:
            cell.update(error=str(err), dev_metric=None, agreement=None, epochs=None)
            return _finish(cell, start)
        model = out["model"].eval()
        cell.update(seconds_train=round(out["train_s"], 2), steps=out["steps"], epochs=spec["epochs"])
        metrics, logits, _ = _dev_scores(model, dev, tokenizer, compute_metrics)
        _, t_logits, _ = _dev_scores(teacher.model.eval(), dev, tokenizer, compute_metrics)
        if logits.shape[-1] > 1:
            cell["agreement"] = float((logits.argmax(-1) == t_logits.argmax(-1)).mean())
        cell.update(dev_metric=metrics.get(task_spec.main_metric), dev_metrics=metrics,
                    dev_predictions=encode_predictions(_as_predictions(logits)))
        return _finish(cell, start)

    trainer = SageTrainer(model=student, args=training_args, teacher_model=teacher, train_dataset=train,
                          eval_dataset=dev, processing_class=tokenizer, compute_metrics=compute_metrics,
                          callbacks=[TrainAgreement()])
    if share is not None or training_args.synthesis_mode == "mix":  # default SAGE's steps after the warm-up,
        # whatever the epochs come to
        trainer.args.max_steps = kd_step_budget(len(train), spec, training_args.per_device_train_batch_size, None)
    if not training_args.sage and budget == "sage_steps":  # default SAGE's warm-up and synthetic steps, real data
        trainer.args.max_steps = kd_step_budget(len(train), spec, training_args.per_device_train_batch_size,
                                                str(wiki) if wiki.is_dir() else None)
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0
    # dev in its own order, for per-example predictions: under group_by_length transformers also length-groups
    # (shuffles) the evaluation batches
    trainer.args.train_sampling_strategy = "sequential"
    prediction = trainer.predict(dev, metric_key_prefix="eval")
    metrics = prediction.metrics
    engine = trainer.sage_engine
    stages = {k: 0.0 for k in ("score", "map", "sample", "invert", "label", "choose")}
    synthetic = 0
    for h in (engine.history if engine else []):
        synthetic += h["synthetic_count"]
        for k, v in h["seconds"].items():
            stages[k] = stages.get(k, 0.0) + v
    warm = getattr(trainer, "warmup_metrics", {}) or {}
    gen_s = stages["sample"] + stages["invert"] + stages["label"] + stages["choose"]
    cell.update(
        dev_metric=metrics.get(f"eval_{task_spec.main_metric}"),
        dev_metrics={k[5:]: v for k, v in metrics.items() if k.startswith("eval_")},
        agreement=metrics.get("eval_agreement"),
        dev_predictions=encode_predictions(_as_predictions(prediction.predictions[0])),
        epochs=trainer.state.epoch, steps=trainer.state.global_step + warm.get("warmup_steps", 0),
        warmup_steps=warm.get("warmup_steps", 0), rounds=engine.round if engine else 0,
        round_precision=engine.config.round_precision if engine else None,
        train_agreement_per_epoch=agreement_per_epoch,
        epochs_to_99=next((i + 1 for i, a in enumerate(agreement_per_epoch) if a >= 0.99), None),
        seconds_train=round(train_s - sum(stages.values()), 2),
        seconds_stages={k: round(v, 2) for k, v in stages.items()},
        seconds_per_epoch=round(train_s / max(trainer.state.epoch or 1, 1e-9), 2),
        synthetic_points_per_s=round(synthetic / gen_s, 1) if gen_s > 0 else None,
        train_examples_per_s=round(trainer.state.global_step * training_args.train_batch_size / max(train_s, 1e-9), 1),
    )
    if system == "sage":  # every system exports the same architecture: measure it once per task
        from sage_hf.publishing.speed import measure_cpu_speed

        exported = export_student(trainer.model, teacher)
        texts = list(data.raw[data.eval_splits[0]][data.text_columns[0]][:64])
        cell["cpu_inference"] = measure_cpu_speed(exported, teacher.model, tokenizer, texts, batch_sizes=(1, 32),
                                                  repeats=5)
    return _finish(cell, start)


def synthetic_count_for_share(n_train: int, share: float) -> int:
    """Synthetic examples per round that make `share` of an augment-mode epoch (n real + count synthetic)."""
    if not 0 < share < 1:
        raise ValueError(f"synthetic_share must be in (0, 1), got {share}")
    return max(1, round(n_train * share / (1 - share)))


def kd_step_budget(n_train: int, spec: dict, batch_size: int, warmup_source: str | None) -> int:
    """Plain KD's optimiser steps: those of a SAGE cell with the library's default mode and synthetic count.

    Reads the field defaults rather than building a SageTrainingArguments: building one resets the
    AcceleratorState that a live trainer relies on.
    """
    from sage_hf import SageTrainingArguments

    default = {f.name: f.default for f in dataclasses.fields(SageTrainingArguments)}
    count = default["synthetic_count"] or n_train
    per_epoch = n_train if default["synthesis_mode"] == "replace" else n_train + count
    return _sage_steps(per_epoch, spec, batch_size, warmup_source)


def _sage_steps(per_epoch: int, spec: dict, batch_size: int, warmup_source: str | None) -> int:
    """Optimiser steps of a default SAGE cell: warm-up steps + epochs x steps over `per_epoch` examples."""
    import math

    from sage_hf.data.warmup import load_warmup_texts

    warm = 0
    if warmup_source is not None:
        lines = len(load_warmup_texts(warmup_source, max_samples=spec["warmup_max_samples"]))
        warm = math.ceil(lines / batch_size)
    return int(spec["epochs"] * math.ceil(per_epoch / batch_size) + warm)


def _main(results: dict, prefix: str, metric: str):
    return results.get(f"{prefix}{metric}")


def _dev_scores(model, dev, tokenizer, compute_metrics):
    """A standard model's dev metrics, logits and gold labels (for peers and for the teacher alike)."""
    import torch
    from transformers import EvalPrediction

    from sage_hf import SageDataCollator

    collate = SageDataCollator(tokenizer)
    device = next(model.parameters()).device
    logits, labels = [], []
    cols = [c for c in ("input_ids", "attention_mask", "token_type_ids", "label") if c in dev.column_names]
    rows = dev.select_columns(cols)
    with torch.no_grad():
        for i in range(0, len(rows), 128):
            batch = collate([rows[j] for j in range(i, min(i + 128, len(rows)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            labels.append(batch.pop("labels").cpu())
            logits.append(model(**batch).logits.float().cpu())
    s, y = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    return compute_metrics(EvalPrediction(predictions=s, label_ids=y)), s, y


def _as_predictions(logits):
    """Class ids (argmax) or regression scores, per dev example."""
    return logits.argmax(-1) if logits.shape[-1] > 1 else logits[:, 0]


def _finish(cell: dict, start: float) -> dict:
    cell["wall_s"] = round(time.time() - start, 1)
    cell["peak_rss_mb"] = round(peak_rss_mb(), 1)
    cell.setdefault("error", None)
    return cell


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--system", choices=sorted(SYSTEMS), help="required unless --teacher_only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suite", default="small", choices=sorted(SUITES))
    p.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue")))
    p.add_argument("--work", default=str(HERE / "results" / "work"))
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--teacher_dir", default=None, help="a fine-tuned teacher to use as given (when the folder exists)")
    p.add_argument("--transfer_sst2", type=int, default=None, help="SST-2 transfer set size (default: the suite's)")
    p.add_argument("--teacher_only", action="store_true", help="train (or reuse) the task's teacher and score it")
    p.add_argument("--epochs", type=int, default=None, help="the students' epochs (default: the suite's)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not a.teacher_only and a.system is None:
        p.error("--system is required unless --teacher_only")
    command = "python benchmarks/cell.py " + " ".join(sys.argv[1:])
    if a.epochs is not None:
        set_epochs(a.suite, a.epochs)
    try:
        if a.teacher_only:
            cell = run_teacher(a.task, a.suite, a.glue_dir, Path(a.work), a.device, a.teacher_dir, a.transfer_sst2)
            cell["error"] = None
        else:
            cell = run_cell(a.task, a.system, a.seed, a.suite, a.glue_dir, Path(a.work), a.device, a.teacher_dir,
                            a.transfer_sst2)
    except Exception as err:  # a failed cell is recorded, not lost
        cell = {"task": a.task, "system": a.system, "seed": a.seed, "suite": a.suite, "dev_metric": None,
                "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:],
                "peak_rss_mb": round(peak_rss_mb(), 1)}
    cell.update(command=command, machine=machine(), versions=versions(), commit=source_commit())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(cell, indent=2, default=str))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
