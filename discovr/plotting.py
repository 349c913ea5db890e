"""Figures of LVEF results, training logs and DISCOVR cluster assignments.

Plotting only reads what runs write: the `predictions.csv` of `discovr-finetune` (columns
`FileName`, `EF`, `prediction`, `num_clips`), JSONL training logs, and model outputs passed in as
arrays. Each `*_figure` function builds a `matplotlib.figure.Figure` (for notebooks and tests);
each `plot_*` function builds it, writes it in every requested format and returns the paths.

Figures are created without `pyplot`, so importing this module never changes the user's
matplotlib backend and PNGs are rendered by Agg.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw, ImageFont

from discovr.metrics import DEFAULT_NUM_BOOTSTRAP, HFREF_THRESHOLD, bootstrap_ci, regression_metrics, roc_curve


logger = logging.getLogger(__name__)

__all__ = [
    "bland_altman_figure",
    "cluster_map_figure",
    "load_predictions_csv",
    "lvef_scatter_figure",
    "plot_bland_altman",
    "plot_cluster_maps",
    "plot_lvef_scatter",
    "plot_roc",
    "plot_training_curves",
    "read_training_log",
    "roc_figure",
    "training_curves_figure",
]

DPI = 150
PREDICTIONS_COLUMNS = ("EF", "prediction")

LvefData = str | os.PathLike | pd.DataFrame | tuple[ArrayLike, ArrayLike]
"""A predictions CSV path, a DataFrame with `EF` and `prediction` columns, or `(predictions, references)`."""

_POINT_COLOR = "#1f5f9e"
_GUIDE_COLOR = "0.45"
_OTHER_COLOR = (0.55, 0.55, 0.55)
# tab20 without its greys (reserved for "other prototypes"), saturated hues first so that the
# most frequent prototypes never share a hue with their light variant.
_CLUSTER_PALETTE = tuple(
    colormaps["tab20"].colors[i] for i in (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19)
)


def _signed(value: float) -> str:
    """Signed number with a typographic minus, matching matplotlib's tick labels."""
    return f"{value:+.2f}".replace("-", "\u2212")


def load_predictions_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read `(predictions, references)` in % from a `predictions.csv` written by `discovr-finetune`."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"Predictions file {path} is empty.") from error
    return _frame_arrays(frame, str(path))


def _frame_arrays(frame: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [column for column in PREDICTIONS_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; found {list(frame.columns)}.")
    if frame.empty:
        raise ValueError(f"{source} has no rows.")
    arrays = {}
    for column in PREDICTIONS_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"{source}: column `{column}` has {bad.size} missing or non-numeric value(s), "
                f"first at row {int(bad[0])}."
            )
        arrays[column] = values
    return arrays["prediction"], arrays["EF"]


def _lvef_arrays(data: LvefData) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, (str, os.PathLike)):
        return load_predictions_csv(data)
    if isinstance(data, pd.DataFrame):
        return _frame_arrays(data, "DataFrame")
    if isinstance(data, tuple) and len(data) == 2:
        predictions, references = (np.asarray(values, dtype=np.float64).reshape(-1) for values in data)
        if predictions.shape != references.shape or predictions.size == 0:
            raise ValueError(
                f"`predictions` and `references` must be non-empty and of equal length, "
                f"got {predictions.size} and {references.size}."
            )
        if not (np.all(np.isfinite(predictions)) and np.all(np.isfinite(references))):
            raise ValueError("`predictions` or `references` contain NaN or infinite values.")
        return predictions, references
    raise ValueError(
        "LVEF data must be a predictions CSV path, a DataFrame with `EF` and `prediction` columns, "
        f"or a `(predictions, references)` tuple; got {type(data).__name__}."
    )


