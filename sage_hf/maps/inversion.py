"""Fast batched inverse of a fitted UMAP map (SAGE round, step 5 "Invert").

umap-learn's ``inverse_transform`` runs at 5 to 14 points/s on 2 cores, rests on a Delaunay triangulation
(it does not finish in 8-D for a few thousand points, and points outside the hull silently fall into the last
simplex), and on held-out SST-2 vectors its SGD refinement makes the result *less* faithful than its own
initialisation. Its initialisation is the useful part: the average of the original vectors of the nearest
fitted points in the reduced space, weighted by UMAP's low-dimensional affinity ``1 / (1 + a d^(2b))``.
We compute that directly with a k-nearest-neighbour search (no triangulation, any ``n_components``) and one
sparse matrix product. A refinement on umap-learn's objective lowered fidelity in every measured setting;
``benchmarks/bench_inversion.py`` keeps it to show that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastInverseSettings:
    """Knobs of the fast inverse. None of them changes the fitted map, so none is part of a reducer's cache key.

    ``n_neighbors=None`` uses umap-learn's own neighbourhood size, ``min(vector width, fitted points)``: on
    held-out SST-2 vectors fidelity rises with k up to a few hundred and is flat from there to ~1,000.
    """

    n_neighbors: int | None = field(
        default=None, metadata={"help": "Fitted points averaged per query (None: min(width, fitted points))."}
    )

    def __post_init__(self) -> None:
        if self.n_neighbors is not None and self.n_neighbors < 1:
            raise ValueError(
                f"inverse n_neighbors must be >= 1 (or None for min(width, n_fitted)), got {self.n_neighbors}"
            )


@dataclass(frozen=True)
class Fidelity:
    """How well an inversion recovers the true vectors: mean row cosine and element-wise MSE (the paper's pair)."""

    cosine: float
    mse: float

    def __str__(self) -> str:
        return f"cosine {self.cosine:.4f}, mse {self.mse:.5f}"


def inversion_fidelity(true: np.ndarray, inverted: np.ndarray) -> Fidelity:
    """Score inversions against the vectors they should reproduce (the paper's cosine / MSE reading)."""
    true = np.asarray(true, dtype=np.float64)
    inverted = np.asarray(inverted, dtype=np.float64)
    if true.shape != inverted.shape or true.ndim != 2:
        raise ValueError(f"expected two arrays of the same (n, width) shape, got {true.shape} and {inverted.shape}")
    norms = np.linalg.norm(true, axis=1) * np.linalg.norm(inverted, axis=1)
    cosine = (true * inverted).sum(axis=1) / np.maximum(norms, 1e-12)
    return Fidelity(cosine=float(cosine.mean()), mse=float(((true - inverted) ** 2).mean()))


def _as_2d_float32(x: np.ndarray, name: str, width: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, width), got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{name} has width {arr.shape[1]}, expected {width}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


class FastUMAPInverse:
    """Maps reduced-space points back to the original vector space without a triangulation.

    Deterministic: a neighbour average has no randomness. ``index`` is a fitted Euclidean ``NearestNeighbors``
    over ``embedding`` to share (the reducer's own); without one, the inverse fits its own.
    """

    def __init__(
        self,
        embedding: np.ndarray,
        data: np.ndarray,
        *,
        a: float,
        b: float,
        settings: FastInverseSettings | None = None,
        index: NearestNeighbors | None = None,
    ) -> None:
        self.embedding = _as_2d_float32(embedding, "embedding")
        self.data = _as_2d_float32(data, "data")
        if self.embedding.shape[0] != self.data.shape[0]:
            raise ValueError(
                f"embedding has {self.embedding.shape[0]} rows but data has {self.data.shape[0]}; they must pair up"
            )
        self.settings = settings or FastInverseSettings()
        self.a, self.b = float(a), float(b)
        n_fitted, width = self.data.shape
        k = self.settings.n_neighbors if self.settings.n_neighbors is not None else min(width, n_fitted)
        if k > n_fitted:
            raise ValueError(f"inverse n_neighbors={k} is larger than the number of fitted points ({n_fitted})")
        self.k = k
        if index is not None and getattr(index, "n_samples_fit_", None) != n_fitted:
            raise ValueError("index must be a NearestNeighbors fitted on embedding (or None to fit one here)")
        self._index = index if index is not None else NearestNeighbors().fit(self.embedding)
        logger.debug("fast inverse on %d fitted points: k=%d", n_fitted, k)

    def affinities(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k nearest fitted points of each query in the reduced space and UMAP's low-dim affinity to each."""
        Y = _as_2d_float32(Y, "Y", self.embedding.shape[1])
        dist, idx = self._index.kneighbors(Y, n_neighbors=self.k)
        weights = 1.0 / (1.0 + self.a * np.power(dist, 2.0 * self.b))
        return idx, weights.astype(np.float32)

    def initialise(self, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Affinity-weighted average of the neighbours' original vectors: one sparse product, no (m, k, D) block."""
        m, k = idx.shape
        norm = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        mat = scipy.sparse.csr_matrix(
            (norm.ravel(), idx.ravel(), np.arange(0, m * k + 1, k)), shape=(m, self.data.shape[0])
        )
        return np.asarray(mat @ self.data, dtype=np.float32)

    def __call__(self, Y: np.ndarray) -> np.ndarray:
        """Invert reduced-space points ``Y`` (m, n_components) to vectors (m, width)."""
        Y = _as_2d_float32(Y, "Y", self.embedding.shape[1])
        if len(Y) == 0:
            return np.zeros((0, self.data.shape[1]), dtype=np.float32)
        return self.initialise(*self.affinities(Y))
