"""The reducer interface (SAGE "map" step): shapes, determinism, the on-disk cache and every bad input."""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import pytest

from sage_hf.maps.inversion import FastInverseSettings
from sage_hf.maps.reducers import (
    IdentityReducer,
    PCAReducer,
    ReducerSettings,
    UMAPReducer,
    build_reducer,
    fit_or_load_reducer,
    reducer_cache_key,
)

WIDTH = 32


def clustered(n: int, seed: int = 0, width: int = WIDTH, n_clusters: int = 6) -> np.ndarray:
    """Well-separated Gaussian clusters: structure UMAP can find in a few hundred points."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(n_clusters, width)) * 3
    return (centres[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, width))).astype(np.float32)


UMAP_SMALL = ReducerSettings(name="umap", n_neighbors=15)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(240)


@pytest.fixture(scope="module")
def umap_reducer(data) -> UMAPReducer:
    return build_reducer(UMAP_SMALL).fit(data)


# -- bad inputs: one clear line each ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="tsne"), r"unknown reducer 'tsne'; valid: umap, pca, none"),
        (dict(metric="manhattan"), r"unknown metric 'manhattan'; valid: euclidean, cosine"),
        (dict(inverse_backend="delaunay"), r"unknown inverse_backend 'delaunay'; valid: fast, umap-learn"),
        (dict(n_components=0), r"n_components must be >= 1, got 0"),
        (dict(n_neighbors=1), r"n_neighbors must be >= 2 for UMAP, got 1"),
    ],
)
def test_settings_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReducerSettings(**kwargs)


def test_n_neighbors_larger_than_training_set_says_how_many():
    with pytest.raises(ValueError, match=r"n_neighbors=100 is larger than the number of training examples \(40\)"):
        build_reducer(ReducerSettings(n_neighbors=100)).fit(clustered(40))


@pytest.mark.parametrize("name", ["umap", "pca"])
def test_n_components_larger_than_width(name):
    with pytest.raises(ValueError, match=r"n_components=33 is larger than the vector width \(32\)"):
        build_reducer(ReducerSettings(name=name, n_components=33, n_neighbors=15)).fit(clustered(50))


def test_pca_components_larger_than_training_set():
    with pytest.raises(ValueError, match=r"n_components=20 is larger than the number of training examples \(10\)"):
        build_reducer(ReducerSettings(name="pca", n_components=20)).fit(clustered(10))


def test_bad_arrays():
    reducer = build_reducer(ReducerSettings(name="pca")).fit(clustered(50))
    with pytest.raises(ValueError, match=r"X must be a 2-D array"):
        build_reducer(ReducerSettings(name="pca")).fit(np.zeros(10))
    with pytest.raises(ValueError, match=r"X contains NaN or infinite values"):
        build_reducer(ReducerSettings(name="pca")).fit(np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match=r"X has width 31, expected 32"):
        reducer.transform(np.zeros((3, 31)))
    with pytest.raises(ValueError, match=r"Y has width 3, expected 2"):
        reducer.inverse(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"k=51 must be between 1 and the number of fitted points \(50\)"):
        reducer.neighbors(reducer.embedding_[:2], 51)
    with pytest.raises(RuntimeError, match=r"not fitted"):
        build_reducer(ReducerSettings(name="pca")).transform(np.zeros((1, 32)))


# -- behaviour of each reducer ------------------------------------------------------------------------------
def test_build_reducer_picks_the_class():
    assert isinstance(build_reducer(ReducerSettings(name="umap")), UMAPReducer)
    assert isinstance(build_reducer(ReducerSettings(name="pca")), PCAReducer)
    assert isinstance(build_reducer(ReducerSettings(name="none")), IdentityReducer)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_none_is_identity_with_full_space_neighbours(data, metric):
    reducer = build_reducer(ReducerSettings(name="none", metric=metric)).fit(data)
    assert reducer.n_components == WIDTH and reducer.embedding_.shape == data.shape
    np.testing.assert_array_equal(reducer.transform(data[:5]), data[:5])
    np.testing.assert_array_equal(reducer.inverse(data[:5]), data[:5])
    query = data[:4] + 0.01
    if metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        dist = 1 - (query / np.linalg.norm(query, axis=1, keepdims=True)) @ unit.T
    else:
        dist = np.linalg.norm(query[:, None] - data[None], axis=2)
    np.testing.assert_array_equal(reducer.neighbors(query, 5), np.argsort(dist, axis=1)[:, :5])


def test_pca_inverse_exact_on_its_span():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(WIDTH, 3)))[0].T  # 3 orthonormal directions in 32-D
    X = (rng.normal(size=(200, 3)) @ basis + rng.normal(size=WIDTH)).astype(np.float32)
    reducer = build_reducer(ReducerSettings(name="pca", n_components=3)).fit(X)
    new = (rng.normal(size=(20, 3)) @ basis + X.mean(0)).astype(np.float32)  # unseen points on the span
    Y = reducer.transform(new)
    assert Y.shape == (20, 3) and reducer.embedding_.shape == (200, 3)
    np.testing.assert_allclose(reducer.inverse(Y), new, atol=1e-5)


def test_umap_round_trip_shapes_and_neighbours(umap_reducer, data):
    held_out = clustered(12, seed=7)
    Y = umap_reducer.transform(held_out)
    assert Y.shape == (12, 2) and Y.dtype == np.float32
    assert umap_reducer.embedding_.shape == (240, 2) and umap_reducer.X_.shape == (240, WIDTH)
    X_back = umap_reducer.inverse(Y)
    assert X_back.shape == (12, WIDTH) and X_back.dtype == np.float32 and np.isfinite(X_back).all()
    idx, dist = umap_reducer.neighbors(umap_reducer.embedding_[:5], 4, return_distance=True)
    assert idx.shape == (5, 4) and (np.diff(dist, axis=1) >= 0).all()
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))  # a fitted point is its own nearest neighbour


def test_umap_is_deterministic_given_a_seed(umap_reducer, data):
    again = build_reducer(UMAP_SMALL).fit(data)
    np.testing.assert_array_equal(again.embedding_, umap_reducer.embedding_)
    Y = umap_reducer.embedding_[:10] + 0.05
    np.testing.assert_array_equal(again.inverse(Y), umap_reducer.inverse(Y))


def test_umap_learn_backend_is_umaps_own_inverse(umap_reducer):
    reference = copy.copy(umap_reducer)
    reference.settings = dataclasses.replace(UMAP_SMALL, inverse_backend="umap-learn")
    Y = umap_reducer.embedding_[:3] + 0.01
    np.testing.assert_allclose(reference.inverse(Y), umap_reducer.model.inverse_transform(Y), atol=1e-6)


# -- the cache -----------------------------------------------------------------------------------------------
def test_cache_key_tracks_what_changes_the_map(data):
    base = reducer_cache_key(UMAP_SMALL, data)
    assert len(base) == 64 and base == reducer_cache_key(UMAP_SMALL, data.astype(np.float64))
    changed = [
        reducer_cache_key(ReducerSettings(name="umap", n_neighbors=16), data),
        reducer_cache_key(ReducerSettings(name="umap", n_neighbors=15, n_components=3), data),
        reducer_cache_key(ReducerSettings(name="umap", n_neighbors=15, seed=1), data),
        reducer_cache_key(ReducerSettings(name="umap", n_neighbors=15, metric="cosine"), data),
        reducer_cache_key(ReducerSettings(name="pca", n_neighbors=15), data),
        reducer_cache_key(UMAP_SMALL, data[:-1]),
        reducer_cache_key(UMAP_SMALL, data + 1e-3),
        reducer_cache_key(UMAP_SMALL, data, extra_key="teacher=bert-base"),
    ]
    assert len(set(changed + [base])) == len(changed) + 1
    # how the map is inverted does not change the map: one fit serves every inverse setting
    same = ReducerSettings(name="umap", n_neighbors=15, inverse_backend="umap-learn",
                           inverse=FastInverseSettings(n_neighbors=10, n_steps=3))
    assert reducer_cache_key(same, data) == base


def test_second_fit_or_load_loads_instead_of_refitting(tmp_path, monkeypatch, caplog):
    X = clustered(120, seed=3)
    fits = []
    original = UMAPReducer._fit
    monkeypatch.setattr(UMAPReducer, "_fit", lambda self, X: (fits.append(1), original(self, X))[1])
    with caplog.at_level(logging.INFO, logger="sage_hf.maps.reducers"):
        first = fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="t")
        second = fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="t")
    assert len(fits) == 1
    assert not first.loaded_from_cache and second.loaded_from_cache
    assert first.cache_key == second.cache_key == reducer_cache_key(UMAP_SMALL, X, "t")
    assert "loaded umap reducer from cache" in caplog.text
    np.testing.assert_array_equal(second.embedding_, first.embedding_)
    Y = first.embedding_[:6] + 0.02
    np.testing.assert_array_equal(second.inverse(Y), first.inverse(Y))
    np.testing.assert_allclose(second.transform(X[:4]), first.transform(X[:4]), atol=1e-5)
    # other inverse settings reuse the fit but are honoured
    other = ReducerSettings(name="umap", n_neighbors=15, inverse=FastInverseSettings(n_neighbors=1))
    third = fit_or_load_reducer(other, X, cache_dir=tmp_path, extra_key="t")
    assert len(fits) == 1 and third.settings == other
    np.testing.assert_array_equal(third.inverse(third.embedding_[:3]), X[:3])
    # a different extra_key is a different map
    fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="u")
    assert len(fits) == 2


def test_no_cache_dir_still_reports_the_key():
    X = clustered(50)
    settings = ReducerSettings(name="pca")
    reducer = fit_or_load_reducer(settings, X)
    assert reducer.cache_key == reducer_cache_key(settings, X) and not reducer.loaded_from_cache


def test_unreadable_cache_file_is_refitted(tmp_path, caplog):
    X = clustered(50)
    settings = ReducerSettings(name="pca")
    fit_or_load_reducer(settings, X, cache_dir=tmp_path)
    (path,) = tmp_path.glob("reducer-pca-*.joblib")
    path.write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="sage_hf.maps.reducers"):
        reducer = fit_or_load_reducer(settings, X, cache_dir=tmp_path)
    assert not reducer.loaded_from_cache and "refitting" in caplog.text
    assert fit_or_load_reducer(settings, X, cache_dir=tmp_path).loaded_from_cache  # rewritten whole
