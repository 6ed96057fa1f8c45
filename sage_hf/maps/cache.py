"""The on-disk map cache: a fitted reducer is plain arrays plus JSON, never a pickle.

The real examples' vectors never change (the teacher's input layer is frozen), so a map is fitted once per
(teacher, dataset, map settings) and cached under a key that checkpoints can record. An entry is one
safetensors file: the arrays of ``Reducer.state`` (fitted vectors ``X``, ``embedding``, PCA's mean and
components) and, in its JSON header, the format, the cache key, the map-deciding settings and the scalars
(UMAP's kernel ``a, b``). Loading it runs no code from the file, so a shared or downloaded cache folder is
safe to use.

A UMAP rebuilt from an entry serves everything a SAGE round uses (``embedding_``, neighbours, the fast
inverse). umap-learn's own fitted object, which only ``transform`` and the ``umap-learn`` inverse backend
need, is not stored: it is refitted on first use (same vectors and seed, hence the same map; logged), and
kept in memory only.

Writes go to a temporary file renamed into place, so a reader sees a whole entry or none, and two runs
sharing a folder both finish with the same (deterministic) map. An entry that is torn, foreign or does not
match its key is refitted with a warning and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from .inversion import _as_2d_float32
from .reducers import Reducer, ReducerSettings, build_reducer

logger = logging.getLogger(__name__)

# bump when entries written by an older version of this file can no longer be used
CACHE_FORMAT = 2
_META_KEY = "sage_hf"


def reducer_cache_key(settings: ReducerSettings, X: np.ndarray, extra_key: str = "") -> str:
    """sha256 of the vectors (as the float32 the fit sees), the map-deciding settings and ``extra_key``."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    h = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "settings": settings.fit_fields(), "shape": list(X.shape), "extra": extra_key}
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(memoryview(X).cast("B"))
    return h.hexdigest()


def _entry_path(cache_dir: str | os.PathLike, settings: ReducerSettings, key: str) -> Path:
    return Path(cache_dir) / f"reducer-{settings.name}-{key}.safetensors"


def save_reducer(reducer: Reducer, path: str | os.PathLike) -> None:
    """Write ``reducer`` (fitted, with its ``cache_key``) to ``path`` atomically."""
    arrays, values = reducer.state()
    meta = {"format": CACHE_FORMAT, "cache_key": reducer.cache_key, "settings": reducer.settings.fit_fields(),
            "values": values}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        arrays = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
        save_file(arrays, tmp, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_reducer(path: str | os.PathLike, settings: ReducerSettings, key: str, X: np.ndarray) -> Reducer:
    """The reducer stored at ``path``; raises ValueError (naming what is wrong) unless it is the map of ``X``."""
    with safe_open(path, framework="np") as f:
        header = (f.metadata() or {}).get(_META_KEY)
        meta = json.loads(header) if header else None
        if not isinstance(meta, dict):
            raise ValueError("not a sage_hf map cache entry")
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {meta.get('format')}, expected {CACHE_FORMAT}")
        if meta.get("cache_key") != key:
            raise ValueError(f"entry is for key {str(meta.get('cache_key'))[:12]}, not {key[:12]}")
        arrays = {name: f.get_tensor(name) for name in f.keys()}
    reducer = build_reducer(settings).restore(arrays, meta["values"])
    if not np.array_equal(reducer.X_, X):
        raise ValueError("its fitted vectors differ from the ones asked for")
    reducer.cache_key = key
    return reducer


def fit_or_load_reducer(
    settings: ReducerSettings, X: np.ndarray, cache_dir: str | os.PathLike | None = None, extra_key: str = ""
) -> Reducer:
    """A reducer fitted on ``X``, loaded from ``cache_dir`` when the same (X, settings, extra_key) was fitted before.

    ``extra_key`` separates maps whose vectors happen to coincide (e.g. the teacher's name and interface
    layer). The result carries ``cache_key`` for checkpoints and ``loaded_from_cache`` for logs and tests;
    its ``settings`` are the ones asked for (inverse knobs are not part of the key).
    """
    X = _as_2d_float32(X, "X")
    key = reducer_cache_key(settings, X, extra_key)
    path = _entry_path(cache_dir, settings, key) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            reducer = load_reducer(path, settings, key, X)
        except Exception as exc:  # a torn or foreign entry must not stop a run: refit and rewrite it
            logger.warning("could not use cached reducer %s (%s); refitting", path, exc)
        else:
            reducer.loaded_from_cache = True
            logger.info("loaded %s reducer from cache %s", settings.name, path)
            return reducer
    logger.info("fitting %s reducer on %d x %d vectors (cache key %s)", settings.name, *X.shape, key[:12])
    reducer = build_reducer(settings).fit(X)
    reducer.cache_key = key
    if path is not None:
        save_reducer(reducer, path)
        logger.info("saved %s reducer to cache %s", settings.name, path)
    return reducer
