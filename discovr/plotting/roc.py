"""ROC of detecting reduced EF (HFrEF) from the predicted LVEF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..metrics import DEFAULT_NUM_BOOTSTRAP, HFREF_THRESHOLD, bootstrap_ci, regression_metrics, roc_curve
from .common import DPI, GUIDE_COLOR, POINT_COLOR, LvefData, lvef_arrays, save_figure


def roc_figure(
    data: LvefData,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int | None = 0,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> Figure:
    """ROC curve for detecting HFrEF (true EF below the threshold) from the predicted EF, with AUROC and 95% CI.

    The operating point of the clinical rule "predicted EF below the threshold" is marked on the curve.
    """
    predictions, references = lvef_arrays(data)
    positive = references < hfref_threshold
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(
            f"The ROC for EF < {hfref_threshold:g}% needs videos on both sides of the threshold; "
            f"got {num_pos} below and {num_neg} at or above."
        )
    fpr, tpr, _ = roc_curve(-predictions, positive)
    auroc = regression_metrics(predictions, references, hfref_threshold)["auroc"]
    low, high = bootstrap_ci(
        predictions, references, num_bootstrap=num_bootstrap, seed=seed, hfref_threshold=hfref_threshold
    )["auroc"]
    called = predictions < hfref_threshold
    sensitivity = float(called[positive].mean())
    specificity = float((~called[~positive]).mean())

    figure = Figure(figsize=(5.8, 6.0), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color=GUIDE_COLOR, linestyle="--", linewidth=0.9, label="chance")
    ax.plot(fpr, tpr, color=POINT_COLOR, linewidth=1.8, label=f"AUROC {auroc:.3f} (95% CI {low:.3f}–{high:.3f})")
    ax.plot(
        1.0 - specificity,
        sensitivity,
        "o",
        color="#b03a2e",
        markersize=7,
        label=f"predicted EF < {hfref_threshold:g}%: sens {sensitivity:.2f}, spec {specificity:.2f}",
    )
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.grid(alpha=0.25)
    ax.legend(loc="lower right", fontsize=8.5)
    ax.set_title(
        f"ROC for HFrEF (true EF < {hfref_threshold:g}%) from predicted EF\n"
        f"n = {positive.size}: {num_pos} HFrEF, {num_neg} not",
        fontsize=10,
    )
    return figure


def plot_roc(
    data: LvefData,
    out_path: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png",),
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int | None = 0,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> list[Path]:
    """Write the HFrEF ROC curve (see `roc_figure`); returns the written paths."""
    figure = roc_figure(data, num_bootstrap=num_bootstrap, seed=seed, hfref_threshold=hfref_threshold)
    return save_figure(figure, out_path, formats)
