"""The "sample" step of a SAGE round: new points in the reduced space near each anchor.

Every sampled point is built as explicit convex weights over the anchor and its k nearest neighbours,
so it lies inside the data's convex hull by construction. That matters because umap-learn's
``inverse_transform`` silently misbehaves outside the hull, and checking hull membership with a
triangulation is hopeless beyond a few dimensions (a Delaunay in 8-D never finishes on 2,000 points).
The weights are returned so the "invert" step can also apply them in the original vector space.
Neighbours come from the fitted map's own index, so they follow its metric (cosine for ``--reducer none
--reducer_metric cosine``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from ..maps.reducers import Reducer
from .anchors import as_rng

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampledPoints:
    """New points plus how each was built.

    ``points[i] == weights[i] @ coords[support_idx[i]]`` (up to float round-off), with ``weights[i]``
    non-negative and summing to 1. ``support_idx[i, 0]`` is the anchor and ``support_idx[i, 1:]`` its k
    neighbours, nearest first; ``neighbour_idx[i]`` is the neighbour the point was interpolated toward.
    """

    points: np.ndarray  # (m, d) float64
    anchor_idx: np.ndarray  # (m,) int64
    neighbour_idx: np.ndarray  # (m,) int64
    t: np.ndarray  # (m,) interpolation position: 0 = anchor, 1 = neighbour (before jitter)
    support_idx: np.ndarray  # (m, k + 1) int64
    weights: np.ndarray  # (m, k + 1) float64, convex

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _check_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2:
        raise ValueError(f"coords must be 2-D (n examples, d dims), got shape {coords.shape}")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(f"coords contain NaN/inf at example indices {np.flatnonzero(bad)[:5].tolist()}")
    return coords


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k > n - 1:
        raise ValueError(f"k={k} neighbours needs at least k+1 examples, but coords has n={n}; use k <= {n - 1}")


def _knn(space: Reducer | np.ndarray, coords: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """k nearest neighbours of each anchor, itself excluded even when exact duplicates exist."""
    if isinstance(space, Reducer):
        found = space.neighbors(coords[anchors], k + 1)
    else:  # plain coordinates: a one-off Euclidean search
        found = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords[anchors], return_distance=False)
    is_self = found == anchors[:, None]
    # With more than k+1 duplicates of a point, the anchor itself may not come back; drop the farthest.
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # A row could list the anchor only once, so exactly one entry per row is dropped.
    first_self = np.argmax(is_self, axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(anchors.size), first_self] = False
    return found[keep].reshape(anchors.size, k)


def sample_near_anchors(
    space: Reducer | np.ndarray,
    anchor_idx: np.ndarray,
    k: int = 10,
    jitter: float = 0.1,
    rng: np.random.Generator | int | None = None,
    *,
    t_beta: tuple[float, float] = (1.0, 2.0),
) -> SampledPoints:
    """Draw one new point per anchor between the anchor and one of its k nearest neighbours.

    For anchor ``a`` with neighbours ``x_1..x_k``: pick ``b`` uniformly among them, draw
    ``t ~ Beta(*t_beta)`` and take ``p = (1 - t) a + t b``. The default Beta(1, 2) biases points toward
    the anchor (mean t = 1/3) so they stay in the hard region that made ``a`` an anchor; pass (1, 1) for
    uniform t. Jitter then moves a fraction ``jitter`` of the weight to a flat-Dirichlet mix ``q`` of
    ``{a, x_1..x_k}``: ``p' = (1 - jitter) p + jitter q``. The displacement ``jitter * (q - p)`` is thus
    scaled to the local neighbour distance, and ``p'`` stays a convex combination of the neighbourhood
    (hence inside the data's hull). The price is a slight pull toward the neighbourhood's interior.

    ``space`` is the fitted map (points are built from its ``embedding_``, neighbours come from its index
    and metric) or plain coordinates (n, d), searched with a one-off Euclidean index. Repeated anchors each
    get their own draw.
    """
    if isinstance(space, Reducer):
        if not space.is_fitted:
            raise ValueError(f"the {space.name} map is not fitted; fit it first (or pass coordinates)")
        coords = space.embedding_  # validated (finite, 2-D) when the map was fitted
    else:
        coords = _check_coords(space)
    n, d = coords.shape
    _check_k(k, n)
    if not (0.0 <= jitter <= 1.0):
        raise ValueError(f"jitter must be in [0, 1] (the weight moved off the anchor-neighbour segment), got {jitter}")
    a, b = (float(x) for x in t_beta)
    if not (a > 0 and b > 0):
        raise ValueError(f"t_beta parameters must both be > 0, got {t_beta}")
    anchor_idx = np.asarray(anchor_idx)
    if anchor_idx.ndim != 1:
        raise ValueError(f"anchor_idx must be 1-D, got shape {anchor_idx.shape}")
    if anchor_idx.size and not np.issubdtype(anchor_idx.dtype, np.integer):
        raise TypeError(f"anchor_idx must hold integers, got dtype {anchor_idx.dtype}")
    anchor_idx = anchor_idx.astype(np.int64)
    out_of_range = (anchor_idx < 0) | (anchor_idx >= n)
    if out_of_range.any():
        raise ValueError(
            f"anchor_idx out of range [0, {n}): {anchor_idx[out_of_range][:5].tolist()}"
        )
    m = anchor_idx.size
    if m == 0:
        return SampledPoints(
            np.empty((0, d)), anchor_idx, np.empty(0, np.int64), np.empty(0),
            np.empty((0, k + 1), np.int64), np.empty((0, k + 1)),
        )

    rng = as_rng(rng)
    # Query each distinct anchor once: "top" repeats every anchor count/pool times.
    unique, inverse = np.unique(anchor_idx, return_inverse=True)
    knn = _knn(space, coords, unique, k)[inverse]  # (m, k)
    support = np.concatenate([anchor_idx[:, None], knn], axis=1)  # (m, k + 1)

    pick = rng.integers(0, k, size=m)
    t = rng.beta(a, b, size=m)
    mix = rng.dirichlet(np.ones(k + 1), size=m)

    rows = np.arange(m)
    weights = jitter * mix
    weights[:, 0] += (1.0 - jitter) * (1.0 - t)
    weights[rows, 1 + pick] += (1.0 - jitter) * t
    points = np.empty((m, d))
    # Chunked so the (rows, k+1, d) gather stays small in the full 384-D "none" space.
    step = max(1, (1 << 22) // ((k + 1) * d))
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        points[lo:hi] = np.einsum("mj,mjd->md", weights[lo:hi], coords[support[lo:hi]])

    logger.debug("sampled %d points near %d distinct anchors (k=%d, jitter=%g, d=%d)", m, unique.size, k, jitter, d)
    return SampledPoints(points, anchor_idx, knn[rows, pick], t, support, weights)
