"""Quick offline job: fine-tune the packaged MiniLM teacher on a slice of SST-2, distil a 3-layer student.

    python recipes/quick_distil.py --glue_dir ../shared/data/glue

Distils with SAGE rounds (UMAP map of layer-1 vectors, synthetic examples near the high-loss ones, swapped
in each epoch; `--no_sage` for plain logit distillation); writes the exported standard student to
<output_dir>/student, the per-round loss maps to <output_dir>/student_run/sage_rounds and the dev metrics to
<output_dir>/all_results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from sage_hf import (
    SageDataCollator,
    SageStudentForSequenceClassification,
    SageTrainer,
    SageTrainingArguments,
    TeacherInterface,
    cache_teacher_logits,
    default_teacher_path,
    export_student,
)
from sage_hf.data import load_glue
from sage_hf.metrics import make_compute_metrics

logger = logging.getLogger("quick_distil")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"), help="Folder with SST-2/train.tsv, dev.tsv")
    parser.add_argument("--output_dir", default="outputs/quick_distil")
    parser.add_argument("--max_train_samples", type=int, default=2000)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--teacher_epochs", type=float, default=2.0)
    parser.add_argument("--student_epochs", type=float, default=3.0)
    parser.add_argument("--student_num_layers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_sage", action="store_true", help="plain logit distillation, no SAGE rounds")
    parser.add_argument("--synthesis_mode", default="replace", choices=["replace", "augment"])
    parser.add_argument("--warmup_source", default=None, help="generic text for the warm-up (e.g. wikitext-2-raw)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    if not args.glue_dir:
        parser.error("point --glue_dir (or GLUE_DIR) at a GLUE folder holding SST-2/train.tsv and SST-2/dev.tsv")
    out = Path(args.output_dir)
    start = time.time()

    path = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_glue("sst2", args.glue_dir, splits=["train", "validation"])
    train = data["train"].shuffle(seed=args.seed).select(range(min(args.max_train_samples, len(data["train"]))))
    logger.info("Subsampled SST-2 train to %d of %d examples (quick job)", len(train), len(data["train"]))

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=args.max_seq_length)

    train = train.map(tokenize, batched=True, remove_columns=["sentence", "idx"])
    dev = data["validation"].map(tokenize, batched=True, remove_columns=["sentence", "idx"])
    metrics_fn = make_compute_metrics("sst2")
    common = dict(per_device_eval_batch_size=64, report_to=[], save_strategy="no", logging_steps=20, seed=args.seed,
                  use_cpu=not torch.cuda.is_available())

    teacher_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    teacher_args = TrainingArguments(output_dir=str(out / "teacher"), num_train_epochs=args.teacher_epochs,
                                     per_device_train_batch_size=32, learning_rate=5e-5, **common)
    teacher_trainer = Trainer(model=teacher_model, args=teacher_args, train_dataset=train, eval_dataset=dev,
                              data_collator=SageDataCollator(tokenizer), compute_metrics=metrics_fn)
    teacher_trainer.train()
    teacher_metrics = teacher_trainer.evaluate()
    logger.info("Teacher dev accuracy %.4f", teacher_metrics["eval_accuracy"])

    teacher = TeacherInterface(teacher_model.eval())
    train = cache_teacher_logits(teacher, train, batch_size=64, tokenizer=tokenizer)
    student = SageStudentForSequenceClassification.from_teacher(teacher, num_layers=args.student_num_layers)
    sage_args = SageTrainingArguments(output_dir=str(out / "student_run"), num_train_epochs=args.student_epochs,
                                      per_device_train_batch_size=32, learning_rate=1e-4, temperature=2.0,
                                      eval_strategy="epoch", sage=not args.no_sage,
                                      synthesis_mode=args.synthesis_mode, warmup_source=args.warmup_source,
                                      warmup_max_samples=2000, **common)
    trainer = SageTrainer(model=student, args=sage_args, teacher_model=teacher, train_dataset=train, eval_dataset=dev,
                          processing_class=tokenizer, compute_metrics=metrics_fn)
    trainer.train()
    student_metrics = trainer.evaluate()
    export_student(trainer.model, teacher, out / "student", tokenizer=tokenizer)

    results = {
        "teacher_eval_accuracy": teacher_metrics["eval_accuracy"],
        "eval_accuracy": student_metrics["eval_accuracy"],
        "eval_agreement": student_metrics["eval_agreement"],
        "train_samples": len(train),
        "teacher_parameters": sum(p.numel() for p in teacher_model.parameters()),
        "student_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "sage_rounds": trainer.sage_engine.round if trainer.sage_engine else 0,
        "stop_reason": trainer.sage_engine.stop_reason if trainer.sage_engine else None,
        "wall_s": round(time.time() - start, 1),
    }
    (out / "all_results.json").write_text(json.dumps(results, indent=2))
    logger.info("Results: %s", json.dumps(results))
    logger.info("Standard student written to %s (load it with AutoModelForSequenceClassification)", out / "student")


if __name__ == "__main__":
    main()