def _save(figure: Figure, out_path: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
    """Write `figure` once per format, replacing the suffix of `out_path`."""
    if isinstance(formats, str) or not formats:
        raise ValueError(f"`formats` must be a non-empty sequence such as ('png', 'svg'), got {formats!r}.")
    supported = figure.canvas.get_supported_filetypes()
    unknown = [fmt for fmt in formats if fmt not in supported]
    if unknown:
        raise ValueError(f"Unsupported figure format(s) {unknown}; choose from {sorted(supported)}.")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_path.with_suffix(f".{fmt}")
        figure.savefig(path, format=fmt, dpi=DPI)
        paths.append(path)
    return paths


def _format_ci(name: str, value: float, interval: tuple[float, float], digits: int, unit: str = "") -> str:
    low, high = interval
    return f"{name} {value:.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"


def _square_limits(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate(arrays)
    low, high = float(values.min()), float(values.max())
    pad = max(2.0, 0.05 * (high - low))
    return math.floor(low - pad), math.ceil(high + pad)


def lvef_scatter_figure(
    data: LvefData,
    *,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int | None = 0,
    hfref_threshold: float = HFREF_THRESHOLD,
) -> Figure:
    """Predicted vs true LVEF with the identity line, the HFrEF threshold on both axes, and metrics with 95% CIs."""
    predictions, references = _lvef_arrays(data)
    metrics = regression_metrics(predictions, references, hfref_threshold)
    intervals = bootstrap_ci(
        predictions, references, num_bootstrap=num_bootstrap, seed=seed, hfref_threshold=hfref_threshold
    )

    figure = Figure(figsize=(6.0, 6.4), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    low, high = _square_limits(predictions, references)
    ax.plot([low, high], [low, high], color="black", linewidth=1.0, label="identity")
    ax.axvline(hfref_threshold, color=_GUIDE_COLOR, linestyle="--", linewidth=0.9, label=f"EF {hfref_threshold:g}%")
    ax.axhline(hfref_threshold, color=_GUIDE_COLOR, linestyle="--", linewidth=0.9)
    alpha = 0.85 if predictions.size <= 200 else 0.5
    ax.scatter(
        references,
        predictions,
        s=14,
        alpha=alpha,
        color=_POINT_COLOR,
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
                _format_ci("MAE", metrics["mae"], intervals["mae"], 2, "%"),
                _format_ci("RMSE", metrics["rmse"], intervals["rmse"], 2, "%"),
            ]
        )
        + "\n"
        + _format_ci("R²", metrics["r2"], intervals["r2"], 3)
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
    return _save(figure, out_path, formats)


def bland_altman_figure(data: LvefData) -> Figure:
    """Bland–Altman plot: mean of predicted and true EF against their difference, with bias and ±1.96 SD limits."""
    predictions, references = _lvef_arrays(data)
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
    ax.scatter(means, differences, s=14, alpha=alpha, color=_POINT_COLOR, edgecolors="none")
    ax.axhline(0.0, color=_GUIDE_COLOR, linewidth=0.8)
    ax.axhline(bias, color="black", linewidth=1.3)
    ax.axhline(upper, color="#b03a2e", linestyle="--", linewidth=1.1)
    ax.axhline(lower, color="#b03a2e", linestyle="--", linewidth=1.1)
    # Labels sit at the right edge, in axes coordinates for x and data coordinates for y.
    transform = blended_transform_factory(ax.transAxes, ax.transData)
    for y, text, color in (
        (bias, f"bias {_signed(bias)}", "black"),
        (upper, f"+1.96 SD {_signed(upper)}", "#b03a2e"),
        (lower, f"−1.96 SD {_signed(lower)}", "#b03a2e"),
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
        f"bias {_signed(bias)}, SD {spread:.2f}, 95% limits of agreement {_signed(lower)} to {_signed(upper)} points",
        fontsize=10,
    )
    return figure


def plot_bland_altman(data: LvefData, out_path: str | os.PathLike, *, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the Bland–Altman plot (see `bland_altman_figure`); returns the written paths."""
    return _save(bland_altman_figure(data), out_path, formats)


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
    predictions, references = _lvef_arrays(data)
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
    ax.plot([0, 1], [0, 1], color=_GUIDE_COLOR, linestyle="--", linewidth=0.9, label="chance")
    ax.plot(fpr, tpr, color=_POINT_COLOR, linewidth=1.8, label=f"AUROC {auroc:.3f} (95% CI {low:.3f}–{high:.3f})")
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
    return _save(figure, out_path, formats)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Pretraining health panels (`discovr/training/health.py` logs these keys): title, y label and the keys drawn.
HEALTH_PANELS = (
    ("teacher entropy", "fraction of ln K", ("video_teacher_entropy", "image_teacher_entropy")),
    ("effective counts", "count", ("scd_code_perplexity", "scd_codes_used", "video_teacher_rankme")),
    ("CLS spread across the batch", "std of unit CLS", ("video_student_cls_std", "video_teacher_cls_std")),
)
HEALTH_KEYS = tuple(key for _, _, keys in HEALTH_PANELS for key in keys)


def read_training_log(jsonl_path: str | os.PathLike) -> pd.DataFrame:
    """Read a JSONL training log into a DataFrame indexed by `step`, with an `lr` column, every `loss*` column
    and every pretraining health column (`HEALTH_KEYS`) present.

    Each line is one JSON object. Lines without `step` (e.g. a final summary) are skipped, and a
    line may lack any loss key or the lr (missing values are NaN). `learning_rate` (the Trainer's
    name) is accepted for `lr`. When a resumed run logs a step again, the last entry wins.
    """
    path = Path(jsonl_path)
    records = []
    skipped = 0
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from error
            if not isinstance(entry, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(entry).__name__}.")
            if not _is_number(entry.get("step")):
                skipped += 1
                continue
            record = {"step": int(entry["step"])}
            lr = entry.get("lr", entry.get("learning_rate"))
            if lr is not None:
                if not _is_number(lr):
                    raise ValueError(f"{path}, line {line_number}: `lr` must be a number, got {lr!r}.")
                record["lr"] = float(lr)
            for key, value in entry.items():
                if key.startswith("loss") or key in HEALTH_KEYS:
                    if not _is_number(value):
                        raise ValueError(f"{path}, line {line_number}: `{key}` must be a number, got {value!r}.")
                    record[key] = float(value)
            records.append(record)
    if skipped:
        logger.info("Skipped %d line(s) without a numeric `step` in %s.", skipped, path)
    loss_keys = sorted({key for record in records for key in record if key.startswith("loss")})
    if not records or not loss_keys:
        raise ValueError(
            f"{path} has no usable rows: need JSON lines with a numeric `step` and at least one `loss*` key."
        )
    if not any("lr" in record for record in records):
        raise ValueError(f"{path} has no `lr` (or `learning_rate`) value on any line with a `step`.")
    health_keys = [key for key in HEALTH_KEYS if any(key in record for record in records)]
    frame = pd.DataFrame.from_records(records, columns=["step", "lr", *loss_keys, *health_keys])
    return frame.drop_duplicates("step", keep="last").set_index("step").sort_index()


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average over the finite entries of `values`."""
    smoothed = np.full_like(values, np.nan)
    average, weight = 0.0, 0.0
    for index, value in enumerate(values):
        if np.isfinite(value):
            average = smoothing * average + (1.0 - smoothing) * value
            weight = smoothing * weight + (1.0 - smoothing)
            smoothed[index] = average / weight
    return smoothed


def training_curves_figure(jsonl_path: str | os.PathLike, *, smoothing: float = 0.0) -> Figure:
    """Loss terms (top panel), the pretraining health metrics the log holds (one panel per `HEALTH_PANELS`
    group), and the learning rate (bottom panel), against optimiser step.

    With `smoothing` in (0, 1) each loss is also drawn as an exponential moving average over
    the raw curve, which is then shown faintly; the legend lists one entry per loss key.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"`smoothing` must be in [0, 1), got {smoothing}.")
    log = read_training_log(jsonl_path)
    loss_keys = [column for column in log.columns if column.startswith("loss")]
    # `loss` (the weighted total) first, then the terms in name order.
    loss_keys.sort(key=lambda key: (key != "loss", key))
    panels = [(title, label, [key for key in keys if key in log.columns]) for title, label, keys in HEALTH_PANELS]
    panels = [panel for panel in panels if panel[2]]

    figure = Figure(figsize=(8.0, 6.0 + 2.0 * len(panels)), dpi=DPI, layout="constrained")
    axes = figure.subplots(2 + len(panels), 1, sharex=True, height_ratios=[3] + [1.6] * len(panels) + [1])
    loss_ax, health_axes, lr_ax = axes[0], axes[1:-1], axes[-1]
    colors = colormaps["tab10"].colors
    for index, key in enumerate(loss_keys):
        series = log[key].dropna()
        color = colors[index % len(colors)]
        steps = series.index.to_numpy()
        values = series.to_numpy()
        if smoothing > 0.0:
            loss_ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8, label=f"_{key} (raw)")
            values = _ema(values, smoothing)
        loss_ax.plot(steps, values, color=color, linewidth=1.6 if key == "loss" else 1.2, label=key)
    loss_ax.set_ylabel("loss")
    loss_ax.grid(alpha=0.25)
    loss_ax.legend(loc="upper right", fontsize=9)
    title = f"Training curves: {Path(jsonl_path).name} ({len(log)} logged steps)"
    if smoothing > 0.0:
        title += f", EMA smoothing {smoothing:g}"
    loss_ax.set_title(title, fontsize=10)

    for ax, (panel_title, label, keys) in zip(health_axes, panels):
        for index, key in enumerate(keys):
            series = log[key].dropna()
            ax.plot(series.index.to_numpy(), series.to_numpy(), color=colors[index], linewidth=1.2, label=key)
        if keys[0].endswith("_entropy"):
            # A teacher at 1 is uniform: no signal for its student (collapse).
            ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8, label="uniform teacher")
            ax.set_ylim(0.0, 1.05)
        ax.set_ylabel(label)
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.25)
        ax.legend(loc="best", fontsize=8)

    lr = log["lr"].dropna()
    lr_ax.plot(lr.index.to_numpy(), lr.to_numpy(), color="black", linewidth=1.2, label="lr")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimiser step")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lr_ax.set_ylim(bottom=0.0)
    lr_ax.grid(alpha=0.25)
    return figure


def plot_training_curves(
    jsonl_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png",),
    smoothing: float = 0.0,
) -> list[Path]:
    """Write the training curves of a JSONL log (see `training_curves_figure`); returns the written paths."""
    return _save(training_curves_figure(jsonl_path, smoothing=smoothing), out_path, formats)


def _frames_to_rgb(frames: ArrayLike) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) uint8/float frames as float RGB in [0, 1]; float input is min-max scaled."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` must have shape (T, H, W) or (T, H, W, 3), got {frames.shape}.")
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"`frames` must be uint8 or floating point, got {frames.dtype}.")
    if not np.all(np.isfinite(frames)):
        raise ValueError("`frames` contain NaN or infinite values.")
    # Floats may be normalised model inputs of any range; only their relative brightness matters here.
    low, high = float(frames.min()), float(frames.max())
    return ((frames - low) / (high - low if high > low else 1.0)).astype(np.float32)


def _check_assignments(values: ArrayLike, name: str, num_prototypes: int | None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 3:
        raise ValueError(f"`{name}` must have shape (T_tok, h, w), got {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer prototype indices, got dtype {array.dtype}.")
    if array.min() < 0 or (num_prototypes is not None and array.max() >= num_prototypes):
        limit = f"[0, {num_prototypes})" if num_prototypes is not None else "non-negative"
        raise ValueError(f"`{name}` has indices in [{array.min()}, {array.max()}], outside {limit}.")
    return array.astype(np.int64)


class _ClusterMaps:
    """Upsampled, colour-coded assignments shared by the PNG grid and the GIF."""

    def __init__(
        self,
        frames: ArrayLike,
        assignments: ArrayLike,
        predicted_assignments: ArrayLike | None,
        num_prototypes: int | None,
        alpha: float,
        max_colors: int,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha}.")
        if not 1 <= max_colors <= len(_CLUSTER_PALETTE):
            raise ValueError(f"`max_colors` must be in [1, {len(_CLUSTER_PALETTE)}], got {max_colors}.")
        self.frames = _frames_to_rgb(frames)
        self.rows = {"image teacher": _check_assignments(assignments, "assignments", num_prototypes)}
        if predicted_assignments is not None:
            predicted = _check_assignments(predicted_assignments, "predicted_assignments", num_prototypes)
            if predicted.shape != self.rows["image teacher"].shape:
                raise ValueError(
                    f"`predicted_assignments` shape {predicted.shape} differs from `assignments` "
                    f"shape {self.rows['image teacher'].shape}."
                )
            self.rows["video prediction"] = predicted
        num_frames, height, width = self.frames.shape[:3]
        num_tubelets, grid_h, grid_w = self.rows["image teacher"].shape
        if num_frames % num_tubelets:
            raise ValueError(
                f"{num_frames} frames cannot be split into {num_tubelets} tubelets of equal length; "
                "`assignments` must have T // tubelet time steps."
            )
        self.tubelet = num_frames // num_tubelets
        self.num_prototypes = num_prototypes
        self.alpha = alpha

        # Colours go to the prototypes used most in this video, so the visible structure gets
        # distinct hues; the long tail is grey. Both rows share the table so they compare directly.
        used, counts = np.unique(np.concatenate([row.ravel() for row in self.rows.values()]), return_counts=True)
        ranked = used[np.lexsort((used, -counts))]
        self.top_prototypes = ranked[:max_colors]
        self.num_other = int(ranked.size - self.top_prototypes.size)
        self.share = {int(p): float(c) / counts.sum() for p, c in zip(used, counts, strict=True)}
        lookup = np.tile(np.asarray(_OTHER_COLOR, dtype=np.float32), (int(used.max()) + 1, 1))
        lookup[self.top_prototypes] = np.asarray(_CLUSTER_PALETTE[: self.top_prototypes.size], dtype=np.float32)

        # Nearest-neighbour upsampling from the token grid to the frame size.
        row_index = (np.arange(height) * grid_h) // height
        col_index = (np.arange(width) * grid_w) // width
        self.colors = {name: lookup[row[:, row_index][:, :, col_index]] for name, row in self.rows.items()}

    def overlay(self, name: str, frame_index: int) -> np.ndarray:
        color = self.colors[name][frame_index // self.tubelet]
        return (1.0 - self.alpha) * self.frames[frame_index] + self.alpha * color

    def agreement(self) -> float | None:
        if "video prediction" not in self.rows:
            return None
        return float(np.mean(self.rows["image teacher"] == self.rows["video prediction"]))


def cluster_map_figure(
    frames: ArrayLike,
    assignments: ArrayLike,
    predicted_assignments: ArrayLike | None = None,
    *,
    num_prototypes: int | None = None,
    num_columns: int = 6,
    alpha: float = 0.45,
    max_colors: int = 12,
) -> Figure:
    """Grid of frames (top row) and prototype assignments overlaid on them (one row per assignment array).

    Args:
        frames: video of shape (T, H, W) or (T, H, W, 3), uint8 or float (float is min-max scaled).
        assignments: image-teacher prototype index per token, shape (T_tok, h, w) with
            T_tok = T // tubelet; each slice covers `tubelet` frames and is shown on its first frame.
            A flat (T_tok·h·w,) code vector in DISCOVR's time-major token order reshapes to this.
        predicted_assignments: optional second array of the same shape, e.g. the argmax of the
            video decoder's prototype scores.
        num_prototypes: number of prototypes K; when given, indices are checked to be < K.
        num_columns: time steps shown, spread evenly over the tubelets.
        alpha: opacity of the colour overlay.
        max_colors: the most frequent prototypes get distinct colours; the rest are grey.
    """
    maps = _ClusterMaps(frames, assignments, predicted_assignments, num_prototypes, alpha, max_colors)
    return _cluster_map_figure(maps, num_columns)


def _cluster_map_figure(maps: _ClusterMaps, num_columns: int) -> Figure:
    if num_columns < 1:
        raise ValueError(f"`num_columns` must be >= 1, got {num_columns}.")
    num_tubelets = maps.rows["image teacher"].shape[0]
    tubelets = np.unique(np.linspace(0, num_tubelets - 1, min(num_columns, num_tubelets)).round().astype(int))
    row_names = ["frame", *maps.rows]

    panel = 1.7
    figure = Figure(figsize=(panel * len(tubelets) + 0.6, panel * len(row_names) + 1.5), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(row_names), len(tubelets), squeeze=False)
    for column, tubelet_index in enumerate(tubelets):
        frame_index = int(tubelet_index) * maps.tubelet
        for row, name in enumerate(row_names):
            ax = axes[row, column]
            image = maps.frames[frame_index] if name == "frame" else maps.overlay(name, frame_index)
            ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {frame_index}", fontsize=9)
            if column == 0:
                ax.set_ylabel(name, fontsize=9)

    handles = []
    for color, prototype in zip(_CLUSTER_PALETTE, maps.top_prototypes, strict=False):
        share = 100 * maps.share[int(prototype)]
        handles.append(
            Patch(color=color, label=f"#{prototype} ({share:.0f}%)" if share >= 1 else f"#{prototype} (<1%)")
        )
    if maps.num_other:
        handles.append(Patch(color=_OTHER_COLOR, label=f"{maps.num_other} other prototypes"))
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 7),
        fontsize=7.5,
        frameon=False,
        title="prototype (share of tokens)",
        title_fontsize=8,
    )

    used = len(maps.top_prototypes) + maps.num_other
    title = f"DISCOVR cluster assignments: {used} prototypes used"
    if maps.num_prototypes is not None:
        title += f" of K = {maps.num_prototypes}"
    title += f", tubelet = {maps.tubelet} frames"
    agreement = maps.agreement()
    if agreement is not None:
        title += f"\nvideo prediction matches the image-teacher cluster on {100 * agreement:.1f}% of tokens"
    figure.suptitle(title, fontsize=10)
    return figure


def _to_uint8(image: np.ndarray, scale: int) -> np.ndarray:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _write_cluster_gif(maps: _ClusterMaps, out_gif: Path, fps: float) -> Path:
    """Animate every frame as side-by-side panels: the frame, then each overlay, labelled on top."""
    num_frames, height = maps.frames.shape[:2]
    # Echo frames are small (112 px); upscale by an integer factor so the GIF is legible.
    scale = max(1, math.ceil(224 / height))
    names = ["frame", *maps.rows]
    gap, header = 4, 18
    font = ImageFont.load_default(size=13)
    images = []
    for frame_index in range(num_frames):
        panels = [_to_uint8(maps.frames[frame_index], scale)]
        panels += [_to_uint8(maps.overlay(name, frame_index), scale) for name in maps.rows]
        panel_h, panel_w = panels[0].shape[:2]
        canvas = Image.new("RGB", (len(panels) * panel_w + (len(panels) - 1) * gap, panel_h + header), "white")
        draw = ImageDraw.Draw(canvas)
        for position, (name, panel) in enumerate(zip(names, panels, strict=True)):
            left = position * (panel_w + gap)
            canvas.paste(Image.fromarray(panel), (left, header))
            label = f"{name} {frame_index + 1}/{num_frames}" if name == "frame" else name
            draw.text((left + 3, 3), label, fill="black", font=font)
        images.append(canvas)
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out_gif, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return out_gif


def plot_cluster_maps(
    frames: ArrayLike,
    assignments: ArrayLike,
    out_png: str | os.PathLike,
    out_gif: str | os.PathLike | None = None,
    num_prototypes: int | None = None,
    *,
    predicted_assignments: ArrayLike | None = None,
    num_columns: int = 6,
    alpha: float = 0.45,
    max_colors: int = 12,
    fps: float = 8.0,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write the cluster-map grid (see `cluster_map_figure`) and, if `out_gif` is given, an animated GIF.

    The GIF has one frame per video frame, showing the frame and each overlay side by side at
    `fps` frames per second. Returns the written paths, the GIF last.
    """
    if fps <= 0:
        raise ValueError(f"`fps` must be positive, got {fps}.")
    maps = _ClusterMaps(frames, assignments, predicted_assignments, num_prototypes, alpha, max_colors)
    paths = _save(_cluster_map_figure(maps, num_columns), out_png, formats)
    if out_gif is not None:
        paths.append(_write_cluster_gif(maps, Path(out_gif), fps))
    return paths
