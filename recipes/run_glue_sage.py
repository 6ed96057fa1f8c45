#!/usr/bin/env python
"""Distil a GLUE (or custom) text classifier with SAGE, the way transformers' run_glue.py fine-tunes one.

    accelerate launch recipes/run_glue_sage.py                        # SST-2, packaged MiniLM teacher, quick preset
    accelerate launch recipes/run_glue_sage.py --task_name rte --preset full
    python recipes/run_glue_sage.py --config run.yaml --learning_rate 5e-5    # flags override the file

Stages: data -> teacher (fine-tuned here unless --teacher_model_name_or_path gives a trained one; reused on the
next run with the same settings) -> cached teacher logits -> warm-up + SAGE rounds -> dev metrics -> exported
standard student + model card in <output_dir>/student (and on the Hub with --push_to_hub).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

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
from sage_hf.data import get_task, load_custom, load_glue, validate_labels
from sage_hf.data.metrics import make_compute_metrics

logger = logging.getLogger("run_glue_sage")

REPO = Path(__file__).resolve().parents[1]
RUN_FILE = "sage_run.json"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Base teacher to fine-tune on the task (default: the packaged all-MiniLM-L6-v2, offline)."},
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "An already fine-tuned teacher (Hub id online, folder offline): skips the teacher stage."},
    )
    teacher_epochs: float = field(default=3.0, metadata={"help": "Epochs of the teacher stage."})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of the teacher stage."})
    teacher_batch_size_train: int = field(default=32, metadata={"help": "Per-device batch of the teacher stage."})
    student_layers: str | None = field(
        default=None, metadata={"help": "Teacher layers the student copies, e.g. '0,2,4' (overrides student_num_layers)."}
    )
    student_num_layers: int | None = field(
        default=None, metadata={"help": "Student depth (default: half the teacher's layers, every other one)."}
    )
    student_init: str = field(default="teacher", metadata={"help": "'teacher' (copy layers) or 'random'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are stored."})


@dataclass
class DataArguments:
    task_name: str | None = field(default="sst2", metadata={"help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte."})
    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local GLUE folder (SST-2/train.tsv, ...); default $GLUE_DIR, else ../shared/data/glue if present."},
    )
    dataset_name: str = field(default="nyu-mll/glue", metadata={"help": "Hub dataset used when no local folder is given."})
    train_file: str | None = field(default=None, metadata={"help": "Custom CSV/TSV/JSON training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Custom validation file."})
    test_file: str | None = field(default=None, metadata={"help": "Custom (labelled) test file, evaluated at the end."})
    text_column_names: str | None = field(default=None, metadata={"help": "Custom files: text columns, comma-separated."})
    label_column_name: str = field(default="label", metadata={"help": "Custom files: the label column."})
    max_seq_length: int = field(default=128, metadata={"help": "Longest tokenized input; longer ones are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the training set (seeded)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using the datasets cache."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in output_dir instead of resuming from its last checkpoint."}
    )
    preset: str = field(default="quick", metadata={"help": "'quick' (subsampled, ~10 min on 2 CPU cores), 'full', or 'tiny' (tests)."})


# What each preset sets unless the user gave the flag (or config key) explicitly.
PRESETS = {
    "quick": {"max_train_samples": 2000, "max_seq_length": 64, "teacher_epochs": 2.0, "num_train_epochs": 3.0,
              "learning_rate": 1e-4, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64,
              "train_sampling_strategy": "group_by_length",
              "warmup_max_samples": 1000, "warmup_max_length": 64,
              "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 2, "logging_steps": 20},
    "full": {"max_seq_length": 128, "teacher_epochs": 3.0, "num_train_epochs": 10.0, "learning_rate": 1e-4,
             "train_sampling_strategy": "group_by_length",
             "per_device_train_batch_size": 32, "per_device_eval_batch_size": 128, "eval_strategy": "epoch",
             "save_strategy": "epoch", "save_total_limit": 2, "logging_steps": 100},
    "tiny": {"max_train_samples": 64, "max_eval_samples": 32, "max_seq_length": 32, "teacher_epochs": 1.0,
             "num_train_epochs": 2.0, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
             "reducer": "pca", "n_neighbors": 10, "sample_neighbors": 5, "warmup_epochs": 0.0,
             "eval_strategy": "epoch", "save_strategy": "epoch", "logging_steps": 5},
}


# ---- arguments ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]):
    """HfArgumentParser over the three dataclasses; `--config file.yaml|json` gives defaults, flags override."""
    parser = HfArgumentParser((ModelArguments, DataArguments, SageTrainingArguments))
    argv = list(argv)
    config_args: list[str] = []
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a .yaml or .json file")
        config_args = config_to_argv(argv[i + 1], parser)
        argv = argv[:i] + argv[i + 2:]
    given = {a[2:].split("=", 1)[0] for a in config_args + argv if a.startswith("--")}
    preset = _preset_name(config_args + argv)
    if preset not in PRESETS:
        raise SystemExit(f"Unknown --preset '{preset}': choose one of {', '.join(PRESETS)}")
    preset_args = []
    for key, value in PRESETS[preset].items():
        if key not in given:
            preset_args += [f"--{key}", str(value)]
    if "output_dir" not in given:
        preset_args += ["--output_dir", "outputs/run_glue_sage"]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=preset_args + config_args + argv)
    return model_args, data_args, training_args, given


def _preset_name(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return "quick"


def config_to_argv(path: str, parser: HfArgumentParser) -> list[str]:
    """A YAML/JSON mapping as command-line flags, so flags given after it override it."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"Config file {path} not found")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        config = yaml.safe_load(text) or {}
    else:
        config = json.loads(text)
    if not isinstance(config, dict):
        raise SystemExit(f"Config file {path} must hold a mapping of argument names to values")
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SystemExit(f"Unknown key '{unknown[0]}' in config file {path} (not an argument of run_glue_sage.py)")
    argv = []
    for key, value in config.items():
        if isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def resolve_glue_dir(data_args: DataArguments) -> str | None:
    if data_args.glue_dir:
        return data_args.glue_dir
    if os.environ.get("GLUE_DIR"):
        return os.environ["GLUE_DIR"]
    for candidate in (Path.cwd().parent / "shared" / "data" / "glue", REPO.parent / "shared" / "data" / "glue"):
        if candidate.is_dir():
            return str(candidate)
    return None


