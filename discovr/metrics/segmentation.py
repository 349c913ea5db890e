"""Segmentation overlap metrics: per-structure Dice and IoU per sample, their means and bootstrap intervals.

Plain numpy, like the LVEF metrics. The leading axis of the label maps indexes samples and every other axis
holds pixels, so the caller chooses what a sample is: pass `(frames, H, W)` to score every frame on its own, or
`(videos, T, H, W)` to pool each video's frames into one score per video.

**Absent structures.** Dice = 2|P∩R| / (|P| + |R|) and IoU = |P∩R| / |P∪R| are 0/0 for a sample where a
structure is in neither the prediction nor the (non-ignored part of the) reference. Such a score is undefined:
it is NaN in the per-sample arrays and left out of that structure's mean and of every bootstrap resample's mean,
never counted as 1 or 0. A structure present in only one of the two scores 0. A structure undefined in every
sample has a NaN mean (with a warning).

`dice/dice.py` wraps these functions as an `evaluate` module; `load_segmentation_metric` loads it offline.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

# The package's bootstrap is reused, not duplicated; `discovr.metrics` imports this module after defining it.
from . import DEFAULT_NUM_BOOTSTRAP, _check_level, _percentile_interval, _resample_counts


if TYPE_CHECKING:
    import evaluate

logger = logging.getLogger(__name__)

SEGMENTATION_METRIC_PATH = Path(__file__).resolve().parent / "dice"
"""Directory of the local `evaluate` module; `evaluate.load(str(SEGMENTATION_METRIC_PATH))` loads it."""

DEFAULT_IGNORE_INDEX = 255
"""Reference label of pixels that are not scored, as `DiscovrConfig.semantic_loss_ignore_index`."""

SEGMENTATION_METRIC_NAMES = ("dice", "iou", "pooled_dice")
"""Metrics reported per structure, as `<metric>_<structure>` keys."""


@dataclass(frozen=True)
class SegmentationScores:
    """
    Per-sample, per-structure pixel counts of a set of label maps, from which Dice and IoU follow.

    Attributes:
        structures: structure names, one per column (the label id as a string when no name was given).
        labels: the label id of each structure.
        intersection: `(num_samples, num_structures)` pixels labelled the structure in both prediction and reference.
        predicted: `(num_samples, num_structures)` pixels the prediction labels the structure.
        reference: `(num_samples, num_structures)` pixels the reference labels the structure.
    """

    structures: tuple[str, ...]
    labels: tuple[int, ...]
    intersection: np.ndarray
    predicted: np.ndarray
    reference: np.ndarray

    @property
    def num_samples(self) -> int:
        return self.intersection.shape[0]

    @cached_property
    def dice(self) -> np.ndarray:
        """`(num_samples, num_structures)` Dice, NaN where the structure is in neither map."""
        total = self.predicted + self.reference
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 2.0 * self.intersection / total, np.nan)

    @cached_property
    def iou(self) -> np.ndarray:
        """`(num_samples, num_structures)` IoU (Jaccard), NaN where the structure is in neither map."""
        union = self.predicted + self.reference - self.intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.intersection / union, np.nan)

    @classmethod
    def concatenate(cls, parts: Sequence[SegmentationScores]) -> SegmentationScores:
        """Join the samples of scores computed for the same structures (e.g. maps of different sizes)."""
        if not parts:
            raise ValueError("`parts` is empty.")
        first = parts[0]
        for part in parts[1:]:
            if (part.structures, part.labels) != (first.structures, first.labels):
                raise ValueError(
                    f"Cannot concatenate scores of different structures: {dict(zip(first.structures, first.labels))} "
                    f"vs {dict(zip(part.structures, part.labels))}."
                )
        return cls(
            structures=first.structures,
            labels=first.labels,
            intersection=np.concatenate([part.intersection for part in parts]),
            predicted=np.concatenate([part.predicted for part in parts]),
            reference=np.concatenate([part.reference for part in parts]),
        )


def _structures(
    labels: Mapping[str, int] | Sequence[int], ignore_index: int | None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names and ids of the scored structures, validated."""
    if isinstance(labels, Mapping):
        names, ids = tuple(str(name) for name in labels), tuple(labels.values())
    elif isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise ValueError(f"`labels` must be a sequence of label ids or a {{name: id}} mapping, got {labels!r}.")
    else:
        ids = tuple(labels)
        names = tuple(str(label) for label in ids)
    if not ids:
        raise ValueError("`labels` is empty: name at least one structure to score.")
    if not all(isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in ids):
        raise ValueError(f"`labels` must be integer label ids, got {list(ids)}.")
    ids = tuple(int(label) for label in ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"`labels` repeats a label id: {list(ids)}.")
    if ignore_index is not None and ignore_index in ids:
        raise ValueError(f"`labels` contains the ignore_index {ignore_index}, which is never scored.")
    return names, ids


def _label_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        # Probabilities or logits passed by mistake would otherwise score silently against integer labels.
        raise ValueError(f"`{name}` must hold integer labels (e.g. an argmax), got dtype {array.dtype}.")
    return array


