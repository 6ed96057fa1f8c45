"""Offline GLUE metrics must equal the reference implementations evaluate's glue metric uses."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score
from sklearn.metrics import matthews_corrcoef as sk_mcc
from transformers import EvalPrediction

from sage_hf.data.metrics import (
    METRIC_KEYS,
    accuracy,
    add_combined_score,
    f1_positive,
    glue_compute_metrics,
    make_compute_metrics,
    matthews_corrcoef,
    pearson_corrcoef,
    spearman_corrcoef,
)

RNG = np.random.default_rng(1234)
BIN_REFS = RNG.integers(0, 2, size=257)
BIN_PREDS = np.where(RNG.random(257) < 0.8, BIN_REFS, 1 - BIN_REFS)
TRI_REFS = RNG.integers(0, 3, size=301)
TRI_PREDS = np.where(RNG.random(301) < 0.6, TRI_REFS, RNG.integers(0, 3, size=301))
SCORES = RNG.uniform(0, 5, size=199).round(1)  # rounding creates ties for Spearman
PRED_SCORES = (SCORES + RNG.normal(0, 1.0, size=199)).round(1)

TOL = 1e-9


def test_accuracy_matches_sklearn() -> None:
    assert accuracy(BIN_PREDS, BIN_REFS) == pytest.approx(accuracy_score(BIN_REFS, BIN_PREDS), abs=TOL)
    assert accuracy(TRI_PREDS, TRI_REFS) == pytest.approx(accuracy_score(TRI_REFS, TRI_PREDS), abs=TOL)


def test_f1_matches_sklearn() -> None:
    assert f1_positive(BIN_PREDS, BIN_REFS) == pytest.approx(f1_score(BIN_REFS, BIN_PREDS), abs=TOL)
    # No positives anywhere: scikit-learn's zero_division default gives 0.
    zeros = np.zeros(5, dtype=int)
    assert f1_positive(zeros, zeros) == f1_score(zeros, zeros, zero_division=0.0) == 0.0
    ones = np.ones(5, dtype=int)
    assert f1_positive(ones, BIN_REFS[:5]) == pytest.approx(f1_score(BIN_REFS[:5], ones), abs=TOL)


@pytest.mark.parametrize(
    "preds, refs",
    [
        (BIN_PREDS, BIN_REFS),
        (TRI_PREDS, TRI_REFS),
        (1 - BIN_REFS, BIN_REFS),  # perfectly wrong: -1
        (BIN_REFS, BIN_REFS),  # perfect: +1
        (np.array([2, 2, 0, 1]), np.array([0, 1, 2, 2])),  # label values absent from one side
    ],
)
def test_mcc_matches_sklearn(preds: np.ndarray, refs: np.ndarray) -> None:
    assert matthews_corrcoef(preds, refs) == pytest.approx(sk_mcc(refs, preds), abs=TOL)


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn, on the all-zero case
@pytest.mark.parametrize(
    "preds, refs",
    [
        (np.ones(10, dtype=int), BIN_REFS[:10]),  # a collapsed classifier
        (BIN_PREDS[:10], np.zeros(10, dtype=int)),  # a single-class reference set
        (np.zeros(4, dtype=int), np.zeros(4, dtype=int)),
    ],
)
def test_mcc_constant_is_zero_not_nan(preds: np.ndarray, refs: np.ndarray) -> None:
    ours = matthews_corrcoef(preds, refs)
    assert ours == 0.0 and not math.isnan(ours)
    assert ours == sk_mcc(refs, preds)


def test_correlations_match_scipy() -> None:
    assert pearson_corrcoef(PRED_SCORES, SCORES) == pytest.approx(pearsonr(PRED_SCORES, SCORES)[0], abs=TOL)
    assert spearman_corrcoef(PRED_SCORES, SCORES) == pytest.approx(spearmanr(PRED_SCORES, SCORES)[0], abs=TOL)
    assert pearson_corrcoef(-SCORES, SCORES) == pytest.approx(-1.0, abs=TOL)


def test_constant_correlation_is_zero_not_nan() -> None:
    constant = np.full(len(SCORES), 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(pearsonr(constant, SCORES)[0])  # scipy's answer, which would poison model selection
    assert pearson_corrcoef(constant, SCORES) == 0.0
    assert spearman_corrcoef(constant, SCORES) == 0.0


def test_glue_compute_metrics_keys_match_evaluate() -> None:
    assert glue_compute_metrics("cola", TRI_PREDS % 2, TRI_REFS % 2).keys() == {"matthews_correlation"}
    assert glue_compute_metrics("mrpc", BIN_PREDS, BIN_REFS).keys() == {"accuracy", "f1"}
    assert glue_compute_metrics("qqp", BIN_PREDS, BIN_REFS).keys() == {"accuracy", "f1"}
    assert glue_compute_metrics("stsb", PRED_SCORES, SCORES).keys() == {"pearson", "spearmanr"}
    for task in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte"):
        assert glue_compute_metrics(task, TRI_PREDS, TRI_REFS).keys() == {"accuracy"}
    for task, keys in METRIC_KEYS.items():
        refs = SCORES if task == "stsb" else BIN_REFS[:199]
        preds = PRED_SCORES if task == "stsb" else BIN_PREDS[:199]
        assert tuple(glue_compute_metrics(task, preds, refs)) == keys


def test_glue_compute_metrics_values() -> None:
    mrpc = glue_compute_metrics("mrpc", BIN_PREDS, BIN_REFS)
    assert mrpc["accuracy"] == pytest.approx(accuracy_score(BIN_REFS, BIN_PREDS), abs=TOL)
    assert mrpc["f1"] == pytest.approx(f1_score(BIN_REFS, BIN_PREDS), abs=TOL)
    cola = glue_compute_metrics("cola", BIN_PREDS, BIN_REFS)
    assert cola["matthews_correlation"] == pytest.approx(sk_mcc(BIN_REFS, BIN_PREDS), abs=TOL)
    stsb = glue_compute_metrics("stsb", PRED_SCORES, SCORES)
    assert stsb["pearson"] == pytest.approx(pearsonr(PRED_SCORES, SCORES)[0], abs=TOL)
    assert stsb["spearmanr"] == pytest.approx(spearmanr(PRED_SCORES, SCORES)[0], abs=TOL)
    assert all(type(v) is float for v in {**mrpc, **cola, **stsb}.values())


def test_evaluate_documented_examples() -> None:
    """The examples from evaluate's glue metric card."""
    assert glue_compute_metrics("mrpc", [0, 1], [0, 1]) == {"accuracy": 1.0, "f1": 1.0}
    assert glue_compute_metrics("sst2", [0, 1], [0, 1]) == {"accuracy": 1.0}
    stsb = glue_compute_metrics("stsb", [-10.0, -11.0, -12.0, -13.0, -14.0, -15.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert stsb == pytest.approx({"pearson": -1.0, "spearmanr": -1.0}, abs=TOL)
    assert glue_compute_metrics("cola", [1, 1], [0, 1]) == {"matthews_correlation": 0.0}


def test_task_aliases() -> None:
    assert glue_compute_metrics("SST-2", [1], [1]) == {"accuracy": 1.0}
    assert glue_compute_metrics("mnli-mm", [1], [0]) == {"accuracy": 0.0}
    assert glue_compute_metrics("STS-B", [1.0, 2.0], [1.0, 3.0]) == pytest.approx({"pearson": 1.0, "spearmanr": 1.0})


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"Unknown GLUE metric task 'wnli'; valid tasks: cola, sst2, mrpc"):
        glue_compute_metrics("wnli", [0], [0])
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        glue_compute_metrics("rte", [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=r"got shape \(2, 3\); for raw logits use make_compute_metrics"):
        glue_compute_metrics("mnli", np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="zero examples"):
        glue_compute_metrics("rte", [], [])


def test_add_combined_score() -> None:
    assert add_combined_score({"accuracy": 0.5, "f1": 1.0}) == {"accuracy": 0.5, "f1": 1.0, "combined_score": 0.75}
    assert add_combined_score({"accuracy": 0.5}) == {"accuracy": 0.5}


def test_make_compute_metrics_classification() -> None:
    logits = RNG.normal(size=(len(BIN_REFS), 2))
    preds = logits.argmax(-1)
    out = make_compute_metrics("mrpc")(EvalPrediction(predictions=logits, label_ids=BIN_REFS))
    assert out["accuracy"] == pytest.approx(accuracy_score(BIN_REFS, preds), abs=TOL)
    assert out["f1"] == pytest.approx(f1_score(BIN_REFS, preds), abs=TOL)
    assert out["combined_score"] == pytest.approx((out["accuracy"] + out["f1"]) / 2, abs=TOL)
    # Models returning extra outputs hand the Trainer a tuple; logits come first.
    tupled = make_compute_metrics("mrpc")(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=BIN_REFS))
    assert tupled == out
    mnli = make_compute_metrics("mnli_matched")((RNG.normal(size=(len(TRI_REFS), 3)), TRI_REFS))
    assert mnli.keys() == {"accuracy"}


def test_make_compute_metrics_regression() -> None:
    prediction = EvalPrediction(predictions=PRED_SCORES[:, None], label_ids=SCORES.astype(np.float32))
    out = make_compute_metrics("stsb")(prediction)
    assert out["pearson"] == pytest.approx(pearsonr(PRED_SCORES, SCORES.astype(np.float32))[0], abs=1e-6)
    assert out["combined_score"] == pytest.approx((out["pearson"] + out["spearmanr"]) / 2, abs=TOL)
    single = make_compute_metrics("stsb")(EvalPrediction(predictions=np.array([[3.0]]), label_ids=np.array([2.0])))
    assert single == {"pearson": 0.0, "spearmanr": 0.0, "combined_score": 0.0}


def test_make_compute_metrics_cola_collapsed_model() -> None:
    """A student predicting one class must score 0, not NaN, so best-model tracking keeps working."""
    logits = np.tile([[0.0, 1.0]], (len(BIN_REFS), 1))
    out = make_compute_metrics("cola")(EvalPrediction(predictions=logits, label_ids=BIN_REFS))
    assert out == {"matthews_correlation": 0.0}
