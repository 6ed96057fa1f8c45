"""The "map" step of a SAGE round: reduce pooled layer-1 vectors, find neighbours there, and map back.

One interface, three reducers, so the ablations (method.md section 4) swap a setting, not code:
``umap`` (the paper), ``pca`` (linear, exact inverse on its span) and ``none`` (neighbours and interpolation
in the full vector space, identity inverse). Each fitted reducer owns the one neighbour index over its
coordinates (sampling and the fast inverse both query it), and can be written as plain arrays (``state``)
and rebuilt from them (``restore``), which is what the on-disk cache in :mod:`sage_hf.maps.cache` stores.
"""

from __future__ import annotations

import abc
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .inversion import FastInverseSettings, FastUMAPInverse, _as_2d_float32

if TYPE_CHECKING:  # pragma: no cover
    import umap

logger = logging.getLogger(__name__)

VALID_REDUCERS = ("umap", "pca", "none")
VALID_INVERSE_BACKENDS = ("fast", "umap-learn")
VALID_METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class ReducerSettings:
    """Everything that decides the fitted map (``name`` .. ``seed``) and how it is inverted (the rest).

    Only the fields that change the fitted map enter the cache key (see ``fit_fields``), so one cached UMAP
    serves both inverse backends and any ``inverse`` knobs. ``metric`` is UMAP's input metric and the
    neighbour metric of ``none``; neighbours in a reduced space are Euclidean (UMAP's output metric, and
    the one PCA preserves).
    """

    name: str = field(default="umap", metadata={"help": f"The reducer: {', '.join(VALID_REDUCERS)}."})
    n_components: int = field(default=2, metadata={"help": "Dimensions of the reduced map (unused by 'none')."})
    n_neighbors: int = field(default=100, metadata={"help": "UMAP's neighbourhood size."})
    metric: str = field(default="euclidean", metadata={"help": "UMAP's input metric; the neighbour metric of 'none'."})
    seed: int = field(default=0, metadata={"help": "Seed of the fit: the same seed and vectors give the same map."})
    inverse_backend: str = field(
        default="fast", metadata={"help": f"How UMAP points are mapped back: {', '.join(VALID_INVERSE_BACKENDS)}."}
    )
    inverse: FastInverseSettings = field(default_factory=FastInverseSettings, metadata={"help": "The fast inverse."})

    def __post_init__(self) -> None:
        if self.name not in VALID_REDUCERS:
            raise ValueError(f"unknown reducer {self.name!r}; valid: {', '.join(VALID_REDUCERS)}")
        if self.metric not in VALID_METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; valid: {', '.join(VALID_METRICS)}")
        if self.inverse_backend not in VALID_INVERSE_BACKENDS:
            raise ValueError(
                f"unknown inverse_backend {self.inverse_backend!r}; valid: {', '.join(VALID_INVERSE_BACKENDS)}"
            )
        if self.name == "umap" and self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2 for UMAP, got {self.n_neighbors}")

    def fit_fields(self) -> dict[str, Any]:
        """The fields the fitted map depends on, for this reducer (unused fields would only force refits)."""
        if self.name == "none":
            return {"name": self.name, "metric": self.metric}
        if self.name == "pca":
            return {"name": self.name, "n_components": self.n_components, "seed": self.seed}
        return {
            "name": self.name,
            "n_components": self.n_components,
            "n_neighbors": self.n_neighbors,
            "metric": self.metric,
            "seed": self.seed,
        }


