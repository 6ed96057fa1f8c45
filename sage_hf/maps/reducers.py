"""The "map" step of a SAGE round: reduce pooled layer-1 vectors, find neighbours there, and map back.

One interface, three reducers, so the ablations (method.md section 4) swap a setting, not code:
``umap`` (the paper), ``pca`` (linear, exact inverse on its span) and ``none`` (neighbours and interpolation
in the full vector space, identity inverse). The real examples' vectors never change (the teacher's input
layer is frozen), so a map is fitted once per (teacher, dataset) and cached on disk under a key that
checkpoints can record.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .inversion import VALID_METRICS, FastInverseSettings, FastUMAPInverse, _as_2d_float32

logger = logging.getLogger(__name__)

VALID_REDUCERS = ("umap", "pca", "none")
VALID_INVERSE_BACKENDS = ("fast", "umap-learn")
# bump when a pickled reducer from an older version of this file can no longer be used
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ReducerSettings:
    """Everything that decides the fitted map (``name`` .. ``seed``) and how it is inverted (the rest).

    Only the fields that change the fitted map enter the cache key (see ``fit_fields``), so one cached UMAP
    serves both inverse backends and any ``inverse`` knobs. ``metric`` is UMAP's input metric and the
    neighbour metric of ``none``; neighbours in a reduced space are Euclidean (UMAP's output metric, and
    the one PCA preserves).
    """

    name: str = "umap"
    n_components: int = 2
    n_neighbors: int = 100
    metric: str = "euclidean"
    seed: int = 0
    inverse_backend: str = "fast"
    inverse: FastInverseSettings = field(default_factory=FastInverseSettings)

    def __post_init__(self) -> None:
        if self.name not in VALID_REDUCERS:
            raise ValueError(f"unknown reducer {self.name!r}; valid: {', '.join(VALID_REDUCERS)}")
        if self.metric not in VALID_METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; valid: {', '.join(VALID_METRICS)}")
        if self.inverse_backend not in VALID_INVERSE_BACKENDS:
            raise ValueError(
                f"unknown inverse_backend {self.inverse_backend!r}; valid: {', '.join(VALID_INVERSE_BACKENDS)}"
            )
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
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
    def fit(self, X: np.ndarray) -> "Reducer":
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

    def inverse(self, Y: np.ndarray, progress: bool | None = None) -> np.ndarray:
        """Vectors (m, D) for reduced points (m, d)."""
        self._require_fitted()
        Y = _as_2d_float32(Y, "Y", self.n_components)
        return self._inverse(Y, progress).astype(np.float32, copy=False)

    def neighbors(
        self, Y: np.ndarray, k: int, return_distance: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Indices (m, k) of the k fitted points nearest each reduced point, nearest first.

        A query that *is* a fitted point gets itself first (barring exact duplicates, which tie); ask for
        k + 1 and drop column 0 to exclude it.
        """
        self._require_fitted()
        Y = _as_2d_float32(Y, "Y", self.n_components)
        if not 1 <= k <= self.n_fitted:
            raise ValueError(f"k={k} must be between 1 and the number of fitted points ({self.n_fitted})")
        if self._index is None:
            self._index = NearestNeighbors(metric=self._neighbor_metric()).fit(self.embedding_)
        dist, idx = self._index.kneighbors(Y, n_neighbors=k)
        return (idx, dist) if return_distance else idx

    # -- per-reducer parts --------------------------------------------------------------------------------
    def _validate_data(self, X: np.ndarray) -> None:
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"need at least 2 training examples to fit a reducer, got {n}")

    def _neighbor_metric(self) -> str:
        return "euclidean"

    @abc.abstractmethod
    def _fit(self, X: np.ndarray) -> None:
        """Implemented by each reducer."""

    @abc.abstractmethod
    def _transform(self, X: np.ndarray) -> np.ndarray:
        """Implemented by each reducer."""

    @abc.abstractmethod
    def _inverse(self, Y: np.ndarray, progress: bool | None) -> np.ndarray:
        """Implemented by each reducer."""

    def __getstate__(self) -> dict[str, Any]:
        # neighbour indices and inverters are cheap to rebuild and would bloat the cache file
        state = dict(self.__dict__)
        for key in ("_index", "_inverter"):
            state[key] = None
        return state

    def __repr__(self) -> str:
        shape = f"{self.n_fitted}x{self.width}->{self.n_components}" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({self.settings.name}, {shape}, key={(self.cache_key or '')[:12]})"


class IdentityReducer(Reducer):
    """``none``: the ablation without a reduced space; neighbours are taken in the full vector space."""

    name = "none"

    def _neighbor_metric(self) -> str:
        return self.settings.metric

    def _fit(self, X: np.ndarray) -> None:
        self.X_ = X
        self.embedding_ = X

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X.copy()

    def _inverse(self, Y: np.ndarray, progress: bool | None) -> np.ndarray:
        return Y.copy()


class PCAReducer(Reducer):
    """``pca``: a linear map whose inverse is exact on its span, the reference for what a 2-D map keeps."""

    name = "pca"

    def _validate_data(self, X: np.ndarray) -> None:
        super()._validate_data(X)
        _check_components(self.settings.n_components, X)
        if self.settings.n_components > X.shape[0]:
            raise ValueError(
                f"n_components={self.settings.n_components} is larger than the number of training examples "
                f"({X.shape[0]})"
            )

    def _fit(self, X: np.ndarray) -> None:
        # float64 so that inverse(transform(x)) is exact to float32 precision on the span
        self.model = PCA(n_components=self.settings.n_components, random_state=self.settings.seed)
        self.embedding_ = self.model.fit_transform(X.astype(np.float64)).astype(np.float32)
        self.X_ = X

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return self.model.transform(X.astype(np.float64))

    def _inverse(self, Y: np.ndarray, progress: bool | None) -> np.ndarray:
        return self.model.inverse_transform(Y.astype(np.float64))


