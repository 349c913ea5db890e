"""Predicted against reference LVEF, with the error metrics and their bootstrap intervals."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..metrics import DEFAULT_NUM_BOOTSTRAP, HFREF_THRESHOLD, bootstrap_ci, regression_metrics
from .common import DPI, GUIDE_COLOR, POINT_COLOR, LvefData, format_ci, lvef_arrays, save_figure, square_limits


def lvef_scatter_figure(
    data: LvefData,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int | None = 0,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> Figure:
    """Predicted vs true LVEF with the identity line, the HFrEF threshold on both axes, and metrics with 95% CIs."""
    predictions, references = lvef_arrays(data)
    metrics = regression_metrics(predictions, references, hfref_threshold)
    intervals = bootstrap_ci(
        predictions, references, num_bootstrap=num_bootstrap, seed=seed, hfref_threshold=hfref_threshold
    )

    figure = Figure(figsize=(6.0, 6.4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    low, high = square_limits(predictions, references)
    ax.plot([low, high], [low, high], color="black", linewidth=1.0, label="identity")
    ax.axvline(hfref_threshold, color=GUIDE_COLOR, linestyle="--", linewidth=0.9, label=f"EF {hfref_threshold:g}%")
    ax.axhline(hfref_threshold, color=GUIDE_COLOR, linestyle="--", linewidth=0.9)
    alpha = 0.85 if predictions.size <= 200 else 0.5
    ax.scatter(
        references,
        predictions,
        s=14,
        alpha=alpha,
        color=POINT_COLOR,
        edgecolors="none",
        label=f"videos (n = {predictions.size})",
    )
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal")
    ax.set_xlabel("True LVEF (%)")
    ax.set_ylabel("Predicted LVEF (%)")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", frameon=False)
    ax.set_title(
        f"Predicted vs true LVEF (n = {predictions.size})\n"
        + "   ".join(
            [
                format_ci("MAE", metrics["mae"], intervals["mae"], 2, "%"),
                format_ci("RMSE", metrics["rmse"], intervals["rmse"], 2, "%"),
            ]
        )
        + "\n"
        + format_ci("R²", metrics["r2"], intervals["r2"], 3)
        + f"   [95% bootstrap CIs, {num_bootstrap} resamples]",
        fontsize=10,
    )
    return figure


def plot_lvef_scatter(
    data: LvefData,
    out_path: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png",),
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int | None = 0,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> list[Path]:
    """Write the LVEF scatter plot (see `lvef_scatter_figure`); returns the written paths."""
    figure = lvef_scatter_figure(data, num_bootstrap=num_bootstrap, seed=seed, hfref_threshold=hfref_threshold)
    return save_figure(figure, out_path, formats)