class Reducer(abc.ABC):
    """A fitted map between the pooled vector space (width D) and a reduced space (width d).

    ``embedding_`` holds the fitted vectors' reduced coordinates, ``X_`` the fitted vectors themselves;
    ``neighbors`` returns row indices into both.
    """

    name: ClassVar[str] = ""
    # whether ``n_components`` applies (``none`` keeps the full width)
    reduces: ClassVar[bool] = True
    # settings that cannot exceed the number of fitted examples
    at_most_n: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: ReducerSettings) -> None:
        self.settings = settings
        self.X_: np.ndarray | None = None
        self.embedding_: np.ndarray | None = None
        self.cache_key: str | None = None
        self.loaded_from_cache = False
        self.fit_seconds: float | None = None
        self._index: NearestNeighbors | None = None

    # -- shape bookkeeping --------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.embedding_ is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"the {self.name} reducer is not fitted; call fit(X) first")

    @property
    def width(self) -> int:
        self._require_fitted()
        return self.X_.shape[1]

    @property
    def n_components(self) -> int:
        self._require_fitted()
        return self.embedding_.shape[1]

    @property
    def n_fitted(self) -> int:
        self._require_fitted()
        return self.X_.shape[0]

    # -- the interface ------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray) -> Reducer:
        """Fit on the real examples' pooled vectors (n, D)."""
        X = _as_2d_float32(X, "X")
        self._validate_data(X)
        start = time.perf_counter()
        self._fit(X)
        self.fit_seconds = time.perf_counter() - start
        self._index = None
        logger.info("fitted %s reducer on %d x %d vectors in %.1fs", self.name, *X.shape, self.fit_seconds)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Reduced coordinates (n, d) of vectors (n, D)."""
        self._require_fitted()
        X = _as_2d_float32(X, "X", self.width)
        return self._transform(X).astype(np.float32, copy=False)

    def inverse(self, Y: np.ndarray) -> np.ndarray:
        """Vectors (m, D) for reduced points (m, d)."""
        self._require_fitted()
        Y = _as_2d_float32(Y, "Y", self.n_components)
        return self._inverse(Y).astype(np.float32, copy=False)

    def neighbors(
        self, Y: np.ndarray, k: int, return_distance: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Indices (m, k) of the k fitted points nearest each reduced point, nearest first.

        A query that *is* a fitted point gets itself first (barring exact duplicates, which tie); ask for
        k + 1 and drop column 0 to exclude it. Distances are Euclidean in a reduced space (UMAP's output
        metric, the one PCA preserves) and ``settings.metric`` for ``none``.
        """
        self._require_fitted()
        Y = _as_2d_float32(Y, "Y", self.n_components)
        if not 1 <= k <= self.n_fitted:
            raise ValueError(f"k={k} must be between 1 and the number of fitted points ({self.n_fitted})")
        dist, idx = self._neighbour_index().kneighbors(Y, n_neighbors=k)
        return (idx, dist) if return_distance else idx

    def _neighbour_index(self) -> NearestNeighbors:
        """The one index over ``embedding_``, built on first use; the real coordinates never change."""
        if self._index is None:
            self._index = NearestNeighbors(metric=self._neighbor_metric()).fit(self.embedding_)
        return self._index

    # -- plain-array state (what the cache stores) ------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-able values that rebuild this fitted reducer (see ``restore``)."""
        self._require_fitted()
        return {"X": self.X_, "embedding": self.embedding_}, {}

    def restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> Reducer:
        """Become the fitted reducer that ``state`` described; raises KeyError or ValueError on a malformed state."""
        self._restore(arrays, values)
        if self.embedding_.shape[0] != self.X_.shape[0]:
            raise ValueError(f"embedding has {self.embedding_.shape[0]} rows but X has {self.X_.shape[0]}")
        if self.reduces and self.embedding_.shape[1] != self.settings.n_components:
            raise ValueError(f"embedding has {self.embedding_.shape[1]} columns, not {self.settings.n_components}")
        self._index = None
        return self

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.X_ = _as_2d_float32(arrays["X"], "X")
        self.embedding_ = _as_2d_float32(arrays["embedding"], "embedding")

    # -- per-reducer parts --------------------------------------------------------------------------------
    def _validate_data(self, X: np.ndarray) -> None:
        """Each data-dependent constraint once; static ranges are checked by ``ReducerSettings`` and the arguments."""
        n, width = X.shape
        if n < 2:
            raise ValueError(f"need at least 2 training examples to fit a reducer, got {n}")
        if self.reduces and self.settings.n_components > width:
            raise ValueError(f"n_components={self.settings.n_components} is larger than the vector width ({width})")
        for name in self.at_most_n:
            value = getattr(self.settings, name)
            if value > n:
                raise ValueError(f"{name}={value} is larger than the number of training examples ({n})")

    def _neighbor_metric(self) -> str:
        return "euclidean"

    @abc.abstractmethod
    def _fit(self, X: np.ndarray) -> None:
        """Implemented by each reducer."""

    @abc.abstractmethod
    def _transform(self, X: np.ndarray) -> np.ndarray:
        """Implemented by each reducer."""

    @abc.abstractmethod
    def _inverse(self, Y: np.ndarray) -> np.ndarray:
        """Implemented by each reducer."""

    def __repr__(self) -> str:
        shape = f"{self.n_fitted}x{self.width}->{self.n_components}" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({self.settings.name}, {shape}, key={(self.cache_key or '')[:12]})"


class IdentityReducer(Reducer):
    """``none``: the ablation without a reduced space; neighbours are taken in the full vector space."""

    name = "none"
    reduces = False

    def _neighbor_metric(self) -> str:
        return self.settings.metric

    def _fit(self, X: np.ndarray) -> None:
        self.X_ = X
        self.embedding_ = X

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._require_fitted()
        return {"X": self.X_}, {}

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self._fit(_as_2d_float32(arrays["X"], "X"))

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X.copy()

    def _inverse(self, Y: np.ndarray) -> np.ndarray:
        return Y.copy()


