"""Classification metrics: hand-computed values and scikit-learn cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from discovr.metrics import accuracy, balanced_accuracy, classification_metrics, confusion_matrix, macro_f1


# Three classes; references hold 3 x "a", 2 x "b", 1 x "c".
REFERENCES = ["a", "a", "a", "b", "b", "c"]
PREDICTIONS = ["a", "a", "b", "b", "c", "c"]


def test_hand_computed_values():
    assert confusion_matrix(PREDICTIONS, REFERENCES).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(PREDICTIONS, REFERENCES) == pytest.approx(4 / 6)
    # Recalls 2/3, 1/2, 1.
    assert balanced_accuracy(PREDICTIONS, REFERENCES) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1 = 2TP / (2TP + FP + FN): a 4/5, b 2/4, c 2/3.
    assert macro_f1(PREDICTIONS, REFERENCES) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)


def test_matches_scikit_learn_on_imbalanced_integers():
    rng = np.random.default_rng(0)
    references = rng.choice(4, size=200, p=[0.6, 0.25, 0.1, 0.05])
    predictions = np.where(rng.random(200) < 0.7, references, rng.integers(0, 4, 200))
    results = classification_metrics(predictions, references)
    assert results["accuracy"] == pytest.approx(sk.accuracy_score(references, predictions))
    assert results["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(references, predictions))
    assert results["macro_f1"] == pytest.approx(sk.f1_score(references, predictions, average="macro"))
    np.testing.assert_array_equal(
        confusion_matrix(predictions, references), sk.confusion_matrix(references, predictions)
    )


def test_explicit_labels_fix_order_and_score_absent_classes_zero():
    references = [0, 0, 1]
    predictions = [0, 1, 1]
    assert confusion_matrix(predictions, references, labels=[1, 0, 2]).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    # Class 2 has no support and no predictions: F1 0, as scikit-learn's zero_division default.
    expected = sk.f1_score(references, predictions, labels=[0, 1, 2], average="macro", zero_division=0)
    assert macro_f1(predictions, references, labels=[0, 1, 2]) == pytest.approx(expected)
    assert macro_f1(predictions, references, labels=[0, 1, 2]) < macro_f1(predictions, references)
    # Balanced accuracy ignores classes absent from the references.
    assert balanced_accuracy(predictions, references, labels=[0, 1, 2]) == pytest.approx((1 / 2 + 1) / 2)


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([0, 1], [0], {}, "differ in length"),
        ([], [], {}, "`predictions` is empty"),
        ([[0, 1]], [[0, 1]], {}, "1-D"),
        ([0.0, float("nan")], [0.0, 1.0], {}, "`predictions` contains NaN"),
        ([0, 3], [0, 1], {"labels": [0, 1]}, r"`predictions` contains labels not in `labels`: \[3\]"),
        ([0, 1], [0, 1], {"labels": [0, 0, 1]}, "distinct"),
    ],
)
def test_bad_input_raises(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(predictions, references, **kwargs)
