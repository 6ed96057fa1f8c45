"""GLUE tasks, in the Hub's ``nyu-mll/glue`` layout.

Everything downstream (tokenisation, teacher caching, metrics) is written against the
Hub's column names and label order, so local copies of GLUE (as the GLUE download script
lays them out) are converted to that same layout (custom files too, see ``custom.py``).
This keeps label ids compatible with teachers fine-tuned on the Hub version of each task.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

logger = logging.getLogger(__name__)

__all__ = ["GLUE_TASKS", "GlueTask", "get_task", "load_glue"]

PathLike = Union[str, "os.PathLike[str]"]

_STANDARD_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI_SPLIT_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task looks on the Hub and in GLUE's own TSV distribution."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    file_text_columns: tuple[str, ...]
    file_label_column: str
    label_names: tuple[str, ...]
    main_metric: str
    split_files: Mapping[str, str] = field(default_factory=lambda: dict(_STANDARD_SPLIT_FILES))
    # CoLA's train/dev files have no header; these name their columns.
    headerless_columns: tuple[str, ...] | None = None

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def validation_splits(self) -> tuple[str, ...]:
        """Splits the recipe evaluates (MNLI has two)."""
        return tuple(s for s in self.split_files if s.startswith("validation"))

    def metric_task(self, split: str) -> str:
        """The ``glue_compute_metrics`` task for ``split`` (mnli_matched / mnli_mismatched)."""
        if self.name == "mnli" and split.endswith(("_matched", "_mismatched")):
            return "mnli_" + split.rsplit("_", 1)[1]
        return self.name

    def features(self) -> Features:
        label = Value("float32") if self.is_regression else ClassLabel(names=list(self.label_names))
        cols: dict[str, Any] = {c: Value("string") for c in self.text_columns}
        cols["label"] = label
        cols["idx"] = Value("int32")
        return Features(cols)


def _task(
    name: str,
    folder: str,
    text_columns: tuple[str, ...],
    label_names: tuple[str, ...],
    main_metric: str,
    file_text_columns: tuple[str, ...] | None = None,
    file_label_column: str = "label",
    **extra: Any,
) -> GlueTask:
    """A registry entry; GLUE's files use the Hub's column names unless told otherwise."""
    return GlueTask(
        name=name,
        folder=folder,
        text_columns=text_columns,
        file_text_columns=file_text_columns or text_columns,
        file_label_column=file_label_column,
        label_names=label_names,
        main_metric=main_metric,
        **extra,
    )


_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), "matthews_correlation",
              headerless_columns=("source", "label", "original_label", "sentence")),
        _task("sst2", "SST-2", ("sentence",), ("negative", "positive"), "accuracy"),
        _task("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"), "combined_score",
              file_text_columns=("#1 String", "#2 String"), file_label_column="Quality"),
        _task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), "combined_score",
              file_label_column="is_duplicate"),
        _task("stsb", "STS-B", _PAIR, (), "combined_score", file_label_column="score"),
        _task("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "accuracy",
              file_text_columns=_PAIR, file_label_column="gold_label", split_files=dict(_MNLI_SPLIT_FILES)),
        _task("qnli", "QNLI", ("question", "sentence"), _NLI, "accuracy"),
        _task("rte", "RTE", _PAIR, _NLI, "accuracy"),
    )
}

# GLUE's folder names (SST-2, STS-B, CoLA, ...) are accepted as task names too.
_TASK_ALIASES = {t.folder.lower(): t.name for t in GLUE_TASKS.values()}


def get_task(task: str) -> GlueTask:
    """Look a task up by Hub config name (``sst2``) or GLUE folder name (``SST-2``)."""
    key = task.strip().lower()
    key = _TASK_ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; valid tasks: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


# --------------------------------------------------------------------------- local GLUE


def _hint(hub_name: str) -> str:
    return (f"point --glue_dir (or GLUE_DIR) at a folder laid out as GLUE distributes it, or leave both unset to "
            f"load {hub_name!r} from the Hub")


def _task_folder(glue_dir: Path, spec: GlueTask, hub_name: str) -> Path:
    """Find ``<glue_dir>/<Folder>``; also accept a differently cased folder or the task folder itself."""
    direct = glue_dir / spec.folder
    if direct.is_dir():
        return direct
    if glue_dir.is_dir():
        for child in glue_dir.iterdir():
            if child.is_dir() and child.name.lower() in (spec.folder.lower(), spec.name):
                return child
        if glue_dir.name.lower() in (spec.folder.lower(), spec.name):
            return glue_dir
    raise FileNotFoundError(f"GLUE task {spec.name!r} not found: {direct} is missing; {_hint(hub_name)}.")


def _rows(path: Path) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yield (line number, fields or None, csv error) so one bad line cannot abort a load."""
    with open(path, encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield reader.line_num, None, str(err)
                continue
            yield reader.line_num, row, ""


def _parse_label(raw: str, spec: GlueTask) -> float | int | None:
    value = raw.strip()
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            return None
        return score if math.isfinite(score) else None
    if value in spec.label_names:
        return spec.label_names.index(value)
    try:
        label = int(value)
    except ValueError:
        return None
    return label if 0 <= label < spec.num_labels else None


def _read_glue_tsv(path: Path, spec: GlueTask, split: str) -> Dataset:
    """Parse one GLUE TSV the way GLUE's processors do: no quoting, BOM-tolerant, bad rows skipped."""
    rows = _rows(path)
    first = next(rows, None)
    columns: dict[str, list[Any]] = {c: [] for c in (*spec.text_columns, "label", "idx")}
    if first is None:
        logger.warning("%s is empty.", path)
        return Dataset.from_dict(columns, features=spec.features())
    pending: list[tuple[int, list[str] | None, str]] = []
    first_fields = first[1] or []
    if spec.headerless_columns and not set(spec.file_text_columns) <= {c.strip() for c in first_fields}:
        header = list(spec.headerless_columns)
        pending.append(first)  # no header: the first line is data
    else:
        header = [c.strip() for c in first_fields]
    missing = [c for c in spec.file_text_columns if c not in header]
    if missing:
        raise ValueError(
            f"{path} has no column {missing[0]!r} expected for GLUE {spec.name}; columns found: {', '.join(header)}."
        )
    text_pos = [header.index(c) for c in spec.file_text_columns]
    labeled = spec.file_label_column in header
    if not labeled and not split.startswith("test"):
        raise ValueError(
            f"{path} has no label column {spec.file_label_column!r}; columns found: {', '.join(header)}."
        )
    label_pos = header.index(spec.file_label_column) if labeled else -1
    unlabeled = -1.0 if spec.is_regression else -1

    skipped = 0
    first_problem = ""

    def chain() -> Iterator[tuple[int, list[str] | None, str]]:
        yield from pending
        yield from rows

    for n, (line, fields, error) in enumerate(chain()):
        if fields == []:  # blank line, e.g. trailing newlines: not data, not worth a warning
            continue
        problem = error
        if not problem and fields is not None and len(fields) != len(header):
            problem = f"{len(fields)} fields, header has {len(header)}"
        label: Any = unlabeled
        if not problem and fields is not None and labeled:
            label = _parse_label(fields[label_pos], spec)
            if label is None:
                problem = f"bad label {fields[label_pos]!r}"
        if problem or fields is None:
            skipped += 1
            first_problem = first_problem or f"line {line}: {problem}"
            continue
        for col, pos in zip(spec.text_columns, text_pos):
            columns[col].append(fields[pos])
        columns["label"].append(label)
        columns["idx"].append(n)
    if skipped:
        logger.warning("Skipped %d malformed rows in %s (first at %s).", skipped, path, first_problem)
    return Dataset.from_dict(columns, features=spec.features())


def _requested_splits(spec: GlueTask, splits: str | Sequence[str] | None) -> list[str] | None:
    if splits is None:
        return None
    wanted = [splits] if isinstance(splits, str) else list(splits)
    for split in wanted:
        if split not in spec.split_files:
            valid = ", ".join(spec.split_files)
            raise ValueError(f"Unknown split {split!r} for GLUE {spec.name}; valid splits: {valid}.")
    return wanted


def _load_from_hub(spec: GlueTask, hub_name: str, splits: list[str] | None) -> DatasetDict:
    try:
        loaded = datasets.load_dataset(hub_name, spec.name)
    except Exception as err:  # network, auth, missing repo: all need the same advice
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"Could not load {hub_name!r} ({spec.name}) from the Hub ({reason}); "
            "set --glue_dir or GLUE_DIR to a local GLUE folder to work offline."
        ) from err
    if splits is None:
        return loaded
    absent = [s for s in splits if s not in loaded]
    if absent:
        raise ValueError(f"{hub_name!r} ({spec.name}) has no split {absent[0]!r}; splits found: {', '.join(loaded)}.")
    return DatasetDict({s: loaded[s] for s in splits})


