#!/usr/bin/env python
"""Distil a GLUE (or custom) text classifier with SAGE, the way transformers' run_glue.py fine-tunes one.

    accelerate launch recipes/run_glue_sage.py                        # SST-2, packaged MiniLM teacher, quick preset
    accelerate launch recipes/run_glue_sage.py --task_name rte --preset full
    python recipes/run_glue_sage.py --config run.yaml --learning_rate 5e-5    # flags override the file
    torchrun --standalone --nproc_per_node 2 recipes/run_glue_sage.py         # one 2-rank run (gloo on CPU)

Stages (sage_hf.data.stages): data -> teacher (fine-tuned here unless --teacher_model_name_or_path gives a trained
one; reused on the next run with the same settings) -> cached teacher logits -> warm-up + SAGE rounds -> dev
metrics -> exported standard student + model card in <output_dir>/student (and on the Hub with --push_to_hub).
"""

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import get_type_hints

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments
from transformers.training_args import ParallelMode

from sage_hf import (
    SageStudentForSequenceClassification,
    SageTrainer,
    SageTrainingArguments,
    TeacherInterface,
    cache_teacher_logits,
    default_teacher_path,
)
from sage_hf.data.stages import (
    end_distributed,
    export_stage,
    load_task_data,
    prepare_output_dir,
    resolve_glue_dir,
    teacher_stage,
    tokenize_task,
)
from sage_hf.publishing.card import OFFLINE_BASE

logger = logging.getLogger("run_glue_sage")

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
DEFAULT_PRESET = "quick"
RECIPE_DEFAULTS = {"output_dir": "outputs/run_glue_sage"}  # where TrainingArguments has none of its own
USAGE = ("run_glue_sage.py [--preset {quick,full,tiny}] [--config FILE] [--task_name TASK | --train_file FILE] "
         "[--ARGUMENT VALUE ...]")


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
        default=None,
        metadata={"help": "Teacher layers the student copies, e.g. '0,2,4' (overrides student_num_layers)."},
    )
    student_num_layers: int | None = field(
        default=None, metadata={"help": "Student depth (default: half the teacher's layers, every other one)."}
    )
    student_init: str = field(default="teacher", metadata={"help": "'teacher' (copy layers) or 'random'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are stored."})


