"""Bland-Altman agreement of predicted and reference LVEF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from .common import DPI, GUIDE_COLOR, POINT_COLOR, LvefData, lvef_arrays, save_figure, signed


def bland_altman_figure(data: LvefData) -> Figure:
    """Bland–Altman plot: mean of predicted and true EF against their difference, with bias and ±1.96 SD limits."""
    predictions, references = lvef_arrays(data)
    if predictions.size < 2:
        raise ValueError("A Bland–Altman plot needs at least 2 videos to estimate the spread of the differences.")
    means = (predictions + references) / 2.0
    differences = predictions - references
    bias = float(differences.mean())
    spread = float(differences.std(ddof=1))
    lower, upper = bias - 1.96 * spread, bias + 1.96 * spread

    figure = Figure(figsize=(7.0, 5.0), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    alpha = 0.85 if predictions.size <= 200 else 0.5
    ax.scatter(means, differences, s=14, alpha=alpha, color=POINT_COLOR, edgecolors="none")
    ax.axhline(0.0, color=GUIDE_COLOR, linewidth=0.8)
    ax.axhline(bias, color="black", linewidth=1.3)
    ax.axhline(upper, color="#b03a2e", linestyle="--", linewidth=1.1)
    ax.axhline(lower, color="#b03a2e", linestyle="--", linewidth=1.1)
    # Labels sit at the right edge, in axes coordinates for x and data coordinates for y.
    transform = blended_transform_factory(ax.transAxes, ax.transData)
    for y, text, color in (
        (bias, f"bias {signed(bias)}", "black"),
        (upper, f"+1.96 SD {signed(upper)}", "#b03a2e"),
        (lower, f"−1.96 SD {signed(lower)}", "#b03a2e"),
    ):
        ax.text(
            0.99,
            y,
            text,
            transform=transform,
            ha="right",
            va="bottom",
            color=color,
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5},
        )
    reach = max(float(np.abs(differences - bias).max()), 1.96 * spread) * 1.15
    ax.set_ylim(bias - reach, bias + reach)
    ax.set_xlabel("Mean of predicted and true LVEF (%)")
    ax.set_ylabel("Predicted − true LVEF (percentage points)")
    ax.grid(alpha=0.25)
    ax.set_title(
        f"Bland–Altman: predicted vs true LVEF (n = {predictions.size})\n"
        f"bias {signed(bias)}, SD {spread:.2f}, 95% limits of agreement {signed(lower)} to {signed(upper)} points",
        fontsize=10,
    )
    return figure


def plot_bland_altman(data: LvefData, out_path: str | os.PathLike, *, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the Bland–Altman plot (see `bland_altman_figure`); returns the written paths."""
    return save_figure(bland_altman_figure(data), out_path, formats)
