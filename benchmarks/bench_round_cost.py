#!/usr/bin/env python
"""What SAGE's rounds cost: plain KD and default SAGE at the same optimiser steps, in one process.

    python benchmarks/bench_round_cost.py --glue_dir ../shared/data/glue --n_train 500 --epochs 3

Both distil the same teacher (the packaged MiniLM) into the same student from the same cached teacher logits;
SAGE's seconds include its rounds (scoring, map, synthesis, labelling). The map is fitted (or loaded from
`--map_cache_dir`) before timing unless `--time_map_fit`: it is fitted once per teacher and data, and cached.
Without `--teacher` the MiniLM gets a random, sharpened task head (a teacher for timing, not for accuracy).
`--compare_anchors` also reports, for every round scored by the training pass, the Jaccard index between its
anchor set and the one a separate scoring pass would give (an extra, untimed run).

The last line is machine-readable: ``round cost: SAGE/KD training seconds <R> (KD <a>s, SAGE <b>s, <s> steps)``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

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

logger = logging.getLogger(__name__)


def sst2_sentences(glue_dir: str, n: int, seed: int = 0) -> list[str]:
    with open(Path(glue_dir) / "SST-2" / "train.tsv", newline="") as f:
        rows = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return [rows[i] for i in np.random.default_rng(seed).choice(len(rows), size=n, replace=False)]


def teacher_and_data(args):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = args.teacher or str(default_teacher_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if not args.teacher:
        with torch.no_grad():
            model.classifier.weight.mul_(args.sharpen)
    teacher = TeacherInterface(model.eval())
    encoded = tokenizer(sst2_sentences(args.glue_dir, args.n_train, args.seed), truncation=True,
                        max_length=args.max_length)
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
                    train_sampling_strategy="group_by_length", num_train_epochs=args.epochs, **overrides)
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
    parser.add_argument("--n_train", type=int, default=500)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="SAGE epochs; both runs get SAGE's step count.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--teacher_batch_size", type=int, default=128)
    parser.add_argument("--student_layers", type=int, default=2)
    parser.add_argument("--sharpen", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map_cache_dir", default=None)
    parser.add_argument("--time_map_fit", action="store_true", help="Count the one-off map fit as SAGE time.")
    parser.add_argument("--compare_anchors", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench_round_cost_")
    args.map_cache_dir = args.map_cache_dir or f"{work}/maps"

    teacher, tokenizer, data = teacher_and_data(args)
    # SAGE's default (augment) epoch is real + as many synthetic entries: both runs take that many steps.
    args.steps = args.epochs * -(-2 * len(data) // args.batch_size)
    if not args.time_map_fit:
        run(teacher, tokenizer, data, args, f"{work}/map").sage_engine.ensure_map()
    seconds, sage = {}, None
    for name, overrides in (("kd", {"sage": False}), ("sage", {})):
        trainer = run(teacher, tokenizer, data, args, f"{work}/{name}", **overrides)
        start = time.perf_counter()
        trainer.train()
        seconds[name] = time.perf_counter() - start
        sage = trainer if name == "sage" else sage
        print(f"{name}: {seconds[name]:.1f}s for {trainer.state.global_step} optimiser steps")
    for record in sage.sage_engine.history:
        parts = " ".join(f"{k} {v:.2f}s" for k, v in record["seconds"].items())
        print(f"  round {record['round']} (scored by the {record['scored_by']}): {parts}")
    if args.compare_anchors:
        jaccards = compare_anchors(run(teacher, tokenizer, data, args, f"{work}/compare"))
        print("anchor sets, training pass vs scoring pass, Jaccard per round: "
              + ", ".join(f"{j:.3f}" for j in jaccards))
    print(f"round cost: SAGE/KD training seconds {seconds['sage'] / seconds['kd']:.3f} (KD {seconds['kd']:.1f}s, "
          f"SAGE {seconds['sage']:.1f}s, {args.steps} steps)")


if __name__ == "__main__":
    main()
