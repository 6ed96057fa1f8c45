"""GLUE and custom text-classification data, in the Hub's ``nyu-mll/glue`` layout.

Everything downstream (tokenisation, teacher caching, metrics) is written against the
Hub's column names and label order, so local copies of GLUE (as the GLUE download script
lays them out) and custom CSV/JSON files are converted to that same layout. This keeps
label ids compatible with teachers fine-tuned on the Hub version of each task.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from sage_hf.data.metrics import METRIC_KEYS

logger = logging.getLogger(__name__)

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "get_task",
    "infer_text_columns",
    "load_custom",
    "load_glue",
    "validate_labels",
]

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
    def metric_keys(self) -> tuple[str, ...]:
        return METRIC_KEYS[self.name]

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


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            name="cola",
            folder="CoLA",
            text_columns=("sentence",),
            file_text_columns=("sentence",),
            file_label_column="label",
            label_names=("unacceptable", "acceptable"),
            main_metric="matthews_correlation",
            headerless_columns=("source", "label", "original_label", "sentence"),
        ),
        GlueTask(
            name="sst2",
            folder="SST-2",
            text_columns=("sentence",),
            file_text_columns=("sentence",),
            file_label_column="label",
            label_names=("negative", "positive"),
            main_metric="accuracy",
        ),
        GlueTask(
            name="mrpc",
            folder="MRPC",
            text_columns=("sentence1", "sentence2"),
            file_text_columns=("#1 String", "#2 String"),
            file_label_column="Quality",
            label_names=("not_equivalent", "equivalent"),
            main_metric="combined_score",
        ),
        GlueTask(
            name="qqp",
            folder="QQP",
            text_columns=("question1", "question2"),
            file_text_columns=("question1", "question2"),
            file_label_column="is_duplicate",
            label_names=("not_duplicate", "duplicate"),
            main_metric="combined_score",
        ),
        GlueTask(
            name="stsb",
            folder="STS-B",
            text_columns=("sentence1", "sentence2"),
            file_text_columns=("sentence1", "sentence2"),
            file_label_column="score",
            label_names=(),
            main_metric="combined_score",
        ),
        GlueTask(
            name="mnli",
            folder="MNLI",
            text_columns=("premise", "hypothesis"),
            file_text_columns=("sentence1", "sentence2"),
            file_label_column="gold_label",
            label_names=("entailment", "neutral", "contradiction"),
            main_metric="accuracy",
            split_files=dict(_MNLI_SPLIT_FILES),
        ),
        GlueTask(
            name="qnli",
            folder="QNLI",
            text_columns=("question", "sentence"),
            file_text_columns=("question", "sentence"),
            file_label_column="label",
            label_names=("entailment", "not_entailment"),
            main_metric="accuracy",
        ),
        GlueTask(
            name="rte",
            folder="RTE",
            text_columns=("sentence1", "sentence2"),
            file_text_columns=("sentence1", "sentence2"),
            file_label_column="label",
            label_names=("entailment", "not_entailment"),
            main_metric="accuracy",
        ),
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


def infer_text_columns(column_names: Sequence[str], label_column: str = "label") -> tuple[str, ...]:
    """run_glue's rule: sentence1/sentence2 if present, else the first two other columns."""
    others = [c for c in column_names if c not in (label_column, "idx")]
    if "sentence1" in others and "sentence2" in others:
        return ("sentence1", "sentence2")
    if len(others) >= 2:
        return tuple(others[:2])
    if len(others) == 1:
        return (others[0],)
    raise ValueError(f"No text column found; columns found: {', '.join(column_names) or '(none)'}.")


# --------------------------------------------------------------------------- local GLUE


