"""The recipe's reusable stages: task data, tokenized splits, a fine-tuned teacher, the run folder, the export.

`recipes/run_glue_sage.py` chains them; `benchmarks/cell.py` reuses them, so a benchmark cell sees the same data
and teacher as a user's run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from datasets import DatasetDict
from transformers import AutoModelForSequenceClassification, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..collator import SageDataCollator
from ..hub_ids import looks_like_hub_id
from .custom import load_custom
from .glue import get_task, load_glue
from .labels import validate_labels
from .metrics import make_compute_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "TaskData",
    "TeacherStage",
    "end_distributed",
    "export_stage",
    "load_task_data",
    "prepare_output_dir",
    "resolve_glue_dir",
    "teacher_stage",
    "tokenize_task",
]

RUN_FILE = "sage_run.json"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def resolve_glue_dir(glue_dir: str | None = None) -> str | None:
    """`glue_dir`, else $GLUE_DIR, else a `shared/data/glue` beside the working folder or the source checkout."""
    if glue_dir:
        return glue_dir
    if os.environ.get("GLUE_DIR"):
        return os.environ["GLUE_DIR"]
    for root in (Path.cwd().parent, _SOURCE_ROOT.parent):
        if (root / "shared" / "data" / "glue").is_dir():
            return str(root / "shared" / "data" / "glue")
    return None


@dataclass
class TaskData:
    """One task's raw splits and what the later stages need to know about them."""

    raw: DatasetDict
    text_columns: tuple[str, ...]
    labels: list | None  # None: regression
    eval_splits: list[str]
    task_name: str | None  # the GLUE task; None for custom files
    source: dict[str, Any] = field(default_factory=dict)  # where the data came from and how it was cut: cache keys

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def compute_metrics(self) -> Callable:
        """run_glue's metrics for the task; custom files are scored like SST-2 (accuracy) or STS-B (regression)."""
        return make_compute_metrics(self.task_name or ("stsb" if self.labels is None else "sst2"))

    def subsample(self, max_train_samples: int | None = None, max_eval_samples: int | None = None, seed: int = 0):
        """A seeded random subset of train; the first `max_eval_samples` rows of each evaluation split."""
        train = self.raw["train"]
        if max_train_samples is not None and max_train_samples < len(train):
            logger.info("Training on %d of %d examples (subsampled, seed %d)", max_train_samples, len(train), seed)
            self.raw["train"] = train.shuffle(seed=seed).select(range(max_train_samples))
        if max_eval_samples is not None:
            for split in self.eval_splits:
                self.raw[split] = self.raw[split].select(range(min(max_eval_samples, len(self.raw[split]))))
        self.source.update(max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, seed=seed)


def load_task_data(
    task_name: str | None = "sst2",
    *,
    glue_dir: str | None = None,
    dataset_name: str = "nyu-mll/glue",
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
) -> TaskData:
    """Custom files when `train_file` is given, else a GLUE task (local folder, else the Hub); labels checked."""
    if train_file:
        raw = load_custom(train_file, validation_file, test_file, text_columns=text_columns, label_column=label_column)
        columns = tuple(text_columns) if text_columns else tuple(
            c for c in raw["train"].column_names if c not in ("label", "idx"))
        feature = raw["train"].features["label"]
        if hasattr(feature, "names"):
            labels = list(feature.names)
        else:
            labels = None if feature.dtype.startswith("float") else sorted(set(raw["train"]["label"]))
        source = {"train_file": train_file, "validation_file": validation_file, "test_file": test_file}
        data = TaskData(raw, columns, labels, [s for s in ("validation",) if s in raw], None, source)
    else:
        task = get_task(task_name)
        glue_dir = resolve_glue_dir(glue_dir)
        raw = load_glue(task.name, glue_dir, hub_name=dataset_name)
        data = TaskData(raw, task.text_columns, None if task.is_regression else list(task.label_names),
                        [s for s in task.validation_splits if s in raw], task.name,
                        {"task": task.name, "glue_dir": glue_dir, "dataset": dataset_name})
    for split in ("train", *data.eval_splits):
        validate_labels(data.raw[split], data.num_labels)
    return data


