"""The fast UMAP inverse (SAGE "invert" step): exactness of its pieces, fidelity against umap-learn, any d.

The refinement on umap-learn's objective lives in ``benchmarks/bench_inversion.py`` (it lowers fidelity); its
tests stay here so the benchmark's "refinement" row keeps measuring a correct refinement.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.spatial
from sklearn.neighbors import NearestNeighbors

from benchmarks.bench_inversion import RefinedUMAPInverse, RefineSettings
from sage_hf.maps.inversion import FastInverseSettings, FastUMAPInverse, inversion_fidelity
from sage_hf.maps.reducers import ReducerSettings, build_reducer

from testing_utils import clustered

WIDTH = 32


@pytest.fixture(scope="module")
def fitted():
    """A 2-D UMAP on 300 points, 40 held-out points and their reduced positions (the paper's fidelity set-up)."""
    train, held_out = clustered(300), clustered(40, seed=99)
    reducer = build_reducer(ReducerSettings(name="umap", n_neighbors=15)).fit(train)
    return reducer, held_out, reducer.transform(held_out)


# -- the pieces, without UMAP ----------------------------------------------------------------------------------
def toy_inverse(**settings) -> FastUMAPInverse:
    rng = np.random.default_rng(0)
    return FastUMAPInverse(rng.normal(size=(50, 2)), rng.normal(size=(50, 8)), a=1.5, b=0.9,
                           settings=FastInverseSettings(**settings))


def test_initialisation_is_the_affinity_weighted_neighbour_average():
    inv = toy_inverse(n_neighbors=5)
    Y = np.array([[0.1, -0.2], [2.0, 1.0]], dtype=np.float32)
    got = inv(Y)
    for row, y in zip(got, Y):
        d = np.linalg.norm(inv.embedding - y, axis=1)
        nearest = np.argsort(d)[:5]
        w = 1 / (1 + 1.5 * d[nearest] ** 1.8)
        np.testing.assert_allclose(row, (w[:, None] * inv.data[nearest]).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)


def test_default_neighbourhood_is_umap_learns():
    assert toy_inverse().k == 8  # min(width 8, 50 fitted points), as umap-learn's inverse_transform
    assert FastUMAPInverse(np.zeros((5, 2)), np.zeros((5, 8)), a=1, b=1).k == 5


def test_far_outside_the_map_falls_back_to_the_nearest_points():
    inv = toy_inverse(n_neighbors=1)
    np.testing.assert_array_equal(inv(inv.embedding[:7]), inv.data[:7])  # a fitted position gives its own vector
    far = np.array([[1e4, 1e4]], dtype=np.float32)
    nearest = np.argmin(np.linalg.norm(inv.embedding - far, axis=1))
    np.testing.assert_array_equal(inv(far)[0], inv.data[nearest])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_refinement_gradient_matches_autograd(metric):
    """The refinement's hand-written gradient is the gradient of its loss (checked against torch autograd)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    data = rng.normal(size=(40, 8)).astype(np.float32)
    scale = 0.3 if metric == "cosine" else 2.0
    sigmas, rhos = rng.uniform(0.2, 1.0, 40) * scale, rng.uniform(0.0, 0.5, 40) * scale
    inv = RefinedUMAPInverse(rng.normal(size=(40, 2)), data, a=1.5, b=0.9, sigmas=sigmas, rhos=rhos, metric=metric,
                             refine=RefineSettings(n_steps=1))
    x = rng.normal(size=(6, 8)).astype(np.float32)
    which = rng.integers(0, 40, (6, 10))
    target = rng.uniform(0, 1, (6, 10)).astype(np.float32)
    loss, grad = inv.objective(x, which, target)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    others = torch.tensor(data, dtype=torch.float64)[torch.tensor(which)]
    if metric == "cosine":
        dist = 1 - torch.nn.functional.cosine_similarity(xt[:, None, :], others, dim=-1)
    else:
        dist = (xt[:, None, :] - others).norm(dim=-1)
    sig = torch.tensor(sigmas, dtype=torch.float64)[torch.tensor(which)] + 1e-6
    rho = torch.tensor(rhos, dtype=torch.float64)[torch.tensor(which)]
    v = torch.exp(-(dist - rho).clamp_min(0) / sig).clamp(1e-6, 1 - 1e-6)
    t = torch.tensor(target, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    expected = -(t * v.log() + (1 - t) * (1 - v).log()).sum(1)
    expected.sum().backward()
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-4)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-3, atol=1e-4)
    assert np.abs(grad).max() > 1e-2  # the check is not vacuous: memberships are live


def test_empty_query():
    assert toy_inverse()(np.zeros((0, 2))).shape == (0, 8)


@pytest.mark.parametrize(
    "settings, kwargs, message",
    [
        (FastInverseSettings, dict(n_neighbors=0), r"inverse n_neighbors must be >= 1"),
        (RefineSettings, dict(n_steps=-1), r"inverse n_steps must be >= 0, got -1"),
        (RefineSettings, dict(learning_rate=0.0), r"inverse learning_rate must be > 0"),
        (RefineSettings, dict(negative_sample_rate=-2), r"inverse negative_sample_rate must be >= 0"),
    ],
)
def test_settings_errors(settings, kwargs, message):
    with pytest.raises(ValueError, match=message):
        settings(**kwargs)


def test_construction_and_query_errors():
    with pytest.raises(ValueError, match=r"inverse n_neighbors=51 is larger than the number of fitted points \(50\)"):
        toy_inverse(n_neighbors=51)
    with pytest.raises(ValueError, match=r"refinement \(n_steps > 0\) needs the fitted UMAP's sigmas and rhos"):
        RefinedUMAPInverse(np.zeros((3, 2)), np.zeros((3, 8)), a=1, b=1, sigmas=None, rhos=None)
    with pytest.raises(ValueError, match=r"embedding has 3 rows but data has 4"):
        FastUMAPInverse(np.zeros((3, 2)), np.zeros((4, 8)), a=1, b=1)
    with pytest.raises(ValueError, match=r"unknown metric 'l1'"):
        RefinedUMAPInverse(np.zeros((3, 2)), np.zeros((3, 8)), a=1, b=1, sigmas=np.ones(3), rhos=np.ones(3),
                           metric="l1")
    with pytest.raises(ValueError, match=r"index must be a NearestNeighbors fitted on embedding"):
        FastUMAPInverse(np.zeros((3, 2)), np.zeros((3, 8)), a=1, b=1, index=NearestNeighbors().fit(np.zeros((4, 2))))
    with pytest.raises(ValueError, match=r"Y has width 3, expected 2"):
        toy_inverse()(np.zeros((2, 3)))


def test_fidelity_metric():
    X = clustered(10)
    perfect = inversion_fidelity(X, X)
    assert perfect.cosine == pytest.approx(1.0) and perfect.mse == 0.0
    assert inversion_fidelity(X, -X).cosine == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"same \(n, width\) shape"):
        inversion_fidelity(X, X[:5])


# -- against umap-learn, on a fitted map --------------------------------------------------------------------
def test_at_least_as_faithful_as_umap_learn_and_much_faster(fitted):
    reducer, held_out, Y = fitted
    start = time.perf_counter()
    ours = reducer.inverse(Y)
    ours_s = time.perf_counter() - start
    reducer.model.inverse_transform(Y[:2])  # umap-learn compiles its optimiser on first use: keep that out
    start = time.perf_counter()
    theirs = reducer.model.inverse_transform(Y)
    theirs_s = time.perf_counter() - start
    f_ours, f_theirs = inversion_fidelity(held_out, ours), inversion_fidelity(held_out, theirs)
    f_mean = inversion_fidelity(held_out, np.broadcast_to(reducer.X_.mean(0), held_out.shape))
    assert f_ours.cosine >= f_theirs.cosine and f_ours.mse <= f_theirs.mse, (f_ours, f_theirs)
    assert f_ours.cosine > f_mean.cosine and f_ours.mse < f_mean.mse, (f_ours, f_mean)
    assert ours_s * 10 < theirs_s, (ours_s, theirs_s)  # loose: the benchmark measures the real ratio


def test_deterministic(fitted):
    reducer, _, Y = fitted
    np.testing.assert_array_equal(reducer.inverse(Y), reducer.inverse(Y))
    refine = RefineSettings(n_steps=3, seed=5)
    a = RefinedUMAPInverse.from_reducer(reducer, refine)(Y)
    np.testing.assert_array_equal(a, RefinedUMAPInverse.from_reducer(reducer, refine)(Y))
    assert not np.array_equal(a, reducer.inverse(Y))  # the refinement did move the points


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_refinement_runs_and_stays_close(metric):
    train = clustered(150, seed=4)
    reducer = build_reducer(ReducerSettings(name="umap", n_neighbors=15, metric=metric)).fit(train)
    Y = reducer.embedding_[:20] + 0.05
    plain = reducer.inverse(Y)
    refined = RefinedUMAPInverse.from_reducer(reducer, RefineSettings(n_steps=5, learning_rate=1e-2))(Y)
    assert refined.shape == plain.shape and np.isfinite(refined).all()
    assert inversion_fidelity(plain, refined).cosine > 0.9


def test_eight_components_without_a_triangulation(fitted, monkeypatch):
    reducer2, held_out, _ = fitted
    reducer = build_reducer(ReducerSettings(name="umap", n_components=8, n_neighbors=15)).fit(reducer2.X_)

    def no_triangulation(*args, **kwargs):
        raise AssertionError("the fast inverse must not triangulate")

    monkeypatch.setattr(scipy.spatial, "Delaunay", no_triangulation)
    Y = reducer.transform(held_out)
    assert Y.shape == (40, 8)
    X_back = reducer.inverse(Y)
    assert X_back.shape == (40, WIDTH)
    f_mean = inversion_fidelity(held_out, np.broadcast_to(reducer.X_.mean(0), held_out.shape))
    f_ours = inversion_fidelity(held_out, X_back)
    assert f_ours.cosine > f_mean.cosine and f_ours.mse < f_mean.mse, (f_ours, f_mean)
