"""Classification metrics for the paper's kNN and linear-probe protocols, in numpy.

Labels may be integers or strings. Conventions follow scikit-learn so numbers are comparable
with published tables: the confusion matrix has references as rows, balanced accuracy averages
the recall of the classes present in the references, and macro-F1 averages over every label
that occurs in either array (or the given `labels`), scoring 0 for a class with no support at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


__all__ = [
    "accuracy", "balanced_accuracy", "classification_metrics", "confusion_cells", "confusion_matrix", "f1_per_class",
    "macro_f1",
]


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of class labels, got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite labels.")
    return array


def confusion_cells(
    predictions: ArrayLike, references: ArrayLike, labels: Sequence | None = None
) -> tuple[np.ndarray, int]:
    """Each sample's cell of the confusion matrix, `reference_index * C + prediction_index`, and the class count C.

    `labels` defaults to the sorted union of both arrays; a label outside a given `labels` is an error.
    """
    predictions = _as_labels(predictions, "predictions")
    references = _as_labels(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(f"`predictions` and `references` differ in length: {predictions.size} vs {references.size}.")
    if labels is None:
        classes = np.unique(np.concatenate([references, predictions]))
    else:
        classes = np.asarray(labels)
        if classes.ndim != 1 or classes.size == 0 or np.unique(classes).size != classes.size:
            raise ValueError("`labels` must be a non-empty sequence of distinct class labels.")
    index = {label: position for position, label in enumerate(classes.tolist())}
    for name, array in (("predictions", predictions), ("references", references)):
        unknown = set(np.unique(array).tolist()) - index.keys()
        if unknown:
            raise ValueError(f"`{name}` contains labels not in `labels`: {sorted(unknown, key=str)}.")
    rows = np.array([index[label] for label in references.tolist()])
    cols = np.array([index[label] for label in predictions.tolist()])
    return rows * classes.size + cols, classes.size


def confusion_matrix(predictions: ArrayLike, references: ArrayLike, labels: Sequence | None = None) -> np.ndarray:
    """Count matrix `C[i, j]` = number of samples with reference `labels[i]` predicted as `labels[j]`.

    `labels` defaults to the sorted union of both arrays; a label outside a given `labels` is an error.
    """
    cells, num_classes = confusion_cells(predictions, references, labels)
    return np.bincount(cells, minlength=num_classes * num_classes).astype(np.int64).reshape(num_classes, num_classes)


def f1_per_class(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2·TP / (2·TP + FP + FN) of confusion matrices `(..., C, C)` (references as rows); a class absent
    from both arrays (only possible with explicit `labels`) has F1 = 0, as in scikit-learn."""
    true_pos = np.diagonal(matrix, axis1=-2, axis2=-1).astype(np.float64)
    denominator = matrix.sum(axis=-2) + matrix.sum(axis=-1)
    return np.divide(2.0 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)


def accuracy(predictions: ArrayLike, references: ArrayLike) -> float:
    """Fraction of samples whose prediction equals the reference."""
    matrix = confusion_matrix(predictions, references)
    return float(np.trace(matrix) / matrix.sum())


def balanced_accuracy(predictions: ArrayLike, references: ArrayLike, labels: Sequence | None = None) -> float:
    """Mean recall over the classes present in `references`, robust to class imbalance."""
    matrix = confusion_matrix(predictions, references, labels)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def macro_f1(predictions: ArrayLike, references: ArrayLike, labels: Sequence | None = None) -> float:
    """Unweighted mean of the per-class F1 ([`f1_per_class`])."""
    return float(f1_per_class(confusion_matrix(predictions, references, labels)).mean())


def classification_metrics(
    predictions: ArrayLike, references: ArrayLike, labels: Sequence | None = None
) -> dict[str, float]:
    """`{"accuracy", "balanced_accuracy", "macro_f1"}` of predicted vs reference class labels."""
    return {
        "accuracy": accuracy(predictions, references),
        "balanced_accuracy": balanced_accuracy(predictions, references, labels),
        "macro_f1": macro_f1(predictions, references, labels),
    }
