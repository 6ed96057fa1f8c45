#!/usr/bin/env python
"""What SAGE's rounds cost: plain KD and default SAGE at the same optimiser steps, in one process.

    python benchmarks/bench_round_cost.py --glue_dir ../shared/data/glue --tasks sst2 cola mrpc rte stsb \
        --n_train 1000 --epochs 3

Per task (the protocol suite's five, at its sequence lengths and 3-layer student), both distil the same teacher
(the packaged MiniLM) into the same student from the same cached teacher logits, on `--n_train` examples drawn
from the task's train set with a fixed seed;
SAGE's seconds include its rounds (scoring, map, synthesis, labelling). The map is fitted (or loaded from
`--map_cache_dir`) before timing unless `--time_map_fit`: it is fitted once per teacher and data, and cached.
Without `--teacher` the MiniLM gets a random, sharpened task head (a teacher for timing, not for accuracy).
`--compare_anchors` also reports, for every round scored by the training pass, the Jaccard index between its
anchor set and the one a separate scoring pass would give (an extra, untimed run).

One line per task is machine-readable: ``round cost <task>: SAGE/KD training seconds <R> (KD <a>s, SAGE <b>s,
<s> steps)``; the last line gives the largest ratio over the tasks.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from sage_hf import (
    SageStudentForSequenceClassification,
    SageTrainer,
    SageTrainingArguments,
    TeacherInterface,
    cache_teacher_logits,
    default_teacher_path,
)
from sage_hf.rounds.anchors import select_anchors
from sage_hf.rounds.scoring import score_examples
from sage_hf.training_args import DEFAULT_SYNTHESIS

logger = logging.getLogger(__name__)


# The protocol suite's sequence lengths (benchmarks/cell.py, SUITES["protocol"]).
PROTOCOL_LENGTHS = {"sst2": 64, "cola": 64, "mrpc": 128, "rte": 128, "stsb": 128}


def task_examples(glue_dir: str, task: str, n: int, seed: int = 0):
    """`n` train examples of a GLUE task drawn with a fixed seed (all of them when it has fewer)."""
    from sage_hf.data.glue import get_task, load_glue

    train = load_glue(task, glue_dir, splits="train")["train"]
    rows = np.random.default_rng(seed).permutation(len(train))[: min(n, len(train))]
    return train.select(sorted(rows.tolist())), get_task(task)


def teacher_and_data(args, task: str):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = args.teacher or str(default_teacher_path())
    examples, spec = task_examples(args.glue_dir, task, args.n_train, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=spec.num_labels)
    if not args.teacher:
        with torch.no_grad():
            model.classifier.weight.mul_(args.sharpen)
    teacher = TeacherInterface(model.eval())
    texts = [list(examples[c]) for c in spec.text_columns]
    encoded = tokenizer(*texts, truncation=True, max_length=args.max_length or PROTOCOL_LENGTHS.get(task, 128))
    data = Dataset.from_dict(dict(encoded))
    return teacher, tokenizer, cache_teacher_logits(teacher, data, batch_size=args.teacher_batch_size)


def run(teacher, tokenizer, data, args, out: str, **overrides) -> SageTrainer:
    torch.manual_seed(args.seed)
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=args.student_layers)
    settings = dict(output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-4, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                    save_strategy="no", eval_strategy="no", logging_strategy="no", seed=args.seed,
                    agreement_threshold=1.0, save_round_plots=False, decode_examples=0,
                    map_cache_dir=args.map_cache_dir, teacher_batch_size=args.teacher_batch_size,
                    train_sampling_strategy="group_by_length", num_train_epochs=args.epochs)
    settings.update(hidden_loss="none", **overrides)  # the round's own cost, on logits, as recorded before 2026-12-07
    return SageTrainer(model=student, args=SageTrainingArguments(**settings), teacher_model=teacher,
                       train_dataset=data, processing_class=tokenizer)


def compare_anchors(trainer: SageTrainer) -> list[float]:
    """Per round scored by the training pass: Jaccard of its anchors and a separate pass's (same draws)."""
    engine, jaccards = trainer.sage_engine, []
    run_round = engine.run_round

    def both(student, losses, agreement, **kw):
        if engine.scored_by == "training pass":
            cfg = engine.config
            separate, _ = score_examples(student, engine.teacher, engine.features, engine.teacher_logits,
                                         range(engine.n_real), batch_size=cfg.teacher_batch_size,
                                         loss_kwargs=cfg.difficulty_kwargs(), show_progress=False)
            sets = [set(select_anchors(scores, engine.synthetic_count, policy=cfg.anchor_policy,
                                       fraction=cfg.anchor_fraction,
                                       rng=np.random.default_rng([cfg.seed, engine.round + 1])).indices.tolist())
                    for scores in (losses, separate)]
            jaccards.append(len(sets[0] & sets[1]) / len(sets[0] | sets[1]))
        return run_round(student, losses, agreement, **kw)

    engine.run_round = both
    trainer.train()
    return jaccards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue_dir", default="../shared/data/glue")
    parser.add_argument("--teacher", default=None, help="A fine-tuned sequence-classification teacher folder.")
    parser.add_argument("--tasks", nargs="+", default=["sst2"], choices=sorted(PROTOCOL_LENGTHS))
    parser.add_argument("--n_train", type=int, default=1000, help="Train examples per task (fewer if it has fewer).")
    parser.add_argument("--max_length", type=int, default=None, help="Default: the protocol suite's, per task.")
    parser.add_argument("--synthesis", default=DEFAULT_SYNTHESIS, help="The SAGE run's synthesis method.")
    parser.add_argument("--round_precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="The SAGE run's labelling precision (the library default: auto).")
    parser.add_argument("--epochs", type=int, default=3, help="SAGE epochs; both runs get SAGE's step count.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--teacher_batch_size", type=int, default=128)
    parser.add_argument("--student_layers", type=int, default=3)
    parser.add_argument("--sharpen", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map_cache_dir", default=None)
    parser.add_argument("--time_map_fit", action="store_true", help="Count the one-off map fit as SAGE time.")
    parser.add_argument("--compare_anchors", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_round_cost_")

    ratios = {task: measure(args, task, f"{work}/{task}") for task in args.tasks}
    worst = max(ratios, key=ratios.get)
    print(f"round cost: SAGE/KD training seconds, largest over {len(ratios)} tasks {ratios[worst]:.3f} ({worst}); "
          + ", ".join(f"{task} {r:.3f}" for task, r in ratios.items()))


def measure(args, task: str, work: str) -> float:
    """KD and SAGE on one task, side by side; returns SAGE's training seconds over KD's."""
    teacher, tokenizer, data = teacher_and_data(args, task)
    # SAGE's default (augment) epoch is real + as many synthetic entries: both runs take that many steps.
    args = argparse.Namespace(**{**vars(args), "steps": args.epochs * -(-2 * len(data) // args.batch_size),
                                 "map_cache_dir": args.map_cache_dir or f"{work}/maps"})
    if not args.time_map_fit:
        run(teacher, tokenizer, data, args, f"{work}/map").sage_engine.ensure_map()
    seconds = {}
    runs = [("kd", {"sage": False}), ("sage", {"synthesis": args.synthesis, "round_precision": args.round_precision})]
    if args.round_precision != "float32":  # the float32 labelling run beside it, for the difference
        runs.append(("sage_float32", {"synthesis": args.synthesis, "round_precision": "float32"}))
    for name, overrides in runs:
        trainer = run(teacher, tokenizer, data, args, f"{work}/{name}", **overrides)
        start = time.perf_counter()
        trainer.train()
        seconds[name] = time.perf_counter() - start
        if name == "sage":
            print(f"  labels in {trainer.sage_engine.config.round_precision}")
        print(f"{task} {name}: {seconds[name]:.1f}s for {trainer.state.global_step} optimiser steps")
        for record in trainer.sage_engine.history if name != "kd" else []:
            parts = " ".join(f"{k} {v:.2f}s" for k, v in record["seconds"].items())
            print(f"  round {record['round']} (scored by the {record['scored_by']}): {parts}")
    if args.compare_anchors:
        jaccards = compare_anchors(run(teacher, tokenizer, data, args, f"{work}/compare"))
        print("anchor sets, training pass vs scoring pass, Jaccard per round: "
              + ", ".join(f"{j:.3f}" for j in jaccards))
    ratio = seconds["sage"] / seconds["kd"]
    fp32 = (f"; float32 labels {seconds['sage_float32'] / seconds['kd']:.3f} ({seconds['sage_float32']:.1f}s)"
            if "sage_float32" in seconds else "")
    print(f"round cost {task}: SAGE/KD training seconds {ratio:.3f} (KD {seconds['kd']:.1f}s, "
          f"SAGE {seconds['sage']:.1f}s, {args.steps} steps{fp32})", flush=True)
    return ratio


if __name__ == "__main__":
    main()
