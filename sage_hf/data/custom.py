"""run_glue-style custom files (CSV, TSV, JSON, JSONL) in the same layout as ``load_glue`` gives.

Text columns, then ``label`` and ``idx``: the tokenizer, teacher cache and metrics downstream need
not know where the data came from.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Value

from .glue import PathLike

logger = logging.getLogger(__name__)

__all__ = ["infer_text_columns", "load_custom"]


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
        found = ", ".join(ds.column_names)
        for col in text_columns:
            if col not in ds.column_names:
                raise ValueError(f"{files[split]} has no text column {col!r}; columns found: {found}.")
        if label_column not in ds.column_names and split != "test":
            raise ValueError(f"{files[split]} has no label column {label_column!r}; columns found: {found}.")

    labeled = [ds for ds in raw.values() if label_column in ds.column_names]
    label_feature = _custom_label_feature(labeled, label_column)
    out = {}
    for split, ds in raw.items():
        has_idx = "idx" in ds.column_names and "idx" not in text_columns
        labelled = label_column in ds.column_names
        keep = [*text_columns, *([label_column] if labelled else []), *(["idx"] if has_idx else [])]
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
