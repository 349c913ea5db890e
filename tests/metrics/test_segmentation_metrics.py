"""Segmentation metrics: hand-computed Dice and IoU, absent structures, bootstrap intervals and offline `evaluate`."""

from __future__ import annotations

import configparser
import inspect
import logging
import math
from pathlib import Path

import numpy as np
import pytest

import discovr.metrics as metrics
from discovr.metrics import (
    DEFAULT_NUM_BOOTSTRAP,
    SegmentationScores,
    bootstrap_segmentation_ci,
    dice_iou,
    segmentation_metrics,
)


# Sample A: label 1 predicted on 2 pixels, referenced on 1, shared 1; label 2: 2, 3, 2; label 3 in neither map.
# Sample B: two reference pixels are ignored (255). Label 1 then counts 2, 1, 1; label 2 is in neither map; the
# prediction's only label-3 pixel is ignored, so label 3 is referenced on 1 pixel and predicted on none.
PREDICTIONS = np.array([[[1, 1, 0], [2, 2, 0]], [[1, 1, 1], [3, 0, 0]]], dtype=np.uint8)
REFERENCES = np.array([[[1, 0, 0], [2, 2, 2]], [[1, 255, 0], [255, 0, 3]]], dtype=np.uint8)
STRUCTURES = {"lv_cavity": 1, "lv_myocardium": 2, "left_atrium": 3}


