"""What every figure shares: the style, the saving, and the reading of LVEF predictions."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


DPI = 150
PREDICTIONS_COLUMNS = ("EF", "prediction")

LvefData = str | os.PathLike | pd.DataFrame | tuple[ArrayLike, ArrayLike]
"""A predictions CSV path, a DataFrame with `EF` and `prediction` columns, or `(predictions, references)`."""

POINT_COLOR = "#1f5f9e"
GUIDE_COLOR = "0.45"


def signed(value: float) -> str:
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


def lvef_arrays(data: LvefData) -> tuple[np.ndarray, np.ndarray]:
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


def save_figure(figure: Figure, out_path: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
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


def format_ci(name: str, value: float, interval: tuple[float, float], digits: int, unit: str = "") -> str:
    low, high = interval
    return f"{name} {value:.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"


def square_limits(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate(arrays)
    low, high = float(values.min()), float(values.max())
    pad = max(2.0, 0.05 * (high - low))
    return math.floor(low - pad), math.ceil(high + pad)