def tokenize_task(data: TaskData, tokenizer, max_seq_length: int = 128, *,
                  training_args: TrainingArguments | None = None, overwrite_cache: bool = False) -> DatasetDict:
    """Model inputs and `label` per split, cached on disk (Arrow) under a key of everything that shapes them.

    Text and `idx` are dropped here, so no Trainer warns about columns its model does not take.
    """
    def encode(batch):
        return tokenizer(*[batch[c] for c in data.text_columns], truncation=True, max_length=max_seq_length)

    key = json.dumps([data.source, max_seq_length, tokenizer.name_or_path, len(tokenizer),
                      {s: len(d) for s, d in data.raw.items()}], sort_keys=True, default=str)
    cache = Path(os.environ.get("SAGE_HF_CACHE", Path.home() / ".cache" / "sage_hf")) / "tokenized"
    cache = cache / hashlib.sha256(key.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    first = training_args.main_process_first(desc="tokenizing") if training_args else contextlib.nullcontext()
    drop = [c for c in (*data.text_columns, "idx") if c in data.raw["train"].column_names]
    with first:
        return data.raw.map(encode, batched=True, load_from_cache_file=not overwrite_cache,
                            cache_file_names={split: str(cache / f"{split}.arrow") for split in data.raw},
                            remove_columns=drop, desc="Tokenizing")


class TeacherStage(NamedTuple):
    model: PreTrainedModel
    results: dict | None  # dev metrics of the fine-tuned teacher (teacher_<split>_<metric>); None when given
    folder: Path | None  # where the fine-tuned teacher lies; None when given


def teacher_stage(data: TaskData, tokenized: DatasetDict, tokenizer, training_args: TrainingArguments, *,
                  base_model: str, max_seq_length: int, teacher_model: str | None = None, epochs: float = 3.0,
                  learning_rate: float = 5e-5, batch_size: int = 32, cache_dir: str | None = None,
                  checkpoint_steps: int = 500) -> TeacherStage:
    """A fine-tuned teacher: `teacher_model` as given, or `base_model` fine-tuned on the task in
    `<output_dir>/teacher-<hash of the settings>`, reused by the next run with the same settings.

    The fine-tuning keeps its last checkpoint (every `checkpoint_steps` steps) in `<folder>/run` until it finishes,
    so an interrupted run continues where it stopped instead of starting over (SST-2's teacher takes an hour on
    two CPU cores).
    """
    if teacher_model:
        model = AutoModelForSequenceClassification.from_pretrained(teacher_model, cache_dir=cache_dir)
        if model.config.num_labels != data.num_labels:
            raise ValueError(f"The teacher {teacher_model} has {model.config.num_labels} labels but the task has "
                             f"{data.num_labels}")
        return TeacherStage(model, None, None)
    settings = {"base": str(base_model), "data": data.source, "max_seq_length": max_seq_length, "epochs": epochs,
                "lr": learning_rate, "batch": batch_size, "seed": training_args.seed, "labels": data.labels}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = Path(training_args.output_dir) / f"teacher-{key}"
    if (folder / "config.json").is_file() and (folder / "teacher_results.json").is_file():
        logger.info("Reusing the teacher fine-tuned earlier with the same settings: %s", folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        return TeacherStage(model, json.loads((folder / "teacher_results.json").read_text()), folder)
    names = {"id2label": {i: str(n) for i, n in enumerate(data.labels)}} if data.labels else {}
    if names:
        names["label2id"] = {v: k for k, v in names["id2label"].items()}
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=data.num_labels,
                                                               cache_dir=cache_dir, **names)
    a = training_args
    args = TrainingArguments(
        output_dir=str(folder / "run"), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=a.per_device_eval_batch_size,
        seed=a.seed, save_strategy="steps", save_steps=checkpoint_steps, save_total_limit=1, report_to=[],
        logging_steps=a.logging_steps, use_cpu=a.use_cpu, bf16=a.bf16, fp16=a.fp16, disable_tqdm=a.disable_tqdm,
        ddp_backend=a.ddp_backend, dataloader_pin_memory=a.dataloader_pin_memory)
    run = Path(args.output_dir)
    last = get_last_checkpoint(str(run)) if run.is_dir() else None
    if last is not None:
        logger.info("Teacher stage: continuing the interrupted fine-tuning from %s", last)
    else:
        logger.info("Teacher stage: fine-tuning %s on %d examples for %g epochs", base_model,
                    len(tokenized["train"]), epochs)
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"],
                      data_collator=SageDataCollator(tokenizer), compute_metrics=data.compute_metrics())
    trainer.train(resume_from_checkpoint=last)
    results = {}
    for split in data.eval_splits:
        results.update({f"teacher_{k.replace('eval_', split + '_')}": v
                        for k, v in trainer.evaluate(tokenized[split]).items() if k.startswith("eval_")})
    if trainer.is_world_process_zero():
        trainer.save_model(str(folder))
        tokenizer.save_pretrained(folder)
        (folder / "teacher_results.json").write_text(json.dumps(results, indent=2))
        shutil.rmtree(run, ignore_errors=True)  # the checkpoints (optimizer state: 3x the model) served their turn
        logger.info("Fine-tuned teacher saved to %s (runs with the same settings reuse it)", folder)
    if args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TeacherStage(model, results, folder)


