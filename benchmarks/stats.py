"""Statistics of the protocol suite: means over seeds, paired differences to plain KD and their 95% intervals.

Pure numpy/scipy, so a results file can be re-analysed anywhere (``python benchmarks/run.py --table_only``).
Two intervals for a system's paired difference to KD (same seed, same teacher):

* t over seeds: the per-seed differences d_s, mean +- t(0.975, n-1) * sd(d) / sqrt(n); it sees seed-to-seed
  variation only, and needs two seeds or more.
* paired bootstrap over dev examples pooled across seeds: every replicate redraws the dev examples (one draw per
  task, shared by every seed and by both systems, so the pairing is kept), recomputes each seed's metric for both
  systems and averages the differences over seeds. It sees which examples happen to be in dev; with a fixed seed.

Per-example dev predictions travel compactly in the cell JSON: class ids as one string of digits, regression
scores as a list of floats rounded to 4 decimals (:func:`encode_predictions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
REGRESSION_TASKS = ("stsb",)


# ---- compact per-example predictions -------------------------------------------------------------------------------

def encode_predictions(values) -> str | list[float]:
    """Class ids (ints 0-9) as a digit string; anything float as a list rounded to 4 decimals."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 9):
            raise ValueError(f"class ids must be in 0..9 to encode as digits, got {arr.min()}..{arr.max()}")
        return "".join(map(str, arr.tolist()))
    return [round(float(v), 4) for v in arr]


def decode_predictions(encoded) -> np.ndarray:
    if isinstance(encoded, str):
        return np.frombuffer(encoded.encode(), dtype=np.uint8).astype(np.int64) - ord("0")
    return np.asarray(encoded, dtype=np.float64)


# ---- task metrics, as GLUE defines them ----------------------------------------------------------------------------

def _mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom > 0 else 0.0


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (gold == 1)))
    denom = float(np.sum(pred == 1) + np.sum(gold == 1))
    return 2 * tp / denom if denom > 0 else 0.0


def _corr(a: np.ndarray, b: np.ndarray, rank: bool = False) -> float:
    if rank:
        a, b = stats.rankdata(a), stats.rankdata(b)
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def task_metric(task: str, predictions, labels) -> float:
    """The task's main GLUE dev metric (in 0..1) from per-example predictions (class ids or scores)."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if task == "cola":
        return _mcc(pred, gold)
    if task in ("mrpc", "qqp"):  # combined_score: mean of accuracy and F1
        return (float(np.mean(pred == gold)) + _f1(pred, gold)) / 2
    if task == "stsb":  # combined_score: mean of Pearson and Spearman
        return (_corr(pred, gold) + _corr(pred, gold, rank=True)) / 2
    return float(np.mean(pred == gold))


def teacher_agreement(task: str, student, teacher) -> float:
    """Share of dev examples where the student's class is the teacher's; for regression, Pearson r with it."""
    s, t = np.asarray(student), np.asarray(teacher)
    return _corr(s, t) if task in REGRESSION_TASKS else float(np.mean(s == t))


# ---- summaries and intervals ---------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std None under two values."""
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return None, None
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else None


def t_interval(differences: Sequence[float], level: float = LEVEL) -> tuple[float | None, float | None, float | None]:
    """Mean of paired differences and its t interval over seeds: (mean, low, high); bounds None under two."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return None, None, None
    if d.size < 2:
        return float(d.mean()), None, None
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def bootstrap_differences(task: str, labels, system: Sequence, baseline: Sequence, *,
                          samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Replicates of mean-over-seeds(metric(system_s) - metric(baseline_s)) on dev examples drawn with replacement.

    `system[i]` and `baseline[i]` are one seed's per-example predictions. Each replicate draws one index set,
    shared by every seed and both systems, so the differences stay paired by example and by seed.
    """
    if len(system) != len(baseline) or not system:
        raise ValueError(f"need the same number (>= 1) of seeds for both systems, got {len(system)} and "
                         f"{len(baseline)}")
    gold = np.asarray(labels)
    sys_preds = [np.asarray(p) for p in system]
    base_preds = [np.asarray(p) for p in baseline]
    rng = np.random.default_rng(seed)
    out = np.empty(samples)
    for b in range(samples):
        idx = rng.integers(0, len(gold), len(gold))
        out[b] = np.mean([task_metric(task, s[idx], gold[idx]) - task_metric(task, k[idx], gold[idx])
                          for s, k in zip(sys_preds, base_preds)])
    return out


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def excludes_zero(low: float | None, high: float | None) -> str:
    """'above' / 'below' when the interval excludes zero, 'no' when it holds it, 'n/a' without an interval."""
    if low is None or high is None:
        return "n/a"
    return "above" if low > 0 else "below" if high < 0 else "no"
