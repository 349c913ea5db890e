"""Losses, learning rate and health metrics of a training log (JSONL)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from .common import DPI, save_figure


logger = logging.getLogger(__name__)


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
    return save_figure(training_curves_figure(jsonl_path, smoothing=smoothing), out_path, formats)