def prepare_output_dir(output_dir: str, run_label: str, *, overwrite: bool = False,
                       resume_from_checkpoint: str | None = None, is_main_process: bool = True) -> str | None:
    """run_glue's rule: continue from the last checkpoint unless told to start over; never mix tasks in one folder.

    Returns the checkpoint to resume from, if any.
    """
    out = Path(output_dir)
    run_file = out / RUN_FILE
    if run_file.is_file() and not overwrite:
        earlier = json.loads(run_file.read_text()).get("task")
        if earlier != run_label:
            raise SystemExit(f"Output directory {out} holds a run of task '{earlier}', not '{run_label}': pass "
                             "--overwrite_output_dir to start over there, or choose another --output_dir")
    last = None
    if out.is_dir() and not overwrite:
        last = get_last_checkpoint(str(out))
        if last is not None and resume_from_checkpoint is None:
            logger.info("Checkpoint found at %s: resuming (pass --overwrite_output_dir to start over)", last)
    if is_main_process:
        if overwrite and out.is_dir():
            for checkpoint in out.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"task": run_label}))
    return resume_from_checkpoint or last


def export_stage(trainer, data: TaskData, metrics: dict, teacher_results: dict | None, *, dataset_name: str,
                 preset: str | None = None, teacher_name: str | None = None, base_model: str | None = None) -> Path:
    """The standard student, tokenizer and model card in <output_dir>/student (pushed with --push_to_hub).

    `teacher_name` is the fine-tuned teacher (its folder when fine-tuned in this run) and `base_model` the model it
    was fine-tuned from: a teacher loaded as the base and fine-tuned in memory would otherwise be named as the base.
    """
    folder = Path(trainer.args.output_dir) / "student"
    task = get_task(data.task_name) if data.task_name else None
    subsampled = None
    if data.source.get("max_train_samples") is not None and task is not None:
        by = f" (preset '{preset}')" if preset else ""
        subsampled = (f"trained on {metrics.get('train_samples'):,} of the task's training examples{by}, "
                      "so its figures are below what the whole task gives")
    eval_split = "validation" if "validation" in data.eval_splits else next(iter(data.eval_splits), None)
    texts = list(data.raw[eval_split][task.text_columns[0]][:64]) if task is not None and eval_split else None
    train_file = data.source.get("train_file")
    card = dict(task_name=data.task_name or "custom", dataset_id=dataset_name if task else train_file,
                dataset_name=f"GLUE {task.folder}" if task else Path(train_file).name,
                dataset_config=data.task_name, metrics={k: v for k, v in metrics.items() if k.startswith("eval_")},
                teacher_metrics=teacher_results, subsampled=subsampled, speed_texts=texts, teacher_name=teacher_name,
                base_model=base_model if looks_like_hub_id(base_model) else None)
    if trainer.args.push_to_hub:  # exports into <output_dir>/student, then uploads that folder
        url = trainer.push_to_hub(commit_message="Upload SAGE student", **card)
        logger.info("Standard student written to %s and pushed to %s", folder, url)
    else:
        trainer.export_student(folder, **card)
        logger.info("Standard student written to %s", folder)
    return folder


def end_distributed() -> None:
    """Leave the process group together: a rank exiting with gloo threads still up aborts ("terminate called...")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
