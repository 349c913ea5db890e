"""LVEF metrics: hand-computed values, scikit-learn cross-checks, bootstrap CIs and offline `evaluate.load`."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

import discovr.metrics as lvef_metrics
from discovr.metrics import (
    DEFAULT_NUM_BOOTSTRAP,
    binary_auroc,
    bootstrap_auroc_ci,
    bootstrap_ci,
    bootstrap_macro_f1_ci,
    macro_f1,
    regression_metrics,
    roc_curve,
)


# Hand example: errors (-2, 5, 10, -5); references mean 40.5, total sum of squares 833.
PREDICTIONS = [60.0, 35.0, 55.0, 20.0]
REFERENCES = [62.0, 30.0, 45.0, 25.0]


@pytest.fixture
def echo_like() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    references = rng.uniform(15, 80, 300)
    # Rounded predictions create ties, which the AUROC must score as one half.
    predictions = np.round(references + rng.normal(0, 6, references.size))
    return predictions, references


def test_hand_computed_values():
    metrics = regression_metrics(PREDICTIONS, REFERENCES)
    assert metrics["mae"] == pytest.approx(22 / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt(154 / 4))
    assert metrics["r2"] == pytest.approx(1 - 154 / 833)
    # HFrEF (reference < 50): 30, 45, 25 with predictions 35, 55, 20; the one negative is predicted 60.
    assert metrics["auroc"] == pytest.approx(1.0)


def test_auroc_ties_count_half():
    # Pairs (positive, negative): 0.35 beats 0.1, loses to 0.4; 0.8 beats both; 0.4 beats 0.1, ties 0.4.
    scores = [0.1, 0.4, 0.35, 0.8, 0.4]
    labels = [False, False, True, True, True]
    assert binary_auroc(scores, labels) == pytest.approx(4.5 / 6)
    assert binary_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_hfref_convention_low_prediction_is_positive():
    references = [30.0, 40.0, 60.0, 70.0]
    assert regression_metrics([30.0, 40.0, 60.0, 70.0], references)["auroc"] == 1.0
    assert regression_metrics([70.0, 60.0, 40.0, 30.0], references)["auroc"] == 0.0
    # A custom threshold moves 60% into the positive class: now 3 positives vs 1 negative.
    assert regression_metrics([30.0, 40.0, 75.0, 70.0], references, hfref_threshold=65.0)["auroc"] == pytest.approx(
        2 / 3
    )


def test_matches_scikit_learn(echo_like):
    predictions, references = echo_like
    metrics = regression_metrics(predictions, references)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(references, predictions))
    assert metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(references, predictions)))
    assert metrics["r2"] == pytest.approx(r2_score(references, predictions))
    assert metrics["auroc"] == pytest.approx(roc_auc_score(references < 50, -predictions))


def test_roc_curve_area_equals_auroc(echo_like):
    predictions, references = echo_like
    fpr, tpr, thresholds = roc_curve(-predictions, references < 50)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) < 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(references < 50, -predictions))


def test_undefined_values_are_nan(caplog):
    with caplog.at_level(logging.WARNING):
        metrics = regression_metrics([60.0, 55.0, 70.0], [62.0, 58.0, 65.0])
    assert math.isnan(metrics["auroc"])
    assert "auroc" in caplog.text
    assert math.isnan(regression_metrics([60.0, 55.0], [50.0, 50.0])["r2"])
    with pytest.raises(ValueError, match="only one class"):
        roc_curve([0.1, 0.2], [True, True])


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([1.0, 2.0], [1.0], "differ in length"),
        ([1.0, float("nan")], [1.0, 2.0], "`predictions` contains 1 NaN"),
        ([1.0, 2.0], [1.0, float("inf")], "`references` contains 1 NaN or infinite"),
        ([], [], "`predictions` is empty"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "must be 1-D"),
        (["a", "b"], [1.0, 2.0], "must hold numbers"),
    ],
)
def test_bad_input_raises(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        regression_metrics(predictions, references)


def test_trainer_shaped_predictions_are_accepted():
    column = np.asarray(PREDICTIONS)[:, None]
    assert regression_metrics(column, REFERENCES) == regression_metrics(PREDICTIONS, REFERENCES)


def test_bootstrap_matches_naive_resampling(echo_like):
    """The count-weighted vectorised bootstrap must equal recomputing each resample explicitly."""
    predictions, references = echo_like[0][:50], echo_like[1][:50]
    num_bootstrap, seed = 200, 7
    intervals = bootstrap_ci(predictions, references, num_bootstrap=num_bootstrap, seed=seed)
    # 200 resamples of 50 videos fit in one block, so the same generator draws the same indices.
    indices = np.random.default_rng(seed).integers(0, 50, size=(num_bootstrap, 50))
    naive = {"mae": [], "rmse": [], "r2": [], "auroc": []}
    for row in indices:
        pred, ref = predictions[row], references[row]
        naive["mae"].append(mean_absolute_error(ref, pred))
        naive["rmse"].append(math.sqrt(mean_squared_error(ref, pred)))
        naive["r2"].append(r2_score(ref, pred))
        naive["auroc"].append(roc_auc_score(ref < 50, -pred))
    for name, values in naive.items():
        expected = np.quantile(values, [0.025, 0.975])
        assert intervals[name] == pytest.approx(tuple(expected), rel=1e-9), name


def test_bootstrap_ci_contains_estimate_and_is_seeded(echo_like):
    predictions, references = echo_like
    point = regression_metrics(predictions, references)
    first = bootstrap_ci(predictions, references, num_bootstrap=300, seed=0)
    assert first == bootstrap_ci(predictions, references, num_bootstrap=300, seed=0)
    assert first != bootstrap_ci(predictions, references, num_bootstrap=300, seed=1)
    for name, (low, high) in first.items():
        assert low < point[name] < high, name
    narrow = bootstrap_ci(predictions, references, num_bootstrap=300, seed=0, confidence_level=0.5)
    assert narrow["mae"][1] - narrow["mae"][0] < first["mae"][1] - first["mae"][0]


def test_bootstrap_spans_several_blocks(echo_like, monkeypatch):
    predictions, references = echo_like
    whole = bootstrap_ci(predictions, references, num_bootstrap=100, seed=3)
    monkeypatch.setattr(lvef_metrics, "_BOOTSTRAP_BLOCK_ELEMENTS", 7 * predictions.size)
    blocked = bootstrap_ci(predictions, references, num_bootstrap=100, seed=3)
    # Blocks draw from one generator in sequence, so the resamples and the intervals are the same.
    for name in whole:
        assert blocked[name] == pytest.approx(whole[name], rel=1e-12), name


def test_bootstrap_skips_resamples_without_both_classes(caplog):
    # One HFrEF video in eight: about a third of resamples miss it and have no AUROC.
    predictions = [30.0, 52.0, 57.0, 61.0, 64.0, 66.0, 70.0, 72.0]
    references = [35.0, 55.0, 58.0, 60.0, 62.0, 67.0, 69.0, 75.0]
    with caplog.at_level(logging.WARNING):
        intervals = bootstrap_ci(predictions, references, num_bootstrap=500, seed=0)
    assert "undefined auroc" in caplog.text
    assert intervals["auroc"] == (1.0, 1.0)
    only_negatives = bootstrap_ci([60.0, 70.0], [65.0, 75.0], num_bootstrap=20, seed=0)
    assert all(math.isnan(bound) for bound in only_negatives["auroc"])


def test_auroc_and_macro_f1_intervals_match_naive_resampling(echo_like):
    """Both count-weighted bootstraps equal recomputing the metric on each explicit resample."""
    predictions, references = echo_like[0][:60], echo_like[1][:60]
    num_bootstrap, seed = 200, 5
    indices = np.random.default_rng(seed).integers(0, 60, size=(num_bootstrap, 60))
    abnormal = references < 50
    naive_auroc = [roc_auc_score(abnormal[row], -predictions[row]) for row in indices]
    assert bootstrap_auroc_ci(-predictions, abnormal, num_bootstrap, seed=seed) == pytest.approx(
        tuple(np.quantile(naive_auroc, [0.025, 0.975])), rel=1e-9)
    # Three classes, so that a resample can lack one: it then scores 0 for it, as `macro_f1` with fixed labels does.
    predicted_class, true_class = np.digitize(predictions, [40, 60]), np.digitize(references, [40, 60])
    naive_f1 = [macro_f1(predicted_class[row], true_class[row], [0, 1, 2]) for row in indices]
    assert bootstrap_macro_f1_ci(predicted_class, true_class, [0, 1, 2], num_bootstrap, seed=seed) == pytest.approx(
        tuple(np.quantile(naive_f1, [0.025, 0.975])), rel=1e-9)


def test_default_resamples_are_echonets():
    assert DEFAULT_NUM_BOOTSTRAP == 10_000
    low, high = bootstrap_macro_f1_ci([0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1], seed=0)
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_bootstrap"):
        bootstrap_ci(PREDICTIONS, REFERENCES, num_bootstrap=0)
    with pytest.raises(ValueError, match="confidence_level"):
        bootstrap_ci(PREDICTIONS, REFERENCES, confidence_level=95)


def test_metric_directory_ships_a_script_named_like_it():
    # `evaluate.load(dir)` looks for dir/<dir name>.py; setup.cfg ships `lvef/*.py` as package data.
    path = lvef_metrics.LVEF_METRIC_PATH
    assert path.parent == Path(lvef_metrics.__file__).resolve().parent
    assert (path / f"{path.name}.py").is_file()


def test_evaluate_load_by_path_offline(monkeypatch, echo_like):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import evaluate

    metric = evaluate.load(str(lvef_metrics.LVEF_METRIC_PATH))
    results = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_bootstrap=0)
    assert results == pytest.approx({**regression_metrics(PREDICTIONS, REFERENCES), "num_samples": 4})

    predictions, references = echo_like
    metric = lvef_metrics.load_lvef_metric()
    for start in range(0, predictions.size, 100):
        metric.add_batch(predictions=predictions[start : start + 100], references=references[start : start + 100])
    results = metric.compute(num_bootstrap=200, seed=5)
    intervals = bootstrap_ci(predictions, references, num_bootstrap=200, seed=5)
    for name, value in regression_metrics(predictions, references).items():
        assert results[name] == pytest.approx(value)
        assert (results[f"{name}_ci_low"], results[f"{name}_ci_high"]) == pytest.approx(intervals[name])
    assert results["num_samples"] == predictions.size