# ---- data --------------------------------------------------------------------------------------------------
def load_raw_data(data_args: DataArguments):
    """(DatasetDict, text columns, label names or None for regression, eval split names, metric task)."""
    if data_args.train_file:
        text_columns = tuple(data_args.text_column_names.split(",")) if data_args.text_column_names else None
        raw = load_custom(data_args.train_file, data_args.validation_file, data_args.test_file,
                          text_columns=text_columns, label_column=data_args.label_column_name)
        text_columns = text_columns or tuple(c for c in raw["train"].column_names if c not in ("label", "idx"))
        feature = raw["train"].features["label"]
        labels = list(feature.names) if hasattr(feature, "names") else (
            None if raw["train"].features["label"].dtype.startswith("float") else sorted(set(raw["train"]["label"])))
        evals = [s for s in ("validation",) if s in raw]
        return raw, text_columns, labels, evals, None
    task = get_task(data_args.task_name)
    raw = load_glue(task.name, resolve_glue_dir(data_args), hub_name=data_args.dataset_name)
    labels = None if task.is_regression else list(task.label_names)
    evals = [s for s in task.validation_splits if s in raw]
    return raw, task.text_columns, labels, evals, task.name


def tokenize(raw, tokenizer, text_columns, data_args, training_args):
    """Tokenized splits, cached on disk (datasets Arrow files) under a key of everything that shapes them."""
    def fn(batch):
        texts = [batch[c] for c in text_columns]
        return tokenizer(*texts, truncation=True, max_length=data_args.max_seq_length)

    key = json.dumps([data_args.task_name, data_args.train_file, resolve_glue_dir(data_args), data_args.max_train_samples,
                      data_args.max_eval_samples, data_args.max_seq_length, training_args.seed,
                      tokenizer.name_or_path, len(tokenizer), {s: len(d) for s, d in raw.items()}])
    cache = Path(os.environ.get("SAGE_HF_CACHE", Path.home() / ".cache" / "sage_hf")) / "tokenized"
    cache = cache / hashlib.sha256(key.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    with training_args.main_process_first(desc="tokenizing"):
        return raw.map(fn, batched=True, load_from_cache_file=not data_args.overwrite_cache,
                       cache_file_names={split: str(cache / f"{split}.arrow") for split in raw},
                       remove_columns=[c for c in text_columns], desc="Tokenizing")


# ---- stages ------------------------------------------------------------------------------------------------
def teacher_stage(model_args, data_args, training_args, train, evals, labels, tokenizer, base_path, compute_metrics):
    """A fine-tuned teacher: given, reused from an earlier run with the same settings, or trained now."""
    num_labels = 1 if labels is None else len(labels)
    if model_args.teacher_model_name_or_path:
        teacher = AutoModelForSequenceClassification.from_pretrained(
            model_args.teacher_model_name_or_path, cache_dir=model_args.cache_dir)
        if teacher.config.num_labels != num_labels:
            raise SystemExit(f"The teacher {model_args.teacher_model_name_or_path} has {teacher.config.num_labels} "
                             f"labels but the task has {num_labels}")
        return teacher, None
    settings = {"base": str(base_path), "task": data_args.task_name, "train_file": data_args.train_file,
                "max_train_samples": data_args.max_train_samples, "max_seq_length": data_args.max_seq_length,
                "epochs": model_args.teacher_epochs, "lr": model_args.teacher_learning_rate,
                "batch": model_args.teacher_batch_size_train, "seed": training_args.seed, "labels": labels}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(training_args.output_dir) / f"teacher-{key}"
    if (folder / "config.json").is_file() and (folder / "teacher_results.json").is_file():
        logger.info("Reusing the teacher fine-tuned earlier with the same settings: %s", folder)
        teacher = AutoModelForSequenceClassification.from_pretrained(folder)
        return teacher, json.loads((folder / "teacher_results.json").read_text())
    id2label = {i: str(n) for i, n in enumerate(labels)} if labels else None
    teacher = AutoModelForSequenceClassification.from_pretrained(
        base_path, num_labels=num_labels, cache_dir=model_args.cache_dir,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}))
    args = TrainingArguments(
        output_dir=str(folder / "run"), num_train_epochs=model_args.teacher_epochs,
        learning_rate=model_args.teacher_learning_rate, per_device_train_batch_size=model_args.teacher_batch_size_train,
        per_device_eval_batch_size=training_args.per_device_eval_batch_size, seed=training_args.seed,
        save_strategy="no", report_to=[], logging_steps=training_args.logging_steps, use_cpu=training_args.use_cpu,
        bf16=training_args.bf16, fp16=training_args.fp16, disable_tqdm=training_args.disable_tqdm,
        ddp_backend=training_args.ddp_backend)
    logger.info("Teacher stage: fine-tuning %s on %d examples for %g epochs", base_path, len(train),
                model_args.teacher_epochs)
    trainer = Trainer(model=teacher, args=args, train_dataset=train, data_collator=SageDataCollator(tokenizer),
                      compute_metrics=compute_metrics)
    trainer.train()
    results = {}
    for name, ds in evals.items():
        results.update({f"teacher_{k.replace('eval_', name + '_')}": v
                        for k, v in trainer.evaluate(ds).items() if k.startswith("eval_")})
    if trainer.is_world_process_zero():
        trainer.save_model(str(folder))
        tokenizer.save_pretrained(folder)
        (folder / "teacher_results.json").write_text(json.dumps(results, indent=2))
    training_args_barrier(training_args)
    return teacher, results


