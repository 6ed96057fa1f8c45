"""The reducer interface (SAGE "map" step): shapes, determinism, one neighbour index, the on-disk cache, bad input."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from sage_hf.maps.cache import fit_or_load_reducer, reducer_cache_key
from sage_hf.maps.inversion import FastInverseSettings
from sage_hf.maps.reducers import IdentityReducer, PCAReducer, ReducerSettings, UMAPReducer, build_reducer

from testing_utils import clustered

WIDTH = 32


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


def test_fast_inverse_shares_the_maps_neighbour_index(umap_reducer, monkeypatch):
    fits = []
    original = NearestNeighbors.fit
    monkeypatch.setattr(NearestNeighbors, "fit", lambda self, *a, **kw: (fits.append(1), original(self, *a, **kw))[1])
    arrays, values = umap_reducer.state()
    rebuilt = build_reducer(UMAP_SMALL).restore(arrays, values)  # same map, no index built yet
    Y = rebuilt.embedding_[:5] + 0.01
    rebuilt.neighbors(Y, 3)
    np.testing.assert_array_equal(rebuilt.inverse(Y), umap_reducer.inverse(Y))
    assert len(fits) == 1


@pytest.mark.parametrize("name", ["umap", "pca", "none"])
def test_state_rebuilds_the_same_map(umap_reducer, data, name):
    reducer = umap_reducer if name == "umap" else build_reducer(ReducerSettings(name=name)).fit(data)
    arrays, values = reducer.state()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    rebuilt = build_reducer(reducer.settings).restore(arrays, values)
    np.testing.assert_array_equal(rebuilt.X_, reducer.X_)
    np.testing.assert_array_equal(rebuilt.embedding_, reducer.embedding_)
    Y = reducer.embedding_[:4] + 0.01
    np.testing.assert_array_equal(rebuilt.inverse(Y), reducer.inverse(Y))
    np.testing.assert_array_equal(rebuilt.neighbors(Y, 3), reducer.neighbors(Y, 3))
    if name != "umap":  # UMAP's transform refits umap-learn's object (see the cache tests)
        np.testing.assert_array_equal(rebuilt.transform(data[:4]), reducer.transform(data[:4]))


def test_malformed_state_is_refused(data):
    reducer = build_reducer(ReducerSettings(name="pca")).fit(data)
    arrays, values = reducer.state()
    with pytest.raises(KeyError):
        build_reducer(reducer.settings).restore({k: v for k, v in arrays.items() if k != "mean"}, values)
    with pytest.raises(ValueError, match=r"embedding has 239 rows but X has 240"):
        build_reducer(reducer.settings).restore({**arrays, "embedding": arrays["embedding"][1:]}, values)


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
                           inverse=FastInverseSettings(n_neighbors=10))
    assert reducer_cache_key(same, data) == base


def test_second_fit_or_load_loads_instead_of_refitting(tmp_path, monkeypatch, caplog):
    X = clustered(120, seed=3)
    fits = []
    original = UMAPReducer._fit_model
    monkeypatch.setattr(UMAPReducer, "_fit_model", lambda self, X: (fits.append(1), original(self, X))[1])
    with caplog.at_level(logging.INFO, logger="sage_hf.maps"):
        first = fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="t")
        second = fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="t")
    assert len(fits) == 1
    assert not first.loaded_from_cache and second.loaded_from_cache
    assert first.cache_key == second.cache_key == reducer_cache_key(UMAP_SMALL, X, "t")
    assert "loaded umap reducer from cache" in caplog.text
    np.testing.assert_array_equal(second.embedding_, first.embedding_)
    Y = first.embedding_[:6] + 0.02
    np.testing.assert_array_equal(second.inverse(Y), first.inverse(Y))
    # other inverse settings reuse the fit but are honoured
    other = ReducerSettings(name="umap", n_neighbors=15, inverse=FastInverseSettings(n_neighbors=1))
    third = fit_or_load_reducer(other, X, cache_dir=tmp_path, extra_key="t")
    assert len(fits) == 1 and third.settings == other
    np.testing.assert_array_equal(third.inverse(third.embedding_[:3]), X[:3])
    # transform needs umap-learn's object, which the cache does not store: refitted once, the same map
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sage_hf.maps"):
        np.testing.assert_allclose(second.transform(X[:4]), first.transform(X[:4]), atol=1e-5)
        second.transform(X[:2])
    assert len(fits) == 2 and "refitting UMAP" in caplog.text and "differs" not in caplog.text
    # a different extra_key is a different map
    fit_or_load_reducer(UMAP_SMALL, X, cache_dir=tmp_path, extra_key="u")
    assert len(fits) == 3


def test_umap_learn_backend_after_a_cache_load(tmp_path, data, umap_reducer):
    settings = dataclasses.replace(UMAP_SMALL, inverse_backend="umap-learn")
    fit_or_load_reducer(UMAP_SMALL, data, cache_dir=tmp_path)
    loaded = fit_or_load_reducer(settings, data, cache_dir=tmp_path)
    assert loaded.loaded_from_cache
    Y = umap_reducer.embedding_[:3] + 0.01
    np.testing.assert_allclose(loaded.inverse(Y), umap_reducer.model.inverse_transform(Y), atol=1e-6)


@pytest.mark.parametrize("name", ["pca", "none"])
def test_cached_linear_maps_are_exact(tmp_path, data, name):
    settings = ReducerSettings(name=name, metric="cosine")
    fitted = fit_or_load_reducer(settings, data, cache_dir=tmp_path)
    loaded = fit_or_load_reducer(settings, data, cache_dir=tmp_path)
    assert loaded.loaded_from_cache and type(loaded) is type(fitted)
    Y = fitted.embedding_[:5]
    np.testing.assert_array_equal(loaded.transform(data[:5]), fitted.transform(data[:5]))
    np.testing.assert_array_equal(loaded.inverse(Y), fitted.inverse(Y))
    np.testing.assert_array_equal(loaded.neighbors(Y, 4), fitted.neighbors(Y, 4))


def test_no_cache_dir_still_reports_the_key():
    X = clustered(50)
    settings = ReducerSettings(name="pca")
    reducer = fit_or_load_reducer(settings, X)
    assert reducer.cache_key == reducer_cache_key(settings, X) and not reducer.loaded_from_cache


def _only_entry(folder: Path) -> Path:
    (path,) = folder.glob("reducer-*")
    assert path.suffix == ".safetensors"
    return path


def _refits_with_warning(settings, X, cache_dir, caplog) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sage_hf.maps"):
        reducer = fit_or_load_reducer(settings, X, cache_dir=cache_dir)
    assert not reducer.loaded_from_cache and "refitting" in caplog.text
    assert fit_or_load_reducer(settings, X, cache_dir=cache_dir).loaded_from_cache  # rewritten whole


def test_unreadable_cache_file_is_refitted(tmp_path, caplog):
    X = clustered(50)
    settings = ReducerSettings(name="pca")
    fit_or_load_reducer(settings, X, cache_dir=tmp_path)
    path = _only_entry(tmp_path)
    path.write_bytes(b"not a safetensors file")
    _refits_with_warning(settings, X, tmp_path, caplog)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # torn
    _refits_with_warning(settings, X, tmp_path, caplog)


def test_mismatched_cache_entry_is_refitted(tmp_path, caplog):
    X, settings = clustered(50), ReducerSettings(name="pca")
    fit_or_load_reducer(settings, X + 1, cache_dir=tmp_path / "other")
    fit_or_load_reducer(settings, X, cache_dir=tmp_path)
    _only_entry(tmp_path).write_bytes(_only_entry(tmp_path / "other").read_bytes())  # another map under our key
    _refits_with_warning(settings, X, tmp_path, caplog)


class _RunsCode:
    """A pickle that touches a file when unpickled: what a malicious cache entry would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickled_cache_entry_is_never_unpickled(tmp_path, caplog):
    X, settings = clustered(50), ReducerSettings(name="pca")
    fit_or_load_reducer(settings, X, cache_dir=tmp_path)
    marker = tmp_path / "code-ran"
    _only_entry(tmp_path).write_bytes(pickle.dumps(_RunsCode(marker)))
    _refits_with_warning(settings, X, tmp_path, caplog)
    assert not marker.exists()


