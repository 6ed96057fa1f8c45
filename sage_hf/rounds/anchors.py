"""The "select" step of a SAGE round: which real examples seed this round's synthetic data.

SAGE augments where the student is worst, so anchors come from the high-loss end of the real set
(method.md, section 3.3). The "random" policy keeps everything else equal (same pool size, same number of
synthetic points per anchor) and only drops the loss, so comparing it with "top" isolates loss-awareness
(section 4). "balanced" is "top" within each class the teacher predicts: the hardest examples of an imbalanced
task are mostly of one class (MRPC's are mostly non-paraphrases), and "top" would tilt every synthetic set that way.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

VALID_POLICIES: tuple[str, ...] = ("top", "weighted", "random", "balanced")

# How many offending indices an error message names before it just gives the count.
_MAX_NAMED = 5


@dataclass(frozen=True)
class AnchorSelection:
    """The anchors plus what a training log needs to explain them.

    ``indices`` index the real training set; an index repeats when more anchors are asked for than the
    pool holds (each repeat gets its own neighbour and interpolation in the "sample" step).
    """

    indices: np.ndarray
    policy: str
    pool_size: int
    mean_loss: float
    fell_back_to_uniform: bool

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A Generator from a Generator, a seed, or None (fresh entropy), as numpy's own functions accept."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _name_indices(mask: np.ndarray) -> str:
    bad = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in bad[:_MAX_NAMED])
    more = f", ... ({bad.size} in total)" if bad.size > _MAX_NAMED else ""
    return f"[{shown}{more}]"


def pool_size_for(n: int, fraction: float) -> int:
    """Size of the anchor pool; at least one example so a tiny set still gets augmented."""
    # The epsilon keeps 0.3 * 10 = 3.0000000000000004 from rounding up to 4.
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))


def apportion(total: int, counts: np.ndarray) -> np.ndarray:
    """`total` split in proportion to `counts` (largest remainders; the parts sum to `total`)."""
    counts = np.asarray(counts, dtype=np.float64)
    exact = total * counts / counts.sum()
    parts = np.floor(exact).astype(np.int64)
    parts[np.argsort(-(exact - parts), kind="stable")[:total - int(parts.sum())]] += 1
    return parts


def _cycle(pool: np.ndarray, count: int) -> np.ndarray:
    """Spread ``count`` anchors as evenly as possible over ``pool``, earlier entries first."""
    return pool[np.arange(count) % pool.size]


def select_anchors(
    losses: np.ndarray,
    count: int,
    policy: str = "top",
    fraction: float = 0.2,
    rng: np.random.Generator | int | None = None,
    *,
    sharpness: float = 1.0,
    classes: np.ndarray | None = None,
) -> AnchorSelection:
    """Choose ``count`` anchors (indices into the real set) from per-example losses.

    Policies:
      - ``"top"``: the top ``fraction`` of examples by loss form the pool; anchors cycle through it in
        descending loss order, so every pool member gets ``count // pool`` anchors and the hardest ones get
        the remainder. This is the paper's reading and does not consume ``rng`` (ties break by index).
      - ``"weighted"``: ``count`` independent draws with probability proportional to
        ``loss ** sharpness`` (``sharpness`` > 1 concentrates on the hardest examples). ``fraction`` is
        unused. Losses must be non-negative (tiny negative round-off from a KL is clipped to 0).
      - ``"random"``: a uniformly random pool of the same size as "top"'s, cycled the same way, so the
        only difference from "top" is that the loss is ignored. Every example is equally likely.
      - ``"balanced"``: ``"top"`` within each of ``classes`` (one label per example: the teacher's), each
        class taking a share of the pool and of ``count`` equal to its share of the examples. Without
        ``classes`` (regression) it is ``"top"``. Does not consume ``rng``.

    When all losses are equal there is no signal to follow: the anchors fall back to the "random" policy
    with a warning. ``rng`` may be a Generator, a seed, or None (fresh, non-reproducible entropy).
    """
    if policy not in VALID_POLICIES:
        raise ValueError(f"unknown anchor policy {policy!r}; valid policies: {', '.join(VALID_POLICIES)}")
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an integer, got {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not (sharpness > 0.0 and math.isfinite(sharpness)):
        raise ValueError(f"sharpness must be a finite number > 0, got {sharpness}")
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"losses must be 1-D (one loss per real example), got shape {losses.shape}")
    nan = np.isnan(losses)
    if nan.any():
        raise ValueError(f"losses contain NaN at example indices {_name_indices(nan)}")
    inf = np.isinf(losses)
    if inf.any():
        raise ValueError(f"losses contain inf at example indices {_name_indices(inf)}")
    n = losses.size
    count = int(count)
    if n == 0:
        if count > 0:
            raise ValueError(f"cannot select {count} anchors from an empty loss array")
        return AnchorSelection(np.empty(0, dtype=np.int64), policy, 0, float("nan"), False)

    rng = as_rng(rng)
    pool_size = pool_size_for(n, fraction)
    spread = float(losses.max() - losses.min())
    fell_back = policy != "random" and spread <= 1e-12 * float(np.abs(losses).max())
    if fell_back:
        warnings.warn(
            f"all {n} losses are equal ({losses[0]:.6g}); anchors fall back to uniform sampling "
            f"instead of policy {policy!r}",
            RuntimeWarning,
            stacklevel=2,
        )

    if policy == "random" or fell_back:
        if policy == "weighted":
            pool_size = n
        pool = rng.permutation(n)[:pool_size]
        indices = _cycle(pool, count)
    elif policy == "top" or (policy == "balanced" and classes is None):
        order = np.argsort(-losses, kind="stable")
        indices = _cycle(order[:pool_size], count)
    elif policy == "balanced":
        classes = np.asarray(classes)
        if classes.shape != losses.shape:
            raise ValueError(f"classes must hold one label per example ({n}), got shape {classes.shape}")
        values, sizes = np.unique(classes, return_counts=True)
        parts = []
        for value, pool_part, count_part in zip(values, apportion(pool_size, sizes), apportion(count, sizes)):
            members = np.flatnonzero(classes == value)
            order = members[np.argsort(-losses[members], kind="stable")]
            parts.append(_cycle(order[:max(1, pool_part)], int(count_part)))
        indices = np.concatenate(parts)
    else:  # weighted
        negative = losses < -1e-6 * max(1.0, float(np.abs(losses).max()))
        if negative.any():
            raise ValueError(
                f"policy 'weighted' needs non-negative losses; negative at example indices "
                f"{_name_indices(negative)}"
            )
        weights = np.clip(losses, 0.0, None)
        # Normalise by the max before the power so large sharpness cannot overflow.
        weights = (weights / weights.max()) ** sharpness
        indices = rng.choice(n, size=count, replace=True, p=weights / weights.sum())
        pool_size = int(np.count_nonzero(weights))

    indices = np.asarray(indices, dtype=np.int64)
    mean_loss = float(losses[indices].mean()) if count else float("nan")
    logger.debug(
        "anchors: policy=%s count=%d pool=%d mean loss %.4g (all examples %.4g)%s",
        policy, count, pool_size, mean_loss, float(losses.mean()),
        " [uniform fallback]" if fell_back else "",
    )
    return AnchorSelection(indices, policy, int(pool_size), mean_loss, bool(fell_back))