def training_args_barrier(training_args) -> None:
    if training_args.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def check_output_dir(training_args, data_args) -> str | None:
    """run_glue's rule: continue from the last checkpoint unless told to start over; never mix tasks."""
    out = Path(training_args.output_dir)
    task = data_args.task_name if not data_args.train_file else f"custom:{Path(data_args.train_file).name}"
    run_file = out / RUN_FILE
    if run_file.is_file() and not data_args.overwrite_output_dir:
        earlier = json.loads(run_file.read_text()).get("task")
        if earlier != task:
            raise SystemExit(f"Output directory {out} holds a run of task '{earlier}', not '{task}': pass "
                             "--overwrite_output_dir to start over there, or choose another --output_dir")
    last = None
    if out.is_dir() and not data_args.overwrite_output_dir:
        last = get_last_checkpoint(str(out))
        if last is not None and training_args.resume_from_checkpoint is None:
            logger.info("Checkpoint found at %s: resuming (pass --overwrite_output_dir to start over)", last)
    if data_args.overwrite_output_dir and out.is_dir() and training_args.process_index == 0:
        import shutil

        for ckpt in out.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
    if training_args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"task": task}))
    return last


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, given = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    logging.getLogger("sage_hf").setLevel(logging.INFO if training_args.process_index == 0 else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id (e.g. your-name/minilm-sst2-sage)")
    if training_args.warmup_source is None and training_args.warmup_epochs > 0 and "warmup_source" not in given:
        wiki = Path(resolve_glue_dir(data_args) or "nonexistent").parent / "wikitext-2-raw"
        if wiki.is_dir():
            training_args.warmup_source = str(wiki)
    start = time.time()
    last_checkpoint = check_output_dir(training_args, data_args)
    resume = training_args.resume_from_checkpoint or last_checkpoint

    raw, text_columns, labels, eval_splits, metric_task = load_raw_data(data_args)
    num_labels = 1 if labels is None else len(labels)
    for split in ("train", *eval_splits):
        validate_labels(raw[split], num_labels)
    if data_args.max_train_samples is not None and data_args.max_train_samples < len(raw["train"]):
        logger.info("Preset '%s': training on %d of %d examples (subsampled, seed %d)", data_args.preset,
                    data_args.max_train_samples, len(raw["train"]), training_args.seed)
        raw["train"] = raw["train"].shuffle(seed=training_args.seed).select(range(data_args.max_train_samples))
    if data_args.max_eval_samples is not None:
        for split in eval_splits:
            raw[split] = raw[split].select(range(min(data_args.max_eval_samples, len(raw[split]))))

    base_path = model_args.model_name_or_path or str(default_teacher_path())
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path or base_path,
                                              cache_dir=model_args.cache_dir)
    data = tokenize(raw, tokenizer, text_columns, data_args, training_args)
    compute_metrics = make_compute_metrics(metric_task or ("stsb" if labels is None else "sst2"))
    evals = {split: data[split] for split in eval_splits}

    teacher_model, teacher_results = teacher_stage(model_args, data_args, training_args, data["train"], evals,
                                                   labels, tokenizer, base_path, compute_metrics)
    teacher = TeacherInterface(teacher_model.eval(), training_args.interface_layer)
    layers = [int(i) for i in model_args.student_layers.split(",")] if model_args.student_layers else None
    student = SageStudentForSequenceClassification.from_teacher(
        teacher, num_layers=model_args.student_num_layers, layers=layers, init=model_args.student_init)
    logger.info("Student: %d layers copied from teacher layers %s", student.config.num_layers,
                student.config.teacher_layers)
    train = cache_teacher_logits(teacher.to(training_args.device), data["train"],
                                 batch_size=training_args.teacher_batch_size, tokenizer=tokenizer)
    trainer = SageTrainer(model=student, args=training_args, teacher_model=teacher, train_dataset=train,
                          eval_dataset=evals.get(eval_splits[0]) if eval_splits else None, processing_class=tokenizer,
                          compute_metrics=compute_metrics)
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    for split, ds in evals.items():
        prefix = "eval" if split == "validation" else f"eval_{split.split('_', 1)[-1]}"
        metrics.update(trainer.evaluate(ds, metric_key_prefix=prefix))
    if "test" in data and data_args.test_file and not (np.asarray(data["test"]["label"]) < 0).all():
        metrics.update(trainer.evaluate(data["test"], metric_key_prefix="test"))
    metrics.update(teacher_results or {})
    engine = trainer.sage_engine
    metrics.update({"sage_rounds": engine.round if engine else 0,
                    "sage_stop_reason": engine.stop_reason if engine else None,
                    "train_samples": len(train), "wall_s": round(time.time() - start, 1)})
    trainer.save_metrics("all", metrics)
    if trainer.is_world_process_zero():
        base = model_args.teacher_model_name_or_path or model_args.model_name_or_path
        base = "sentence-transformers/all-MiniLM-L6-v2" if base is None else base  # the packaged offline default
        write_student(trainer, training_args, data_args, metric_task, metrics, teacher_results, raw,
                      base_model=base if base.count("/") == 1 and not os.path.exists(base) else None)
    logger.info("Done in %.0fs: %s", time.time() - start, json.dumps(
        {k: v for k, v in metrics.items() if k.startswith(("eval_", "teacher_")) or k.startswith("sage")}))
    return metrics


