"""Tests for the "select" step: anchors follow the loss, and misuse fails loudly."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from sage_hf.rounds.anchors import VALID_POLICIES, AnchorSelection, pool_size_for, select_anchors


@pytest.fixture
def losses() -> np.ndarray:
    return np.random.default_rng(0).gamma(2.0, 1.0, size=500)


# ---- determinism ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", VALID_POLICIES)
def test_same_seed_same_anchors(losses: np.ndarray, policy: str) -> None:
    a = select_anchors(losses, 300, policy, rng=np.random.default_rng(7))
    b = select_anchors(losses, 300, policy, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.indices, b.indices)
    c = select_anchors(losses, 300, policy, rng=7)  # an int seed is the same as a seeded Generator
    np.testing.assert_array_equal(a.indices, c.indices)


@pytest.mark.parametrize("policy", ["weighted", "random"])
def test_different_seed_different_anchors(losses: np.ndarray, policy: str) -> None:
    a = select_anchors(losses, 300, policy, rng=1)
    b = select_anchors(losses, 300, policy, rng=2)
    assert not np.array_equal(a.indices, b.indices)


# ---- policies ------------------------------------------------------------------------------------------

def test_top_anchors_are_all_in_top_fraction(losses: np.ndarray) -> None:
    sel = select_anchors(losses, 1000, "top", fraction=0.2, rng=0)
    assert isinstance(sel, AnchorSelection)
    assert sel.indices.shape == (1000,) and sel.indices.dtype == np.int64
    assert sel.pool_size == 100 and len(sel) == 1000
    top = set(np.argsort(-losses)[:100].tolist())
    assert set(sel.indices.tolist()) == top  # every pool member used, nothing else
    counts = np.bincount(sel.indices, minlength=losses.size)[sorted(top)]
    assert counts.min() == counts.max() == 10  # 1000 anchors spread evenly over the pool
    assert sel.mean_loss == pytest.approx(losses[sel.indices].mean())
    assert sel.mean_loss > losses.mean()
    assert not sel.fell_back_to_uniform


def test_top_with_fewer_anchors_than_pool_takes_the_hardest(losses: np.ndarray) -> None:
    sel = select_anchors(losses, 10, "top", fraction=0.2, rng=0)
    np.testing.assert_array_equal(sel.indices, np.argsort(-losses)[:10])


def test_top_uneven_count_gives_remainder_to_hardest() -> None:
    losses = np.array([0.1, 5.0, 3.0, 0.2, 4.0])
    sel = select_anchors(losses, 7, "top", fraction=0.6, rng=0)  # pool = [1, 4, 2]
    np.testing.assert_array_equal(sel.indices, [1, 4, 2, 1, 4, 2, 1])


def test_pool_size_rounding() -> None:
    assert pool_size_for(10, 0.3) == 3  # not 4 from 0.3 * 10 = 3.0000000000000004
    assert pool_size_for(10, 0.01) == 1  # never empty
    assert pool_size_for(7, 1.0) == 7


def test_weighted_prefers_high_loss() -> None:
    losses = np.array([1.0] * 50 + [10.0] * 50)
    sel = select_anchors(losses, 20_000, "weighted", rng=0)
    high = np.isin(sel.indices, np.arange(50, 100)).mean()
    assert high == pytest.approx(10 / 11, abs=0.02)
    sharp = select_anchors(losses, 20_000, "weighted", rng=0, sharpness=2.0)
    assert np.isin(sharp.indices, np.arange(50, 100)).mean() == pytest.approx(100 / 101, abs=0.01)


def test_weighted_never_draws_zero_loss_and_clips_round_off() -> None:
    losses = np.array([0.0, -1e-9, 2.0, 1.0])  # -1e-9: KL round-off, treated as 0
    sel = select_anchors(losses, 2000, "weighted", rng=3)
    assert set(sel.indices.tolist()) == {2, 3}
    assert sel.pool_size == 2


def test_random_is_roughly_uniform_and_matches_top_pool_size(losses: np.ndarray) -> None:
    n = losses.size
    seen = np.zeros(n)
    means = []
    for seed in range(200):
        sel = select_anchors(losses, 500, "random", fraction=0.2, rng=seed)
        assert sel.pool_size == select_anchors(losses, 500, "top", fraction=0.2).pool_size
        seen += np.bincount(sel.indices, minlength=n)
        means.append(sel.mean_loss)
    # Each example expects 200 * 500 / 500 = 200 anchors; binomial sd about 28, so 5 sd is generous.
    assert np.abs(seen - 200).max() < 150
    assert abs(seen.mean() - 200) < 1e-9
    # It ignores the loss: the anchors' mean loss is the set's mean, unlike "top"'s.
    assert np.mean(means) == pytest.approx(losses.mean(), abs=0.05)
    assert select_anchors(losses, 500, "top", fraction=0.2).mean_loss > losses.mean() + 1.0


def test_random_full_fraction_covers_everything_evenly(losses: np.ndarray) -> None:
    sel = select_anchors(losses, 1250, "random", fraction=1.0, rng=0)
    counts = np.bincount(sel.indices, minlength=losses.size)
    assert counts.min() >= 2 and counts.max() <= 3


def test_count_zero_is_empty(losses: np.ndarray) -> None:
    for policy in VALID_POLICIES:
        sel = select_anchors(losses, 0, policy, rng=0)
        assert sel.indices.shape == (0,) and np.isnan(sel.mean_loss)


def test_float32_losses_accepted() -> None:
    sel = select_anchors(np.array([0.5, 2.0, 1.0], dtype=np.float32), 2, "top", fraction=0.5)
    np.testing.assert_array_equal(sel.indices, [1, 2])


def test_balanced_keeps_the_class_shares_and_takes_each_class_hardest() -> None:
    rng = np.random.default_rng(0)
    classes = np.r_[np.zeros(300, int), np.ones(700, int)]
    losses = rng.gamma(2.0, 1.0, size=1000) + 3.0 * (classes == 0)  # class 0, the minority, is the hard one
    top = select_anchors(losses, 1000, "top", fraction=0.2)
    assert np.mean(classes[top.indices] == 0) > 0.7  # a 30% class: what "top" does to the balance
    sel = select_anchors(losses, 1000, "balanced", fraction=0.2, classes=classes)
    assert np.bincount(classes[sel.indices]).tolist() == [300, 700]
    for value, pool in ((0, 60), (1, 140)):  # pool 200 split 30/70
        members = np.flatnonzero(classes == value)
        hardest = members[np.argsort(-losses[members], kind="stable")[:pool]]
        picked = sel.indices[classes[sel.indices] == value]
        assert set(picked.tolist()) == set(hardest.tolist())
        assert np.bincount(picked, minlength=1000)[hardest].tolist() == [5] * pool  # cycled evenly
    # without classes (regression) it is "top", draw for draw
    np.testing.assert_array_equal(select_anchors(losses, 333, "balanced").indices,
                                  select_anchors(losses, 333, "top").indices)
    with pytest.raises(ValueError, match="classes must hold one label per example"):
        select_anchors(losses, 10, "balanced", classes=classes[:5])


# ---- equal losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["top", "weighted"])
def test_equal_losses_fall_back_to_uniform_with_warning(policy: str) -> None:
    losses = np.full(400, 0.7)
    seen = np.zeros(400)
    for seed in range(50):
        with pytest.warns(RuntimeWarning, match="losses are equal.*fall back to uniform"):
            sel = select_anchors(losses, 80, policy, fraction=0.2, rng=seed)
        assert sel.fell_back_to_uniform
        seen += np.bincount(sel.indices, minlength=400)
    # "top" would otherwise always pick the first 80 indices (tie-break by index)
    assert seen[80:].sum() > 0.7 * seen.sum()


def test_all_zero_losses_fall_back() -> None:
    with pytest.warns(RuntimeWarning, match="equal"):
        sel = select_anchors(np.zeros(10), 5, "weighted", rng=0)
    assert sel.indices.shape == (5,) and sel.fell_back_to_uniform


def test_equal_losses_random_policy_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel = select_anchors(np.ones(10), 5, "random", rng=0)
    assert not sel.fell_back_to_uniform


# ---- errors --------------------------------------------------------------------------------------------

def test_unknown_policy_lists_valid_ones(losses: np.ndarray) -> None:
    message = "unknown anchor policy 'hardest'; valid policies: top, weighted, random, balanced"
    with pytest.raises(ValueError, match=message):
        select_anchors(losses, 5, "hardest")


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, float("nan")])
def test_fraction_out_of_range(losses: np.ndarray, fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        select_anchors(losses, 5, "top", fraction=fraction)


def test_negative_count(losses: np.ndarray) -> None:
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        select_anchors(losses, -1)


def test_non_integer_count(losses: np.ndarray) -> None:
    with pytest.raises(TypeError, match="count must be an integer"):
        select_anchors(losses, 2.5)  # type: ignore[arg-type]


def test_nan_losses_name_the_examples() -> None:
    losses = np.ones(20)
    losses[[3, 11]] = np.nan
    with pytest.raises(ValueError, match=re.escape("losses contain NaN at example indices [3, 11]")):
        select_anchors(losses, 5)


def test_many_nan_losses_name_first_few_and_total() -> None:
    losses = np.ones(50)
    losses[10:30] = np.nan
    with pytest.raises(ValueError, match=re.escape("[10, 11, 12, 13, 14, ... (20 in total)]")):
        select_anchors(losses, 5)


def test_inf_losses_name_the_examples() -> None:
    losses = np.ones(5)
    losses[4] = np.inf
    with pytest.raises(ValueError, match=re.escape("losses contain inf at example indices [4]")):
        select_anchors(losses, 2)


def test_weighted_rejects_negative_losses() -> None:
    with pytest.raises(ValueError, match=re.escape("non-negative losses; negative at example indices [1]")):
        select_anchors(np.array([1.0, -0.5, 2.0]), 3, "weighted")


def test_bad_sharpness(losses: np.ndarray) -> None:
    with pytest.raises(ValueError, match="sharpness must be a finite number > 0"):
        select_anchors(losses, 3, "weighted", sharpness=0.0)


def test_losses_must_be_1d() -> None:
    with pytest.raises(ValueError, match=r"losses must be 1-D .* got shape \(2, 2\)"):
        select_anchors(np.ones((2, 2)), 1)


def test_empty_losses() -> None:
    with pytest.raises(ValueError, match="cannot select 3 anchors from an empty loss array"):
        select_anchors(np.array([]), 3)
    assert select_anchors(np.array([]), 0).indices.shape == (0,)