def _hint(hub_name: str) -> str:
    return f"point --glue_dir (or GLUE_DIR) at a folder laid out as GLUE distributes it, or leave both unset to load {hub_name!r} from the Hub"


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
            raise ValueError(f"Unknown split {split!r} for GLUE {spec.name}; valid splits: {', '.join(spec.split_files)}.")
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
            raise FileNotFoundError(f"GLUE task {spec.name!r} has no data files: {expected} is missing; {_hint(hub_name)}.")
        absent = [s for s in spec.split_files if s not in wanted and not s.startswith("test")]
        if absent:
            logger.info("GLUE %s: no local %s split in %s.", spec.name, ", ".join(absent), folder)
    result = {}
    for split in wanted:
        path = folder / spec.split_files[split]
        if not path.is_file():
            raise FileNotFoundError(f"GLUE {spec.name} split {split!r} not found: {path} is missing; {_hint(hub_name)}.")
        result[split] = _read_glue_tsv(path, spec, split)
        logger.info("Loaded GLUE %s %s: %d rows from %s.", spec.name, split, len(result[split]), path)
    return DatasetDict(result)


# --------------------------------------------------------------------------- custom files

_CUSTOM_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def _read_custom_file(path: Path, cache_dir: PathLike | None) -> Dataset:
    builder = _CUSTOM_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"Unsupported file type {path.name!r}; use one of: {', '.join(_CUSTOM_FORMATS)}.")
    kwargs: dict[str, Any] = {}
    if path.suffix.lower() == ".tsv":
        # Text fields may contain quote characters; GLUE-style TSVs are never quoted.
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)