@pytest.fixture
def random_maps() -> tuple[np.ndarray, np.ndarray]:
    """60 noisy 16x16 segmentations of a disc (label 1) and a ring (label 2); label 3 appears in some frames."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16]
    radius = np.hypot(x - 7.5, y - 7.5)
    references = np.zeros((60, 16, 16), dtype=np.int64)
    references[:, radius < 4] = 1
    references[:, (radius >= 4) & (radius < 6)] = 2
    references[::3, :2, :2] = 3
    predictions = np.where(rng.random(references.shape) < rng.uniform(0.02, 0.3, (60, 1, 1)),
                           rng.integers(0, 4, references.shape), references)
    return predictions, references


def test_hand_computed_scores_and_absent_structures():
    scores = dice_iou(PREDICTIONS, REFERENCES, STRUCTURES)
    assert scores.structures == ("lv_cavity", "lv_myocardium", "left_atrium")
    assert scores.labels == (1, 2, 3)
    np.testing.assert_array_equal(scores.intersection, [[1, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(scores.predicted, [[2, 2, 0], [2, 0, 0]])
    np.testing.assert_array_equal(scores.reference, [[1, 3, 0], [1, 0, 1]])
    np.testing.assert_allclose(scores.dice, [[2 / 3, 4 / 5, np.nan], [2 / 3, np.nan, 0.0]])
    np.testing.assert_allclose(scores.iou, [[1 / 2, 2 / 3, np.nan], [1 / 2, np.nan, 0.0]])

    means = segmentation_metrics(scores)
    # A structure in neither map of a sample is left out: left atrium is scored on sample B only (Dice 0), where
    # counting sample A's 0/0 as 1 would give 0.5.
    assert means == pytest.approx({
        "dice_lv_cavity": 2 / 3, "iou_lv_cavity": 1 / 2, "pooled_dice_lv_cavity": 2 * 2 / (4 + 2),
        "dice_lv_myocardium": 4 / 5, "iou_lv_myocardium": 2 / 3, "pooled_dice_lv_myocardium": 4 / 5,
        "dice_left_atrium": 0.0, "iou_left_atrium": 0.0, "pooled_dice_left_atrium": 0.0,
    })


def test_ignore_index_none_scores_every_pixel():
    scores = dice_iou(PREDICTIONS[1:], REFERENCES[1:], [1, 3], ignore_index=None)
    assert scores.structures == ("1", "3")
    # Label 1: predicted on 3 pixels, referenced on 1; label 3: predicted at (1, 0), referenced at (1, 2).
    np.testing.assert_allclose(scores.dice, [[2 * 1 / (3 + 1), 0.0]])


def test_leading_axis_chooses_frames_or_videos(random_maps):
    predictions, references = random_maps
    per_frame = dice_iou(predictions, references, [1, 2])
    per_video = dice_iou(predictions.reshape(6, 10, 16, 16), references.reshape(6, 10, 16, 16), [1, 2])
    assert (per_frame.num_samples, per_video.num_samples) == (60, 6)
    # A video's counts are its frames' counts summed, so its Dice pools its pixels.
    np.testing.assert_array_equal(per_video.intersection, per_frame.intersection.reshape(6, 10, 2).sum(axis=1))
    pooled = segmentation_metrics(per_frame)["pooled_dice_1"]
    assert pooled == pytest.approx(segmentation_metrics(per_video)["pooled_dice_1"])
    assert segmentation_metrics(per_frame)["dice_1"] != pytest.approx(pooled)


def test_structure_absent_everywhere_is_nan(caplog):
    with caplog.at_level(logging.WARNING):
        results = segmentation_metrics(dice_iou(PREDICTIONS, REFERENCES, {"right_atrium": 4}))
    assert all(math.isnan(value) for value in results.values())
    assert "right_atrium" in caplog.text
    intervals = bootstrap_segmentation_ci(dice_iou(PREDICTIONS, REFERENCES, [4]), num_bootstrap=10, seed=0)
    assert all(math.isnan(bound) for bounds in intervals.values() for bound in bounds)


def test_bootstrap_matches_naive_resampling(random_maps):
    """The count-weighted bootstrap equals recomputing the means on each explicit resample (NaNs left out)."""
    predictions, references = random_maps
    scores = dice_iou(predictions, references, [1, 2, 3])
    num_bootstrap, seed = 200, 7
    intervals = bootstrap_segmentation_ci(scores, num_bootstrap=num_bootstrap, seed=seed)
    # 200 resamples of 60 samples fit in one block, so the same generator draws the same indices.
    indices = np.random.default_rng(seed).integers(0, 60, size=(num_bootstrap, 60))
    for column, label in enumerate((1, 2, 3)):
        dice = [np.nanmean(scores.dice[row, column]) for row in indices]
        iou = [np.nanmean(scores.iou[row, column]) for row in indices]
        pooled = [2 * scores.intersection[row, column].sum()
                  / (scores.predicted[row, column].sum() + scores.reference[row, column].sum()) for row in indices]
        for name, values in (("dice", dice), ("iou", iou), ("pooled_dice", pooled)):
            expected = tuple(np.quantile(values, [0.025, 0.975]))
            assert intervals[f"{name}_{label}"] == pytest.approx(expected, rel=1e-9), (name, label)


def test_bootstrap_ci_contains_mean_and_is_seeded(random_maps):
    scores = dice_iou(*random_maps, STRUCTURES)
    point = segmentation_metrics(scores)
    first = bootstrap_segmentation_ci(scores, num_bootstrap=300, seed=0)
    assert first.keys() == point.keys()
    assert first == bootstrap_segmentation_ci(scores, num_bootstrap=300, seed=0)
    assert first != bootstrap_segmentation_ci(scores, num_bootstrap=300, seed=1)
    for name, (low, high) in first.items():
        assert low < point[name] < high, name
    narrow = bootstrap_segmentation_ci(scores, num_bootstrap=300, seed=0, confidence_level=0.5)
    width = {name: high - low for name, (low, high) in first.items()}
    assert all(high - low < width[name] for name, (low, high) in narrow.items())


def test_resamples_without_a_structure_are_left_out(caplog):
    # The left atrium is scored in one sample of two: about a quarter of resamples miss it.
    scores = dice_iou(PREDICTIONS, REFERENCES, STRUCTURES)
    with caplog.at_level(logging.WARNING):
        intervals = bootstrap_segmentation_ci(scores, num_bootstrap=400, seed=0)
    assert "undefined dice_left_atrium" in caplog.text
    assert intervals["dice_left_atrium"] == (0.0, 0.0)


def test_default_resamples_are_echonets():
    default = inspect.signature(bootstrap_segmentation_ci).parameters["num_bootstrap"].default
    assert default == DEFAULT_NUM_BOOTSTRAP == 10_000


@pytest.mark.parametrize(
    ("predictions", "references", "labels", "message"),
    [
        (np.zeros((2, 3, 3), int), np.zeros((2, 3, 4), int), [1], r"differ in shape: \(2, 3, 3\) vs \(2, 3, 4\)"),
        (np.zeros(4, int), np.zeros(4, int), [1], "add a leading axis"),
        (np.zeros((0, 3), int), np.zeros((0, 3), int), [1], "at least one sample"),
        (np.zeros((1, 3)), np.zeros((1, 3), int), [1], "`predictions` must hold integer labels"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), [], "`labels` is empty"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), [1, 1], "repeats a label id"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), [1, 255], "ignore_index 255"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), [1.5], "integer label ids"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), "1", "sequence of label ids"),
    ],
)
def test_bad_input_raises(predictions, references, labels, message):
    with pytest.raises(ValueError, match=message):
        dice_iou(predictions, references, labels)


def test_concatenate_checks_structures():
    first = dice_iou(PREDICTIONS[:1], REFERENCES[:1], [1, 2])
    joined = SegmentationScores.concatenate([first, dice_iou(PREDICTIONS[1:], REFERENCES[1:], [1, 2])])
    np.testing.assert_array_equal(joined.dice, dice_iou(PREDICTIONS, REFERENCES, [1, 2]).dice)
    with pytest.raises(ValueError, match="different structures"):
        SegmentationScores.concatenate([first, dice_iou(PREDICTIONS[1:], REFERENCES[1:], [1, 3])])


def test_metric_directory_ships_a_script_named_like_it():
    # `evaluate.load(dir)` looks for dir/<dir name>.py, and the wheel must carry it as package data like `lvef`.
    path = metrics.SEGMENTATION_METRIC_PATH
    assert path.parent == Path(metrics.__file__).resolve().parent
    assert (path / f"{path.name}.py").is_file()
    setup = configparser.ConfigParser()
    setup.read(Path(metrics.__file__).resolve().parents[2] / "setup.cfg")
    shipped = [pattern.strip() for pattern in setup["options.package_data"]["discovr.metrics"].split(",")]
    assert f"{path.name}/*.py" in shipped


def test_evaluate_load_by_path_offline(monkeypatch, random_maps):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import evaluate

    metric = evaluate.load(str(metrics.SEGMENTATION_METRIC_PATH))
    results = metric.compute(predictions=list(PREDICTIONS), references=list(REFERENCES), labels=STRUCTURES,
                             num_bootstrap=0)
    expected = segmentation_metrics(dice_iou(PREDICTIONS, REFERENCES, STRUCTURES))
    assert results == pytest.approx({**expected, "num_samples": 2})

    predictions, references = random_maps
    metric = metrics.load_segmentation_metric()
    for start in range(0, 60, 25):
        metric.add_batch(predictions=predictions[start : start + 25], references=references[start : start + 25])
    # A sample of another size is scored on its own pixels.
    metric.add(prediction=PREDICTIONS[0], reference=REFERENCES[0])
    results = metric.compute(labels=STRUCTURES, num_bootstrap=200, seed=5)
    scores = SegmentationScores.concatenate([dice_iou(predictions, references, STRUCTURES),
                                             dice_iou(PREDICTIONS[:1], REFERENCES[:1], STRUCTURES)])
    intervals = bootstrap_segmentation_ci(scores, num_bootstrap=200, seed=5)
    for name, value in segmentation_metrics(scores).items():
        assert results[name] == pytest.approx(value), name
        assert (results[f"{name}_ci_low"], results[f"{name}_ci_high"]) == pytest.approx(intervals[name]), name
    assert results["num_samples"] == 61

    with pytest.raises(ValueError, match="`labels` is required"):
        metric.compute(predictions=list(PREDICTIONS), references=list(REFERENCES))
