"""Offline GLUE metrics.

``evaluate.load("glue", task)`` fetches its script from the Hugging Face Hub, so it fails
on machines without Hub access. These functions reproduce its definitions (and its key
names) with numpy/scipy so evaluation works everywhere and gives the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .glue import get_task

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_KEYS",
    "accuracy",
    "add_combined_score",
    "f1_positive",
    "glue_compute_metrics",
    "make_compute_metrics",
    "matthews_corrcoef",
    "pearson_corrcoef",
    "spearman_corrcoef",
]

# Keys returned per task, as evaluate's glue metric names them. The mnli_* entries exist
# because the recipe scores matched and mismatched validation separately.
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
}
# run_glue's spellings of MNLI's two validation sets; other tasks are named as `get_task` accepts them.
_MNLI_SPLITS = {
    "mnli-m": "mnli_matched",
    "mnli-mm": "mnli_mismatched",
    "mnli-matched": "mnli_matched",
    "mnli-mismatched": "mnli_mismatched",
}


def _metric_task(task: str) -> str:
    key = task.strip().lower()
    key = _MNLI_SPLITS.get(key, key)
    if key in METRIC_KEYS:
        return key
    try:
        return get_task(key).name
    except ValueError:
        raise ValueError(f"Unknown GLUE metric task {task!r}; valid tasks: {', '.join(METRIC_KEYS)}.") from None


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sequence of labels/scores, got shape {arr.shape}; "
            "for raw logits use make_compute_metrics(task), which takes the argmax."
        )
    return arr


def accuracy(predictions: Any, references: Any) -> float:
    """Fraction of exact matches (GLUE's accuracy)."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    return float((preds == refs).mean())


def f1_positive(predictions: Any, references: Any, positive: int = 1) -> float:
    """Binary F1 of the positive class, as GLUE reports for MRPC/QQP.

    Returns 0.0 when there are no positives in either vector (scikit-learn's default).
    """
    preds, refs = np.asarray(predictions) == positive, np.asarray(references) == positive
    tp = float(np.sum(preds & refs))
    fp = float(np.sum(preds & ~refs))
    fn = float(np.sum(~preds & refs))
    denom = 2.0 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(predictions: Any, references: Any) -> float:
    """Multiclass Matthews correlation (scikit-learn's formula).

    A constant prediction (or constant reference) gives 0.0 rather than NaN, so early
    checkpoints that predict a single class score 0 instead of poisoning model selection.
    """
    preds, refs = np.asarray(predictions), np.asarray(references)
    classes, encoded = np.unique(np.concatenate([refs, preds]), return_inverse=True)
    y_true, y_pred = encoded[: len(refs)], encoded[len(refs) :]
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (y_true, y_pred), 1.0)
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    n_correct = np.trace(confusion)
    n = confusion.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson_corrcoef(predictions: Any, references: Any) -> float:
    """Pearson r; 0.0 (with a warning) when either side is constant, where scipy gives NaN."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    xm, ym = x - x.mean(), y - y.mean()
    sx, sy = np.linalg.norm(xm), np.linalg.norm(ym)
    if sx == 0 or sy == 0:
        logger.warning("Correlation is undefined for constant input; reporting 0.0.")
        return 0.0
    r = float(np.dot(xm / sx, ym / sy))
    return max(-1.0, min(1.0, r))


def spearman_corrcoef(predictions: Any, references: Any) -> float:
    """Spearman rho: Pearson r of average ranks (ties shared), as scipy computes it."""
    return pearson_corrcoef(rankdata(np.asarray(predictions)), rankdata(np.asarray(references)))


def glue_compute_metrics(task: str, predictions: Any, references: Any) -> dict[str, float]:
    """GLUE scores with the same keys as ``evaluate.load("glue", task).compute(...)``.

    ``predictions`` are class ids (or scores for stsb), not logits.
    """
    key = _metric_task(task)
    preds = _as_1d(predictions, "predictions")
    refs = _as_1d(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"predictions and references differ in length: {len(preds)} vs {len(refs)}.")
    if len(preds) == 0:
        raise ValueError("Cannot compute GLUE metrics on zero examples.")
    if key == "cola":
        return {"matthews_correlation": matthews_corrcoef(preds, refs)}
    if key == "stsb":
        return {"pearson": pearson_corrcoef(preds, refs), "spearmanr": spearman_corrcoef(preds, refs)}
    if key in ("mrpc", "qqp"):
        return {"accuracy": accuracy(preds, refs), "f1": f1_positive(preds, refs)}
    return {"accuracy": accuracy(preds, refs)}


def add_combined_score(metrics: Mapping[str, float]) -> dict[str, float]:
    """Add run_glue's ``combined_score`` (the mean) when a task reports several numbers."""
    out = dict(metrics)
    if len(out) > 1:
        out["combined_score"] = float(np.mean(list(out.values())))
    return out


def make_compute_metrics(task: str) -> Callable[[Any], dict[str, float]]:
    """A Trainer ``compute_metrics`` for ``task``, mirroring run_glue's.

    Takes an ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair): argmax over logits
    for classification, flatten for stsb, then GLUE metrics plus ``combined_score``.
    """
    key = _metric_task(task)
    is_regression = get_task(key.split("_")[0]).is_regression

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            logits, labels = eval_pred.predictions, eval_pred.label_ids
        else:
            logits, labels = eval_pred
        # Models that return extra outputs (hidden states, ...) give a tuple; logits come first.
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = np.asarray(logits)
        preds = logits.reshape(-1) if is_regression else np.argmax(logits, axis=-1)
        return add_combined_score(glue_compute_metrics(key, preds, np.asarray(labels).reshape(-1)))

    compute_metrics.__name__ = f"compute_metrics_{key}"
    return compute_metrics