_FIT_IN_A_PROCESS = """
import sys, time
from pathlib import Path
import numpy as np
from sage_hf.maps.cache import fit_or_load_reducer
from sage_hf.maps.reducers import ReducerSettings
cache_dir, out, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
out.with_suffix(".ready").touch()  # start together, so that both miss the cache and both write it
while len(list(out.parent.glob("*.ready"))) < 2:
    time.sleep(0.01)
maps = {name: fit_or_load_reducer(ReducerSettings(name=name, n_neighbors=15), X, cache_dir, "shared").embedding_
        for name in names}
np.savez(out, **maps)
"""


def _two_processes_share_a_cache_folder(tmp_path: Path, names: list[str]) -> None:
    cache = tmp_path / "maps"
    outs = [tmp_path / f"{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _FIT_IN_A_PROCESS, str(cache), str(out), *names],
                              stderr=subprocess.PIPE, text=True) for out in outs]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    assert len(list(cache.iterdir())) == len(names)  # whole entries, no temporary file left behind
    with np.load(outs[0]) as first, np.load(outs[1]) as second:
        for name in names:
            np.testing.assert_array_equal(first[name], second[name])
            loaded = fit_or_load_reducer(ReducerSettings(name=name, n_neighbors=15), X, cache, "shared")
            assert loaded.loaded_from_cache
            np.testing.assert_array_equal(loaded.embedding_, first[name])


def test_two_processes_sharing_a_cache_folder_get_the_same_map(tmp_path):
    _two_processes_share_a_cache_folder(tmp_path, ["pca", "none"])


@pytest.mark.slow
def test_two_processes_sharing_a_cache_folder_get_the_same_umap(tmp_path):
    _two_processes_share_a_cache_folder(tmp_path, ["umap"])
