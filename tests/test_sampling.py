"""Tests for the "sample" step: points near anchors, always convex combinations of real points."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial import Delaunay
from sklearn.neighbors import NearestNeighbors

from sage_hf.maps.reducers import ReducerSettings, build_reducer
from sage_hf.rounds.sampling import SampledPoints, sample_near_anchors


def _coords(n: int = 300, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _anchors(n: int = 300, m: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=m)


def _assert_convex_reconstruction(coords: np.ndarray, s: SampledPoints) -> None:
    assert (s.weights >= 0).all()
    np.testing.assert_allclose(s.weights.sum(axis=1), 1.0, atol=1e-12)
    rebuilt = np.einsum("mj,mjd->md", s.weights, coords[s.support_idx])
    np.testing.assert_allclose(s.points, rebuilt, rtol=0, atol=1e-9)


# ---- determinism ---------------------------------------------------------------------------------------

def test_same_seed_same_points() -> None:
    coords, anchors = _coords(), _anchors()
    a = sample_near_anchors(coords, anchors, rng=np.random.default_rng(5))
    b = sample_near_anchors(coords, anchors, rng=np.random.default_rng(5))
    for field in ("points", "anchor_idx", "neighbour_idx", "t", "support_idx", "weights"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_different_seed_different_points() -> None:
    coords, anchors = _coords(), _anchors()
    a = sample_near_anchors(coords, anchors, rng=1)
    b = sample_near_anchors(coords, anchors, rng=2)
    assert not np.array_equal(a.points, b.points)
    assert not np.array_equal(a.neighbour_idx, b.neighbour_idx)


def _map(coords: np.ndarray, metric: str = "euclidean"):
    return build_reducer(ReducerSettings(name="none", metric=metric)).fit(coords)


def test_fitted_map_gives_identical_result() -> None:
    coords, anchors = _coords().astype(np.float32).astype(np.float64), _anchors()  # the map keeps float32
    reducer = _map(coords)
    a = sample_near_anchors(reducer, anchors, k=10, rng=3)
    b = sample_near_anchors(coords, anchors, k=10, rng=3)
    np.testing.assert_array_equal(a.points, b.points)
    # the map's one index serves any k
    c = sample_near_anchors(reducer, anchors, k=5, rng=3)
    d = sample_near_anchors(coords, anchors, k=5, rng=3)
    np.testing.assert_array_equal(c.points, d.points)


def test_neighbours_follow_the_maps_metric() -> None:
    # from the anchor (1, 0): point 1 points the same way but is far, point 2 is near but at 45 degrees
    coords = np.array([[1.0, 0.0], [5.0, 0.1], [0.7, 0.7], [-3.0, 2.0], [0.0, -4.0]], np.float32).astype(np.float64)
    anchors = np.zeros(20, dtype=np.int64)
    cosine = sample_near_anchors(_map(coords, "cosine"), anchors, k=1, rng=0)
    euclidean = sample_near_anchors(_map(coords), anchors, k=1, rng=0)
    assert (cosine.neighbour_idx == 1).all() and (euclidean.neighbour_idx == 2).all()
    np.testing.assert_array_equal(sample_near_anchors(coords, anchors, k=1, rng=0).neighbour_idx,
                                  euclidean.neighbour_idx)  # plain coordinates are Euclidean
    _assert_convex_reconstruction(coords, cosine)


def test_one_neighbour_index_per_map(monkeypatch) -> None:
    fits = []
    original = NearestNeighbors.fit
    monkeypatch.setattr(NearestNeighbors, "fit", lambda self, *a, **kw: (fits.append(1), original(self, *a, **kw))[1])
    reducer = build_reducer(ReducerSettings(name="pca")).fit(_coords(300, 8))
    for seed in range(3):  # rounds reuse it
        sample_near_anchors(reducer, _anchors(), k=5, rng=seed)
    reducer.neighbors(reducer.embedding_[:3], 4)
    reducer.inverse(reducer.embedding_[:3])
    assert len(fits) == 1


# ---- structure -----------------------------------------------------------------------------------------

def test_shapes_and_neighbours_are_true_knn() -> None:
    coords, anchors = _coords(), _anchors()
    k = 7
    s = sample_near_anchors(coords, anchors, k=k, rng=0)
    m = anchors.size
    assert len(s) == m
    assert s.points.shape == (m, 2) and s.weights.shape == (m, k + 1) and s.support_idx.shape == (m, k + 1)
    np.testing.assert_array_equal(s.anchor_idx, anchors)
    np.testing.assert_array_equal(s.support_idx[:, 0], anchors)
    dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    brute = np.argsort(dist, axis=1)[:, :k]
    for i, a in enumerate(anchors):
        assert set(s.support_idx[i, 1:].tolist()) == set(brute[a].tolist())
        assert s.neighbour_idx[i] in s.support_idx[i, 1:]
        assert s.neighbour_idx[i] != a


def test_repeated_anchors_get_independent_draws() -> None:
    coords = _coords()
    s = sample_near_anchors(coords, np.full(50, 17), k=10, rng=0)
    assert np.unique(s.points, axis=0).shape[0] == 50
    assert np.unique(s.neighbour_idx).size > 5


def test_anchor_excluded_even_with_duplicates() -> None:
    base = _coords(40)
    coords = np.concatenate([base, base[:5], base[:5]])  # points 0..4 appear three times
    s = sample_near_anchors(coords, np.arange(5), k=3, jitter=0.0, rng=0)
    for i in range(5):
        assert i not in s.support_idx[i, 1:]
        assert len(set(s.support_idx[i, 1:].tolist())) == 3
    # with more duplicates than k+1, the anchor is still dropped (and never its own neighbour)
    many = np.concatenate([base] + [base[:1]] * 6)
    s = sample_near_anchors(many, np.array([0]), k=3, rng=0)
    assert 0 not in s.support_idx[0, 1:]


def test_empty_anchor_list() -> None:
    s = sample_near_anchors(_coords(), np.array([], dtype=np.int64), k=4, rng=0)
    assert s.points.shape == (0, 2) and s.weights.shape == (0, 5)


# ---- hull membership -----------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 3, 8, 16, 384])
@pytest.mark.parametrize("jitter", [0.0, 0.1, 1.0])
def test_points_are_convex_combinations(d: int, jitter: float) -> None:
    n = 200
    coords = _coords(n, d)
    s = sample_near_anchors(coords, _anchors(n, 150), k=10, jitter=jitter, rng=0)
    assert s.points.shape == (150, d)
    _assert_convex_reconstruction(coords, s)


def test_float32_coords_reconstruct_in_float64() -> None:
    coords = _coords().astype(np.float32)
    s = sample_near_anchors(coords, _anchors(), rng=0)
    _assert_convex_reconstruction(coords.astype(np.float64), s)


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5])
def test_points_inside_2d_hull_by_delaunay(jitter: float) -> None:
    rng = np.random.default_rng(4)
    # an elongated, clustered cloud so many anchors sit on the hull's edge
    coords = np.concatenate([rng.normal(size=(150, 2)) * [3.0, 0.3], rng.normal(size=(150, 2)) + [8.0, 2.0]])
    hull_vertices = np.unique(Delaunay(coords).convex_hull)
    anchors = np.concatenate([hull_vertices, rng.integers(0, 300, size=300)])
    s = sample_near_anchors(coords, anchors, k=10, jitter=jitter, rng=0)
    assert (Delaunay(coords).find_simplex(s.points, tol=1e-9) >= 0).all()


# ---- interpolation and jitter --------------------------------------------------------------------------

def test_zero_jitter_points_lie_on_anchor_neighbour_segment() -> None:
    coords = _coords(300, 3)
    s = sample_near_anchors(coords, _anchors(), k=10, jitter=0.0, rng=0)
    a, b = coords[s.anchor_idx], coords[s.neighbour_idx]
    expected = (1.0 - s.t)[:, None] * a + s.t[:, None] * b
    np.testing.assert_allclose(s.points, expected, rtol=0, atol=1e-12)
    assert ((s.t >= 0) & (s.t <= 1)).all()
    # only the anchor and the chosen neighbour carry weight
    nonzero = s.weights > 0
    assert (nonzero.sum(axis=1) <= 2).all()
    chosen = s.support_idx == s.neighbour_idx[:, None]
    assert (nonzero <= (chosen | (np.arange(11) == 0))).all()


def test_interpolation_is_anchor_side_biased_by_default() -> None:
    coords = _coords(500)
    s = sample_near_anchors(coords, np.arange(500).repeat(10), k=5, jitter=0.0, rng=0)
    assert s.t.mean() == pytest.approx(1 / 3, abs=0.02)  # Beta(1, 2)
    u = sample_near_anchors(coords, np.arange(500).repeat(10), k=5, jitter=0.0, rng=0, t_beta=(1.0, 1.0))
    assert u.t.mean() == pytest.approx(1 / 2, abs=0.02)


def test_jitter_displacement_is_scaled_to_the_neighbourhood() -> None:
    coords = _coords(400, 2)
    coords[200:] *= 100.0  # a sparse region: jitter must grow with local distance
    jitter = 0.1
    s0 = sample_near_anchors(coords, np.arange(400), k=8, jitter=0.0, rng=0)
    s1 = sample_near_anchors(coords, np.arange(400), k=8, jitter=jitter, rng=0)
    np.testing.assert_array_equal(s0.t, s1.t)  # same draws, only the jitter differs
    shift = np.linalg.norm(s1.points - s0.points, axis=1)
    hood = coords[s1.support_idx]  # (m, k+1, 2)
    diameter = np.linalg.norm(hood[:, :, None] - hood[:, None], axis=-1).max(axis=(1, 2))
    assert (shift <= jitter * diameter + 1e-12).all()
    assert (shift > 0).all()
    assert np.median(shift[200:]) > 20 * np.median(shift[:200])


# ---- errors --------------------------------------------------------------------------------------------

def test_k_too_large_names_n() -> None:
    with pytest.raises(ValueError, match=re.escape("k=10 neighbours needs at least k+1 examples, but coords has n=6")):
        sample_near_anchors(_coords(6), np.array([0]), k=10)
    with pytest.raises(ValueError, match="coords has n=6"):
        sample_near_anchors(_map(_coords(6)), np.array([0]), k=6)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        sample_near_anchors(_coords(), np.array([0]), k=0)


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_jitter_out_of_range(jitter: float) -> None:
    with pytest.raises(ValueError, match=r"jitter must be in \[0, 1\]"):
        sample_near_anchors(_coords(), np.array([0]), jitter=jitter)


def test_bad_t_beta() -> None:
    with pytest.raises(ValueError, match="t_beta parameters must both be > 0"):
        sample_near_anchors(_coords(), np.array([0]), t_beta=(0.0, 1.0))


def test_anchor_out_of_range() -> None:
    with pytest.raises(ValueError, match=re.escape("anchor_idx out of range [0, 300): [300, -1]")):
        sample_near_anchors(_coords(), np.array([0, 300, -1]))


def test_anchor_idx_must_be_integer_1d() -> None:
    with pytest.raises(TypeError, match="anchor_idx must hold integers"):
        sample_near_anchors(_coords(), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="anchor_idx must be 1-D"):
        sample_near_anchors(_coords(), np.array([[0, 1]]))


def test_coords_must_be_finite_2d() -> None:
    coords = _coords()
    coords[7, 1] = np.nan
    with pytest.raises(ValueError, match=re.escape("coords contain NaN/inf at example indices [7]")):
        sample_near_anchors(coords, np.array([0]))
    with pytest.raises(ValueError, match="coords must be 2-D"):
        sample_near_anchors(np.zeros(10), np.array([0]))


def test_unfitted_map() -> None:
    with pytest.raises(ValueError, match="the none map is not fitted; fit it first"):
        sample_near_anchors(build_reducer(ReducerSettings(name="none")), np.array([0]))
    with pytest.raises(ValueError, match=re.escape("anchor_idx out of range [0, 100): [100]")):
        sample_near_anchors(_map(_coords(100)), np.array([100]), k=5)  # the map's own points are the range