def write_student(trainer, training_args, data_args, metric_task, metrics, teacher_results, raw,
                  base_model: str | None = None) -> Path:
    """The standard student, tokenizer and model card in <output_dir>/student (pushed with --push_to_hub)."""
    folder = Path(training_args.output_dir) / "student"
    task = get_task(metric_task) if metric_task else None
    n_train = metrics.get("train_samples")
    subsampled = None
    if data_args.max_train_samples is not None and task is not None:
        subsampled = (f"trained on {n_train:,} of the task's training examples (preset '{data_args.preset}'), "
                      "so its figures are below what the whole task gives")
    eval_split = "validation" if "validation" in raw else next((s for s in raw if s.startswith("validation")), None)
    texts = list(raw[eval_split][task.text_columns[0]][:64]) if task is not None and eval_split else None
    card = dict(task_name=metric_task or "custom", dataset_id=data_args.dataset_name if task else data_args.train_file,
                dataset_name=f"GLUE {task.folder}" if task else Path(data_args.train_file).name,
                dataset_config=metric_task, metrics={k: v for k, v in metrics.items() if k.startswith("eval_")},
                teacher_metrics=teacher_results, subsampled=subsampled,
                speed_texts=texts, base_model=base_model)
    if training_args.push_to_hub:  # exports into <output_dir>/student, then uploads that folder
        url = trainer.push_to_hub(commit_message="Upload SAGE student", **card)
        logger.info("Standard student written to %s and pushed to %s", folder, url)
    else:
        trainer.export_student(folder, **card)
        logger.info("Standard student written to %s", folder)
    return folder


def end_distributed() -> None:
    """Leave the process group together: a rank exiting with gloo threads still up aborts ("terminate called...")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    end_distributed()
