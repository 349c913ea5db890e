"""LVEF regression metrics with bootstrap confidence intervals, and classification metrics.

Everything here is plain numpy so that training code, plotting and notebooks can use it
without importing `evaluate`. The `evaluate` module in `lvef/lvef.py` wraps
`regression_metrics` and `bootstrap_ci`; `load_lvef_metric` loads it offline by path. Segmentation overlap
(Dice, IoU) lives in `segmentation`, wrapped by `dice/dice.py` and loaded by `load_segmentation_metric`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .classification import (
    accuracy,
    balanced_accuracy,
    classification_metrics,
    confusion_cells,
    confusion_matrix,
    f1_per_class,
    macro_f1,
)


if TYPE_CHECKING:
    import evaluate

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "DEFAULT_NUM_BOOTSTRAP",
    "HFREF_THRESHOLD",
    "METRIC_NAMES",
    "LVEF_METRIC_PATH",
    "SEGMENTATION_METRIC_NAMES",
    "SEGMENTATION_METRIC_PATH",
    "SegmentationScores",
    "accuracy",
    "balanced_accuracy",
    "binary_auroc",
    "bootstrap_auroc_ci",
    "bootstrap_ci",
    "bootstrap_macro_f1_ci",
    "bootstrap_segmentation_ci",
    "classification_metrics",
    "confusion_matrix",
    "dice_iou",
    "load_lvef_metric",
    "load_segmentation_metric",
    "macro_f1",
    "regression_metrics",
    "roc_curve",
    "segmentation_metrics",
]

HFREF_THRESHOLD = 50.0
"""EF (%) below which a heart is counted as HFrEF, the positive class of the AUROC."""

METRIC_NAMES = ("mae", "rmse", "r2", "auroc")

LVEF_METRIC_PATH = Path(__file__).resolve().parent / "lvef"
"""Directory of the local `evaluate` module; `evaluate.load(str(LVEF_METRIC_PATH))` loads it."""

# Bootstrap resamples are evaluated in blocks whose (resamples, n) count matrix has about this
# many entries, which bounds memory to tens of MB even for 10,000 resamples of a large test set.
_BOOTSTRAP_BLOCK_ELEMENTS = 1_000_000

DEFAULT_NUM_BOOTSTRAP = 10_000
"""Resamples of every bootstrap confidence interval by default, as in EchoNet-Dynamic."""


def _as_1d(values: ArrayLike, name: str, dtype: type = np.float64) -> np.ndarray:
    """Validate a 1-D array of finite numbers; a trailing singleton axis (Trainer regression outputs) is dropped."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (or of shape (n, 1)), got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty.")
    try:
        array = array.astype(dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must hold numbers, got dtype {array.dtype}.") from error
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s).")
    return array