class UMAPReducer(Reducer):
    """``umap``: the paper's map; inverted by our fast k-NN inverse or, for reference, umap-learn's own."""

    name = "umap"

    def __init__(self, settings: ReducerSettings) -> None:
        super().__init__(settings)
        self._inverter: FastUMAPInverse | None = None

    def _validate_data(self, X: np.ndarray) -> None:
        super()._validate_data(X)
        _check_components(self.settings.n_components, X)
        if self.settings.n_neighbors > X.shape[0]:
            raise ValueError(
                f"n_neighbors={self.settings.n_neighbors} is larger than the number of training examples ({X.shape[0]})"
            )

    def _fit(self, X: np.ndarray) -> None:
        import umap  # slow import (numba); only pay for it when UMAP is used

        s = self.settings
        self.model = umap.UMAP(
            n_components=s.n_components, n_neighbors=s.n_neighbors, metric=s.metric, random_state=s.seed
        )
        with warnings.catch_warnings():
            # a seed forces umap-learn to one thread; that is the price of a reproducible map, not news
            warnings.filterwarnings("ignore", message=".*n_jobs value .* overridden.*")
            self.embedding_ = np.asarray(self.model.fit_transform(X), dtype=np.float32)
        # umap-learn keeps the array it was given (already float32, C order): share it, pickle it once
        raw = self.model._raw_data
        self.X_ = raw if isinstance(raw, np.ndarray) and raw.shape == X.shape else X
        self._inverter = None

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return self.model.transform(X)

    @property
    def inverter(self) -> FastUMAPInverse:
        """The fast inverse for the current ``settings.inverse`` (rebuilt when those change)."""
        self._require_fitted()
        if self._inverter is None or self._inverter.settings != self.settings.inverse:
            self._inverter = FastUMAPInverse.from_umap(self.model, self.settings.inverse)
        return self._inverter

    def _inverse(self, Y: np.ndarray, progress: bool | None) -> np.ndarray:
        if self.settings.inverse_backend == "fast":
            return self.inverter(Y, progress=progress)
        if self.n_components > 3:
            logger.warning(
                "umap-learn's inverse_transform triangulates the %d-D embedding; this can take hours",
                self.n_components,
            )
        logger.info("umap-learn inverse_transform of %d points (5-14 points/s on 2 cores)", len(Y))
        return self.model.inverse_transform(Y)


_REDUCERS: dict[str, type[Reducer]] = {cls.name: cls for cls in (UMAPReducer, PCAReducer, IdentityReducer)}


def _check_components(n_components: int, X: np.ndarray) -> None:
    if n_components > X.shape[1]:
        raise ValueError(f"n_components={n_components} is larger than the vector width ({X.shape[1]})")


def build_reducer(settings: ReducerSettings) -> Reducer:
    """An unfitted reducer for ``settings``."""
    return _REDUCERS[settings.name](settings)


def reducer_cache_key(settings: ReducerSettings, X: np.ndarray, extra_key: str = "") -> str:
    """sha256 of the vectors (as the float32 the fit sees), the map-deciding settings and ``extra_key``."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    h = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "settings": settings.fit_fields(), "shape": list(X.shape), "extra": extra_key}
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(memoryview(X).cast("B"))
    return h.hexdigest()


def _load_cached(path: Path, key: str) -> Reducer | None:
    try:
        reducer = joblib.load(path)
    except Exception as exc:  # a torn or stale file must not stop a run: refit instead
        logger.warning("could not load cached reducer %s (%s); refitting", path, exc)
        return None
    if not isinstance(reducer, Reducer) or reducer.cache_key != key:
        logger.warning("cached reducer %s does not match key %s; refitting", path, key[:12])
        return None
    return reducer


def fit_or_load_reducer(
    settings: ReducerSettings, X: np.ndarray, cache_dir: str | os.PathLike | None = None, extra_key: str = ""
) -> Reducer:
    """A reducer fitted on ``X``, loaded from ``cache_dir`` when the same (X, settings, extra_key) was fitted before.

    ``extra_key`` separates maps whose vectors happen to coincide (e.g. the teacher's name and interface
    layer). The result carries ``cache_key`` for checkpoints and ``loaded_from_cache`` for logs and tests.
    """
    X = _as_2d_float32(X, "X")
    key = reducer_cache_key(settings, X, extra_key)
    path = Path(cache_dir) / f"reducer-{settings.name}-{key}.joblib" if cache_dir is not None else None
    if path is not None and path.is_file():
        reducer = _load_cached(path, key)
        if reducer is not None:
            # inverse knobs are not part of the key: apply the ones asked for now
            reducer.settings = settings
            reducer.loaded_from_cache = True
            logger.info("loaded %s reducer from cache %s", settings.name, path)
            return reducer
    logger.info("fitting %s reducer on %d x %d vectors (cache key %s)", settings.name, *X.shape, key[:12])
    reducer = build_reducer(settings).fit(X)
    reducer.cache_key = key
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            joblib.dump(reducer, tmp)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        logger.info("saved %s reducer to cache %s", settings.name, path)
    return reducer
