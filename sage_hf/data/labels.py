"""Label checks before any model sees the data: a bad label fails here, naming its row."""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict

__all__ = ["validate_labels"]


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