def load_custom(
    train_file: PathLike | None = None,
    validation_file: PathLike | None = None,
    test_file: PathLike | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
    cache_dir: PathLike | None = None,
) -> DatasetDict:
    """Load run_glue-style ``--train_file``/``--validation_file``/``--test_file`` data.

    Accepts .csv, .tsv, .json and .jsonl. The result has the chosen text columns, then
    ``label`` and ``idx``, like ``load_glue``: string labels become a ``ClassLabel`` with
    sorted names (run_glue's order), integers stay integers, floats mean regression.
    ``text_columns=None`` follows run_glue (sentence1/sentence2, else the first two
    non-label columns). A test file may omit the label column (its labels become -1).
    ``cache_dir`` is passed to ``datasets.load_dataset`` (run_glue's ``--cache_dir``).
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: Path(p).expanduser() for split, p in files.items() if p is not None}
    if not files:
        raise ValueError("load_custom needs at least one of train_file, validation_file, test_file.")
    for split, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{split} file not found: {path}.")
    raw = {split: _read_custom_file(path, cache_dir) for split, path in files.items()}

    if text_columns is None:
        source = next(s for s in ("train", "validation", "test") if s in raw)
        text_columns = infer_text_columns(raw[source].column_names, label_column)
        logger.info("Using text columns %s from %s.", list(text_columns), files[source])
    text_columns = tuple(text_columns)
    if label_column in text_columns:
        raise ValueError(f"Column {label_column!r} cannot be both a text column and the label column.")

    for split, ds in raw.items():
        for col in text_columns:
            if col not in ds.column_names:
                raise ValueError(f"{files[split]} has no text column {col!r}; columns found: {', '.join(ds.column_names)}.")
        if label_column not in ds.column_names and split != "test":
            raise ValueError(f"{files[split]} has no label column {label_column!r}; columns found: {', '.join(ds.column_names)}.")

    labeled = [ds for ds in raw.values() if label_column in ds.column_names]
    label_feature = _custom_label_feature(labeled, label_column)
    out = {}
    for split, ds in raw.items():
        has_idx = "idx" in ds.column_names and "idx" not in text_columns
        keep = [*text_columns, *([label_column] if label_column in ds.column_names else []), *(["idx"] if has_idx else [])]
        ds = ds.select_columns(keep)
        if label_column in ds.column_names:
            if label_column != "label":
                ds = ds.rename_column(label_column, "label")
        else:
            fill = -1.0 if isinstance(label_feature, Value) and label_feature.dtype == "float32" else -1
            ds = ds.add_column("label", [fill] * len(ds))
        if ds.features["label"] != label_feature:
            ds = ds.cast_column("label", label_feature)
        if not has_idx:
            ds = ds.add_column("idx", list(range(len(ds))), feature=Value("int32"))
        for col in text_columns:
            if ds.features[col] != Value("string"):
                ds = ds.cast_column(col, Value("string"))
        out[split] = ds.select_columns([*text_columns, "label", "idx"])
    return DatasetDict(out)


def _custom_label_feature(labeled: list[Dataset], label_column: str) -> ClassLabel | Value:
    """Pick one label type for all splits so ids agree between train and validation."""
    if not labeled:
        return Value("int64")
    dtypes = {getattr(ds.features[label_column], "dtype", None) for ds in labeled}
    if any(isinstance(ds.features[label_column], ClassLabel) for ds in labeled):
        return labeled[0].features[label_column]
    if "string" in dtypes or "large_string" in dtypes:
        names: set[str] = set()
        for ds in labeled:  # integer splits (e.g. a test file of -1s) cast by id instead
            if getattr(ds.features[label_column], "dtype", None) in ("string", "large_string"):
                names.update(str(v) for v in ds.unique(label_column) if v is not None)
        return ClassLabel(names=sorted(names))
    if any(d is not None and d.startswith("float") for d in dtypes):
        return Value("float32")
    return Value("int64")


# --------------------------------------------------------------------------- validation


def validate_labels(
    dataset: Dataset | DatasetDict,
    num_labels: int,
    label_column: str = "label",
    allow_unlabeled: bool = False,
) -> None:
    """Fail early, naming the row, on labels the model head cannot take.

    Out-of-range ids otherwise surface as an opaque CUDA device-side assert mid-training.
    ``num_labels == 1`` means regression (labels must be finite numbers). -1 marks an
    unlabeled row; it is allowed when ``allow_unlabeled`` and always in ``test*`` splits.
    """
    if isinstance(dataset, DatasetDict):
        for split, ds in dataset.items():
            _validate_split(ds, num_labels, label_column, allow_unlabeled or split.startswith("test"), split)
        return
    _validate_split(dataset, num_labels, label_column, allow_unlabeled, None)


def _column_values(ds: Dataset, column: str) -> np.ndarray:
    # Through Arrow: iterating a datasets Column row by row is orders of magnitude slower.
    table = ds.select_columns([column]).with_format("arrow")[:]
    return table.column(column).to_numpy(zero_copy_only=False)


def _validate_split(ds: Dataset, num_labels: int, label_column: str, allow_unlabeled: bool, split: str | None) -> None:
    where = f" of split {split!r}" if split else ""
    if label_column not in ds.column_names:
        raise ValueError(f"No label column {label_column!r}{where}; columns found: {', '.join(ds.column_names)}.")
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
    values = _column_values(ds, label_column)

    if values.dtype.kind in "iuf":
        numeric = values.astype(np.float64)
        if num_labels == 1:
            bad = ~np.isfinite(numeric)
            reason = "is not a finite number (num_labels=1 means regression)"
        else:
            in_range = (numeric >= 0) & (numeric < num_labels)
            if allow_unlabeled:
                in_range |= numeric == -1
            bad = ~(in_range & (numeric == np.floor(numeric)))
            reason = f"is outside [0, {num_labels}) for num_labels={num_labels}"
    else:  # strings, booleans, objects with nulls: a model head takes none of these
        bad = np.ones(len(values), dtype=bool)
        reason = "is not a number (encode labels as integer ids)"
    bad_rows = np.flatnonzero(bad)
    if len(bad_rows):
        row = int(bad_rows[0])
        idx = f" (idx {ds[row]['idx']})" if "idx" in ds.column_names else ""
        more = f"; {len(bad_rows)} bad rows in all" if len(bad_rows) > 1 else ""
        value = values[row].item() if isinstance(values[row], np.generic) else values[row]
        raise ValueError(f"Label {value!r} at row {row}{idx}{where} {reason}{more}.")