def _validate_pair(predictions: ArrayLike, references: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    predictions = _as_1d(predictions, "predictions")
    references = _as_1d(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(f"`predictions` and `references` differ in length: {predictions.size} vs {references.size}.")
    return predictions, references


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the order that sorts `scores` and the start index of each run of equal scores in that order."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    return order, starts


def _weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each row of `weights` (multiplicities of the samples), NaN where a class has zero weight.

    This is the Mann-Whitney statistic with ties counted as one half: for every tie group,
    positives score against the negative weight strictly below it plus half the tied negatives.
    With unit weights it equals the rank-based AUROC; with bootstrap counts it is the AUROC of
    the resample, computed without materialising it.
    """
    order, starts = _tie_groups(scores)
    ordered = weights[:, order]
    positive = labels[order]
    pos_per_group = np.add.reduceat(np.where(positive, ordered, 0.0), starts, axis=1)
    neg_per_group = np.add.reduceat(np.where(positive, 0.0, ordered), starts, axis=1)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    total_pos = pos_per_group.sum(axis=1)
    total_neg = neg_per_group.sum(axis=1)
    wins = np.sum(pos_per_group * (neg_below + 0.5 * neg_per_group), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = wins / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auroc, np.nan)


def _weighted_metrics(
    predictions: np.ndarray, references: np.ndarray, weights: np.ndarray, hfref_threshold: float
) -> dict[str, np.ndarray]:
    """MAE, RMSE, R² and HFrEF AUROC for each row of `weights` (sample multiplicities summing to n)."""
    total = weights.sum(axis=1)
    error = predictions - references
    mae = weights @ np.abs(error) / total
    rmse = np.sqrt(weights @ error**2 / total)
    ref_mean = weights @ references / total
    # Centre on the full-sample mean before squaring so the total sum of squares does not
    # suffer cancellation when EF values are large compared to their spread.
    centred = references - references.mean()
    spread = weights @ centred**2
    ss_tot = spread - total * (ref_mean - references.mean()) ** 2
    ss_res = weights @ error**2
    # A resample of one repeated video has ss_tot equal to zero up to rounding; R² is undefined there.
    defined = ss_tot > 1e-12 * spread
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(defined, 1.0 - ss_res / np.where(defined, ss_tot, 1.0), np.nan)
    # Lower predicted EF means more likely HFrEF, so the score is the negated prediction.
    auroc = _weighted_auroc(-predictions, references < hfref_threshold, weights)
    return {"mae": mae, "rmse": rmse, "r2": r2, "auroc": auroc}


def _validate_scores(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_1d(scores, "scores")
    labels = _as_1d(labels, "labels", dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError(f"`scores` and `labels` differ in length: {scores.size} vs {labels.size}.")
    return scores, labels


def binary_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of `scores` for boolean `labels` (True = positive), ties counted as 1/2.

    Returns NaN (with a warning) when only one class is present, where the AUROC is undefined.
    """
    scores, labels = _validate_scores(scores, labels)
    auroc = float(_weighted_auroc(scores, labels, np.ones((1, scores.size)))[0])
    if np.isnan(auroc):
        logger.warning("AUROC is undefined: `labels` contain only one class; returning NaN.")
    return auroc


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of `scores` for boolean `labels`: (false positive rate, true positive rate, thresholds).

    A sample is called positive when its score is >= the threshold. The curve starts at (0, 0)
    with threshold +inf and has one point per distinct score, so its trapezoidal area equals
    `binary_auroc`. Raises `ValueError` when a class is absent.
    """
    scores, labels = _validate_scores(scores, labels)
    num_pos = int(labels.sum())
    num_neg = labels.size - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError("ROC curve is undefined: `labels` contain only one class.")
    order, starts = _tie_groups(-scores)
    ends = np.r_[starts[1:], scores.size] - 1
    true_pos = np.cumsum(labels[order])[ends]
    false_pos = (ends + 1) - true_pos
    fpr = np.r_[0.0, false_pos / num_neg]
    tpr = np.r_[0.0, true_pos / num_pos]
    thresholds = np.r_[np.inf, scores[order][starts]]
    return fpr, tpr, thresholds


def regression_metrics(
    predictions: ArrayLike, references: ArrayLike, hfref_threshold: float = HFREF_THRESHOLD
) -> dict[str, float]:
    """Point estimates of LVEF regression quality.

    Args:
        predictions: predicted EF in %, shape (n,) or (n, 1).
        references: true EF in %, same length.
        hfref_threshold: EF below which a reference counts as HFrEF (positive class of the AUROC).

    Returns:
        `{"mae", "rmse", "r2", "auroc"}`. R² is NaN when all references are equal; the AUROC
        (positive class: reference EF < threshold, score: -prediction) is NaN when one class is absent.
    """
    predictions, references = _validate_pair(predictions, references)
    values = _weighted_metrics(predictions, references, np.ones((1, predictions.size)), hfref_threshold)
    metrics = {name: float(value[0]) for name, value in values.items()}
    for name in ("r2", "auroc"):
        if np.isnan(metrics[name]):
            logger.warning("%s is undefined for these references (one class or constant EF); reporting NaN.", name)
    return metrics


def _resample_counts(num_samples: int, num_bootstrap: int, seed: int | np.random.Generator | None):
    """Blocks of (resamples, num_samples) multiplicities: how often each sample appears in each resample."""
    if num_bootstrap < 1:
        raise ValueError(f"`num_bootstrap` must be >= 1, got {num_bootstrap}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // num_samples)
    for start in range(0, num_bootstrap, block):
        rows = min(block, num_bootstrap - start)
        indices = rng.integers(0, num_samples, size=(rows, num_samples))
        offsets = (indices + num_samples * np.arange(rows)[:, None]).ravel()
        yield np.bincount(offsets, minlength=rows * num_samples).reshape(rows, num_samples).astype(np.float64)


def _percentile_interval(values: np.ndarray, confidence_level: float, name: str) -> tuple[float, float]:
    """The (1 ± level)/2 quantiles of the resampled `values`, leaving out resamples where `name` is undefined."""
    valid = values[~np.isnan(values)]
    if valid.size < values.size:
        logger.warning(
            "%d of %d bootstrap resamples have an undefined %s and are excluded from its interval.",
            values.size - valid.size, values.size, name,
        )
    if valid.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(valid, [tail, 1.0 - tail])
    return float(low), float(high)


def _check_level(confidence_level: float) -> None:
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"`confidence_level` must be in (0, 1), got {confidence_level}.")


def bootstrap_ci(
    predictions: ArrayLike,
    references: ArrayLike,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence_level: float = 0.95,
    seed: int | np.random.Generator | None = None,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of `regression_metrics`.

    Videos are resampled with replacement `num_bootstrap` times (10,000 by default, as in EchoNet-Dynamic),
    each metric is recomputed per resample, and the interval is the (1 ± level)/2 quantiles.

    A resample can miss one HFrEF class entirely, where the AUROC is undefined. Such resamples
    are left out of the AUROC interval only, which is the same as redrawing them until both
    classes appear; a warning reports how many. If no resample has both classes, the AUROC
    interval is (NaN, NaN). R² is handled the same way for resamples with constant references.

    Returns:
        `{metric: (low, high)}` for each of `METRIC_NAMES`.
    """
    predictions, references = _validate_pair(predictions, references)
    _check_level(confidence_level)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for counts in _resample_counts(predictions.size, num_bootstrap, seed):
        for name, value in _weighted_metrics(predictions, references, counts, hfref_threshold).items():
            samples[name].append(value)
    return {
        name: _percentile_interval(np.concatenate(samples[name]), confidence_level, name) for name in METRIC_NAMES
    }


def bootstrap_auroc_ci(
    scores: ArrayLike,
    labels: ArrayLike,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence_level: float = 0.95,
    seed: int | np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `binary_auroc(scores, labels)`, resampling samples with replacement;
    resamples holding one class only are left out, as in `bootstrap_ci`."""
    scores, labels = _validate_scores(scores, labels)
    _check_level(confidence_level)
    values = np.concatenate([
        _weighted_auroc(scores, labels, counts) for counts in _resample_counts(scores.size, num_bootstrap, seed)
    ])
    return _percentile_interval(values, confidence_level, "auroc")


def bootstrap_macro_f1_ci(
    predictions: ArrayLike,
    references: ArrayLike,
    labels: Sequence | None = None,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence_level: float = 0.95,
    seed: int | np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `macro_f1(predictions, references, labels)`, resampling samples with
    replacement. `labels` (default: every class in either array) stays fixed across resamples."""
    cells, num_classes = confusion_cells(predictions, references, labels)
    _check_level(confidence_level)
    # A resample's confusion matrix is its sample multiplicities summed per cell.
    one_hot = np.eye(num_classes * num_classes)[cells]
    values = [
        f1_per_class((counts @ one_hot).reshape(-1, num_classes, num_classes)).mean(axis=-1)
        for counts in _resample_counts(cells.size, num_bootstrap, seed)
    ]
    return _percentile_interval(np.concatenate(values), confidence_level, "macro_f1")


def load_lvef_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Load the LVEF `evaluate` metric shipped in this package, by path, so it works offline.

    Keyword arguments go to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`).
    """
    import evaluate

    return evaluate.load(str(LVEF_METRIC_PATH), **kwargs)


# Last, because the segmentation metrics reuse the bootstrap defined above.
from .segmentation import (  # noqa: E402
    DEFAULT_IGNORE_INDEX,
    SEGMENTATION_METRIC_NAMES,
    SEGMENTATION_METRIC_PATH,
    SegmentationScores,
    bootstrap_segmentation_ci,
    dice_iou,
    load_segmentation_metric,
    segmentation_metrics,
)