@dataclass
class DataArguments:
    preset: str = field(
        default=DEFAULT_PRESET,
        metadata={"help": "'quick' (subsampled, ~10 min on 2 CPU cores), 'full', or 'tiny' (tests); the values each "
                  "one sets are listed with the arguments below, and a flag or config key overrides them."},
    )
    config: str | None = field(
        default=None, metadata={"help": "A .yaml or .json mapping of argument names to values; flags override it."}
    )
    task_name: str | None = field(
        default="sst2", metadata={"help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte."}
    )
    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local GLUE folder (SST-2/train.tsv, ...); default $GLUE_DIR, else ../shared/data/glue "
                  "if present."},
    )
    dataset_name: str = field(
        default="nyu-mll/glue", metadata={"help": "Hub dataset used when no local folder is given."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Custom CSV/TSV/JSON training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Custom validation file."})
    test_file: str | None = field(
        default=None, metadata={"help": "Custom (labelled) test file, evaluated at the end."}
    )
    text_column_names: str | None = field(
        default=None, metadata={"help": "Custom files: text columns, comma-separated."}
    )
    label_column_name: str = field(default="label", metadata={"help": "Custom files: the label column."})
    max_seq_length: int = field(default=128, metadata={"help": "Longest tokenized input; longer ones are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the training set (seeded)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using the datasets cache."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in output_dir instead of resuming from its last checkpoint."}
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class RecipeArgumentParser(HfArgumentParser):
    """`--help` lists the recipe's arguments, then SAGE's, then TrainingArguments' long list; presets shown."""

    GROUPS = {ModelArguments: "Teacher and student (run_glue_sage.py)",
              DataArguments: "Preset, data and output folder (run_glue_sage.py)",
              SageTrainingArguments: "SAGE distillation (sage_hf.SageTrainingArguments)"}
    TRAINER_GROUP = "Training loop (transformers.TrainingArguments)"

    def __init__(self):
        super().__init__((ModelArguments, DataArguments, SageTrainingArguments), description=__doc__,
                         formatter_class=_HelpFormatter, usage=USAGE)
        for action in self._actions:
            if any(action.dest in preset for preset in PRESETS.values()):
                shown = ", ".join(f"{name} {v.get(action.dest, '%(default)s')}" for name, v in PRESETS.items())
                action.help = f"{action.help} (default by --preset: {shown}; library default %(default)s)"
            elif action.dest in RECIPE_DEFAULTS:
                action.default = RECIPE_DEFAULTS[action.dest]

    def _add_dataclass_arguments(self, dtype):
        own = self.add_argument_group(self.GROUPS[dtype])
        trainer = self.add_argument_group(self.TRAINER_GROUP) if issubclass(dtype, TrainingArguments) else own
        trainer_fields = {f.name for f in fields(TrainingArguments)}
        hints = get_type_hints(dtype)
        for f in fields(dtype):
            if f.init:
                f.type = hints[f.name]
                self._parse_dataclass_field(trainer if f.name in trainer_fields else own, f)


# ---- arguments ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]):
    """Preset values, then `--config file.yaml|json`, then flags: each later source overrides the earlier ones."""
    parser = RecipeArgumentParser()
    argv = list(argv)
    config_args: list[str] = []
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a .yaml or .json file")
        config_args = config_to_argv(argv[i + 1], parser)
    given = {a[2:].split("=", 1)[0].replace("-", "_") for a in config_args + argv if a.startswith("--")}
    preset = _preset_name(config_args + argv)
    if preset not in PRESETS:
        raise SystemExit(f"Unknown --preset '{preset}': choose one of {', '.join(PRESETS)}")
    defaults = {**PRESETS[preset], **launch_defaults()}
    preset_args = [arg for key, value in defaults.items() if key not in given for arg in (f"--{key}", str(value))]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=preset_args + config_args + argv)
    return model_args, data_args, training_args, given


def launch_defaults() -> dict:
    """Without a GPU (or other accelerator): no pinned memory, and a launched multi-process run is a gloo one.

    `accelerate launch` and `torchrun` set WORLD_SIZE; without `use_cpu` each process would run its own job.
    """
    if torch.accelerator.is_available():
        return {}
    defaults: dict = {"dataloader_pin_memory": False}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        defaults["use_cpu"] = True
    return defaults


def _preset_name(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return DEFAULT_PRESET


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
    known = {a.dest for a in parser._actions} - {"config"}
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


def check_world_size(training_args) -> None:
    """A launched multi-process run must be one distributed run, never N copies of a single-process one."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise SystemExit(f"{launched} processes were launched but TrainingArguments is not distributed "
                         f"(device {training_args.device}): drop --use_cpu false, or launch one process")
    logger.info("World size %d: %d process%s (this is rank %d), parallel mode %s, device %s",
                training_args.world_size, training_args.world_size, "es" if training_args.world_size > 1 else "",
                training_args.process_index, training_args.parallel_mode.value, training_args.device)


# ---- run ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args, given = parse_args(sys.argv[1:] if argv is None else argv)
    main_process = training_args.process_index == 0
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if main_process else logging.WARNING)
    logging.getLogger("sage_hf").setLevel(logging.INFO if main_process else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id (e.g. your-name/minilm-sst2-sage)")
    check_world_size(training_args)
    if training_args.warmup_source is None and training_args.warmup_epochs > 0 and "warmup_source" not in given:
        wiki = Path(resolve_glue_dir(data_args.glue_dir) or "nonexistent").parent / "wikitext-2-raw"
        if wiki.is_dir():
            training_args.warmup_source = str(wiki)
    start = time.time()
    run_label = data_args.task_name if not data_args.train_file else f"custom:{Path(data_args.train_file).name}"
    resume = prepare_output_dir(training_args.output_dir, run_label, overwrite=data_args.overwrite_output_dir,
                                resume_from_checkpoint=training_args.resume_from_checkpoint,
                                is_main_process=main_process)

    data = load_task_data(
        data_args.task_name, glue_dir=data_args.glue_dir, dataset_name=data_args.dataset_name,
        train_file=data_args.train_file, validation_file=data_args.validation_file, test_file=data_args.test_file,
        text_columns=data_args.text_column_names.split(",") if data_args.text_column_names else None,
        label_column=data_args.label_column_name)
    data.subsample(data_args.max_train_samples, data_args.max_eval_samples, seed=training_args.seed)
    base_path = model_args.model_name_or_path or str(default_teacher_path())
    tokenizer = AutoTokenizer.from_pretrained(model_args.teacher_model_name_or_path or base_path,
                                              cache_dir=model_args.cache_dir)
    tokenized = tokenize_task(data, tokenizer, data_args.max_seq_length, training_args=training_args,
                              overwrite_cache=data_args.overwrite_cache)
    teacher_model, teacher_results, teacher_folder = teacher_stage(
        data, tokenized, tokenizer, training_args, base_model=base_path, max_seq_length=data_args.max_seq_length,
        teacher_model=model_args.teacher_model_name_or_path, epochs=model_args.teacher_epochs,
        learning_rate=model_args.teacher_learning_rate, batch_size=model_args.teacher_batch_size_train,
        cache_dir=model_args.cache_dir)

    teacher = TeacherInterface(teacher_model.eval(), training_args.interface_layer)
    layers = [int(i) for i in model_args.student_layers.split(",")] if model_args.student_layers else None
    student = SageStudentForSequenceClassification.from_teacher(
        teacher, num_layers=model_args.student_num_layers, layers=layers, init=model_args.student_init)
    logger.info("Student: %d layers copied from teacher layers %s", student.config.num_layers,
                student.config.teacher_layers)
    train = cache_teacher_logits(teacher.to(training_args.device), tokenized["train"],
                                 batch_size=training_args.teacher_batch_size, tokenizer=tokenizer)
    evals = {split: tokenized[split] for split in data.eval_splits}
    trainer = SageTrainer(model=student, args=training_args, teacher_model=teacher, train_dataset=train,
                          eval_dataset=next(iter(evals.values()), None), processing_class=tokenizer,
                          compute_metrics=data.compute_metrics())
    metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    for split, ds in evals.items():
        prefix = "eval" if split == "validation" else f"eval_{split.split('_', 1)[-1]}"
        metrics.update(trainer.evaluate(ds, metric_key_prefix=prefix))
    if data_args.test_file and "test" in tokenized and not (np.asarray(tokenized["test"]["label"]) < 0).all():
        metrics.update(trainer.evaluate(tokenized["test"], metric_key_prefix="test"))
    metrics.update(teacher_results or {})
    engine = trainer.sage_engine
    metrics.update({"sage_rounds": engine.round if engine else 0,
                    "sage_stop_reason": engine.stop_reason if engine else None,
                    "train_samples": len(train), "wall_s": round(time.time() - start, 1)})
    trainer.save_metrics("all", metrics)
    logger.info("Metrics written to %s", Path(training_args.output_dir) / "all_results.json")
    if trainer.is_world_process_zero():
        given = model_args.teacher_model_name_or_path
        export_stage(trainer, data, metrics, teacher_results, dataset_name=data_args.dataset_name,
                     preset=data_args.preset if data_args.max_train_samples is not None else None,
                     teacher_name=given or str(teacher_folder),
                     base_model=None if given else model_args.model_name_or_path or OFFLINE_BASE)
    logger.info("Done in %.0fs: %s", time.time() - start, json.dumps(
        {k: v for k, v in metrics.items() if k.startswith(("eval_", "teacher_")) or k.startswith("sage")}))
    return metrics


if __name__ == "__main__":
    main()
    end_distributed()