class PCAReducer(Reducer):
    """``pca``: a linear map whose inverse is exact on its span, the reference for what a 2-D map keeps.

    Kept as its mean and components (float64, so that ``inverse(transform(x))`` is exact to float32
    precision on the span): the whole map is two arrays.
    """

    name = "pca"
    at_most_n = ("n_components",)

    def _fit(self, X: np.ndarray) -> None:
        pca = PCA(n_components=self.settings.n_components, random_state=self.settings.seed)
        self.embedding_ = pca.fit_transform(X.astype(np.float64)).astype(np.float32)
        self.mean_, self.components_ = pca.mean_, pca.components_
        self.X_ = X

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, values = super().state()
        return {**arrays, "mean": self.mean_, "components": self.components_}, values

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super()._restore(arrays, values)
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.components_ = np.asarray(arrays["components"], dtype=np.float64)
        if self.mean_.shape != (self.width,) or self.components_.shape != (self.n_components, self.width):
            raise ValueError(f"PCA arrays {self.mean_.shape}, {self.components_.shape} do not fit {self!r}")

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return (X.astype(np.float64) - self.mean_) @ self.components_.T

    def _inverse(self, Y: np.ndarray) -> np.ndarray:
        return Y.astype(np.float64) @ self.components_ + self.mean_


class UMAPReducer(Reducer):
    """``umap``: the paper's map; inverted by our fast k-NN inverse or, for reference, umap-learn's own.

    The fast inverse needs only arrays (``X_``, ``embedding_``) and UMAP's kernel ``a, b``, so a map rebuilt
    from its state serves a SAGE round without umap-learn's object. ``transform`` and the ``umap-learn``
    backend do need that object: after a rebuild, ``model`` refits it on first use (same data and seed, so
    the same map; a different map, e.g. from another umap-learn version, is logged as a warning).
    """

    name = "umap"
    at_most_n = ("n_neighbors",)

    def __init__(self, settings: ReducerSettings) -> None:
        super().__init__(settings)
        self._model: umap.UMAP | None = None
        self._inverter: FastUMAPInverse | None = None

    def _fit_model(self, X: np.ndarray) -> tuple[umap.UMAP, np.ndarray]:
        import umap  # slow import (numba); only pay for it when UMAP is used

        s = self.settings
        model = umap.UMAP(n_components=s.n_components, n_neighbors=s.n_neighbors, metric=s.metric, random_state=s.seed)
        with warnings.catch_warnings():
            # a seed forces umap-learn to one thread; that is the price of a reproducible map, not news
            warnings.filterwarnings("ignore", message=".*n_jobs value .* overridden.*")
            embedding = np.asarray(model.fit_transform(X), dtype=np.float32)
        return model, embedding

    def _fit(self, X: np.ndarray) -> None:
        self._model, self.embedding_ = self._fit_model(X)
        # umap-learn keeps the array it was given (already float32, C order): share it rather than copy
        raw = self._model._raw_data
        self.X_ = raw if isinstance(raw, np.ndarray) and raw.shape == X.shape else X
        self.a_, self.b_ = float(self._model._a), float(self._model._b)
        self._inverter = None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, values = super().state()
        return arrays, {**values, "a": self.a_, "b": self.b_}

    def _restore(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super()._restore(arrays, values)
        self.a_, self.b_ = float(values["a"]), float(values["b"])
        self._model = self._inverter = None

    @property
    def model(self) -> umap.UMAP:
        """umap-learn's fitted object (for ``transform`` and its own inverse), refitted after a rebuild."""
        self._require_fitted()
        if self._model is None:
            logger.info(
                "refitting UMAP on %d x %d vectors: a map rebuilt from cached arrays has no umap-learn object, "
                "which transform and the umap-learn inverse need",
                *self.X_.shape,
            )
            self._model, embedding = self._fit_model(self.X_)
            if not np.array_equal(embedding, self.embedding_):
                logger.warning(
                    "the refitted UMAP differs from the cached map (another umap-learn or numba version?); "
                    "transform and the umap-learn inverse use the refitted one"
                )
        return self._model

    @property
    def inverter(self) -> FastUMAPInverse:
        """The fast inverse for the current ``settings.inverse`` (rebuilt when those change)."""
        self._require_fitted()
        if self._inverter is None or self._inverter.settings != self.settings.inverse:
            self._inverter = FastUMAPInverse(
                self.embedding_, self.X_, a=self.a_, b=self.b_, settings=self.settings.inverse,
                index=self._neighbour_index(),
            )
        return self._inverter

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return self.model.transform(X)

    def _inverse(self, Y: np.ndarray) -> np.ndarray:
        if self.settings.inverse_backend == "fast":
            return self.inverter(Y)
        if self.n_components > 3:
            logger.warning(
                "umap-learn's inverse_transform triangulates the %d-D embedding; this can take hours",
                self.n_components,
            )
        logger.info("umap-learn inverse_transform of %d points (5-14 points/s on 2 cores)", len(Y))
        return self.model.inverse_transform(Y)


_REDUCERS: dict[str, type[Reducer]] = {cls.name: cls for cls in (UMAPReducer, PCAReducer, IdentityReducer)}


def build_reducer(settings: ReducerSettings) -> Reducer:
    """An unfitted reducer for ``settings``."""
    return _REDUCERS[settings.name](settings)