def dice_iou(
    predictions: ArrayLike,
    references: ArrayLike,
    labels: Mapping[str, int] | Sequence[int],
    ignore_index: int | None = DEFAULT_IGNORE_INDEX,
) -> SegmentationScores:
    """Per-sample, per-structure Dice and IoU of integer label maps.

    Args:
        predictions: predicted labels, `(num_samples, ...)`: the leading axis indexes samples (frames or videos),
            the others are pixels.
        references: reference labels, the same shape.
        labels: the structures to score, as label ids or a `{name: id}` mapping (e.g. `{"lv_cavity": 1}`).
        ignore_index: reference label of pixels left out of every count (`None`: score every pixel).

    Returns:
        A `SegmentationScores`; its `dice` and `iou` are `(num_samples, num_structures)`, NaN where a structure
        is absent from both maps of a sample (see the module docstring).
    """
    names, ids = _structures(labels, ignore_index)
    predictions = _label_array(predictions, "predictions")
    references = _label_array(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(f"`predictions` and `references` differ in shape: {predictions.shape} vs {references.shape}.")
    if predictions.ndim < 2 or predictions.shape[0] == 0:
        raise ValueError(
            f"Label maps must be (num_samples, ...pixels) with at least one sample, got shape {predictions.shape}; "
            "add a leading axis for a single map."
        )
    predictions = predictions.reshape(predictions.shape[0], -1)
    references = references.reshape(references.shape[0], -1)
    scored = np.ones(references.shape, dtype=bool) if ignore_index is None else references != ignore_index
    counts = np.empty((3, predictions.shape[0], len(ids)), dtype=np.int64)
    for column, label in enumerate(ids):
        predicted = (predictions == label) & scored
        reference = references == label
        counts[:, :, column] = (predicted & reference).sum(axis=1), predicted.sum(axis=1), reference.sum(axis=1)
    return SegmentationScores(names, ids, *counts)


def _weighted_scores(scores: SegmentationScores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of `weights` (sample multiplicities): `{metric: (rows, num_structures)}`.

    A mean over samples leaves out the samples where the score is undefined; it is NaN where none is defined.
    """
    results = {}
    for name, values in (("dice", scores.dice), ("iou", scores.iou)):
        defined = ~np.isnan(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            results[name] = (weights @ np.where(defined, values, 0.0)) / (weights @ defined)
    # EchoNet-Dynamic's Dice: pixels pooled over all samples, so large structures and frames weigh more.
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_total = weights @ (scores.predicted + scores.reference)
        results["pooled_dice"] = 2.0 * (weights @ scores.intersection) / pooled_total
    return results


def segmentation_metrics(scores: SegmentationScores) -> dict[str, float]:
    """Point estimates over samples of the scores from `dice_iou`.

    Returns:
        For each structure `<s>`: `dice_<s>` and `iou_<s>`, the means over the samples where the structure is in
        either map, and `pooled_dice_<s>`, the Dice of all samples' pixels pooled (as EchoNet-Dynamic reports it).
        A structure in no sample's maps gets NaN, with a warning.
    """
    values = _weighted_scores(scores, np.ones((1, scores.num_samples)))
    metrics = {}
    for column, structure in enumerate(scores.structures):
        for name in SEGMENTATION_METRIC_NAMES:
            metrics[f"{name}_{structure}"] = float(values[name][0, column])
        undefined = int(np.isnan(scores.dice[:, column]).sum())
        if undefined == scores.num_samples:
            logger.warning("Structure %r (label %d) is in no sample's maps; its scores are NaN.",
                           structure, scores.labels[column])
        elif undefined:
            logger.info("Structure %r is absent from both maps in %d of %d samples, left out of its means.",
                        structure, undefined, scores.num_samples)
    return metrics


def bootstrap_segmentation_ci(
    scores: SegmentationScores,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    confidence_level: float = 0.95,
    seed: int | np.random.Generator | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of `segmentation_metrics`, resampling samples with replacement.

    The resampling is `bootstrap_ci`'s (same seeds give the same resamples). A resample in which a structure is
    absent from every sample has no mean for it and is left out of that interval, with a warning.

    Returns:
        `{key: (low, high)}` for every key of `segmentation_metrics(scores)`.
    """
    _check_level(confidence_level)
    blocks = [_weighted_scores(scores, counts) for counts in _resample_counts(scores.num_samples, num_bootstrap, seed)]
    intervals = {}
    for column, structure in enumerate(scores.structures):
        for name in SEGMENTATION_METRIC_NAMES:
            key = f"{name}_{structure}"
            values = np.concatenate([block[name][:, column] for block in blocks])
            intervals[key] = _percentile_interval(values, confidence_level, key)
    return intervals


def load_segmentation_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Load the segmentation `evaluate` metric shipped in this package, by path, so it works offline.

    Keyword arguments go to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`).
    """
    import evaluate

    return evaluate.load(str(SEGMENTATION_METRIC_PATH), **kwargs)