def load_glue(
    task: str,
    glue_dir: PathLike | None = None,
    hub_name: str = "nyu-mll/glue",
    splits: str | Sequence[str] | None = None,
) -> DatasetDict:
    """Load a GLUE task with the Hub's columns, label ids and split names.

    Reads ``<glue_dir>/<Folder>/*.tsv`` (``glue_dir`` defaults to ``$GLUE_DIR``) so that
    offline machines work; with neither set, loads ``hub_name`` from the Hub. ``splits=None``
    loads every split present locally; naming a split that is missing is an error. ``idx``
    is each row's position in its file, so skipped malformed rows leave gaps.
    """
    spec = get_task(task)
    wanted = _requested_splits(spec, splits)
    if glue_dir is None or str(glue_dir) == "":
        glue_dir = os.environ.get("GLUE_DIR") or None
    if glue_dir is None:
        return _load_from_hub(spec, hub_name, wanted)

    folder = _task_folder(Path(glue_dir).expanduser(), spec, hub_name)
    if wanted is None:
        wanted = [s for s, name in spec.split_files.items() if (folder / name).is_file()]
        if not wanted:
            expected = folder / spec.split_files["train"]
            raise FileNotFoundError(
                f"GLUE task {spec.name!r} has no data files: {expected} is missing; {_hint(hub_name)}.")
        absent = [s for s in spec.split_files if s not in wanted and not s.startswith("test")]
        if absent:
            logger.info("GLUE %s: no local %s split in %s.", spec.name, ", ".join(absent), folder)
    result = {}
    for split in wanted:
        path = folder / spec.split_files[split]
        if not path.is_file():
            raise FileNotFoundError(
                f"GLUE {spec.name} split {split!r} not found: {path} is missing; {_hint(hub_name)}.")
        result[split] = _read_glue_tsv(path, spec, split)
        logger.info("Loaded GLUE %s %s: %d rows from %s.", spec.name, split, len(result[split]), path)
    return DatasetDict(result)
