"""Segmentation figures: the LV area curve with its detected beats, and a strip of frames with their masks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from .common import DPI, POINT_COLOR, save_figure

# Label colours in CAMUS order after the background: LV cavity, LV myocardium, left atrium.
STRUCTURE_COLORS = ((0.85, 0.2, 0.2), (0.2, 0.65, 0.3), (0.25, 0.45, 0.9))
ED_COLOR, ES_COLOR = "#b03a2e", "#1f5f9e"


def area_curve_figure(
    areas: ArrayLike,
    fps: float | None,
    ed_frames: Sequence[int] = (),
    es_frames: Sequence[int] = (),
    title: str = "",
    beat_efs: Sequence[float] = (),
) -> Figure:
    """The LV cavity area of every frame, ED frames marked by triangles up and ES frames by triangles down; each
    beat's EF, when given, is written above its ED frame."""
    areas = np.asarray(areas, dtype=float)
    if areas.ndim != 1 or areas.size == 0:
        raise ValueError(f"`areas` must be a non-empty 1-D array, got shape {areas.shape}")
    time = np.arange(areas.size) / fps if fps else np.arange(areas.size)
    figure = Figure(figsize=(8.0, 3.2), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.plot(time, areas, color=POINT_COLOR, linewidth=1.2)
    ax.scatter(time[list(ed_frames)], areas[list(ed_frames)], marker="^", color=ED_COLOR, zorder=3, label="ED")
    ax.scatter(time[list(es_frames)], areas[list(es_frames)], marker="v", color=ES_COLOR, zorder=3, label="ES")
    for frame, ef in zip(ed_frames, beat_efs):
        ax.annotate(f"EF {ef:.0f}%", (time[frame], areas[frame]), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_ylabel("LV cavity area (pixels)")
    ax.grid(alpha=0.25)
    if len(ed_frames) or len(es_frames):
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"LV area, {len(ed_frames)} ED and {len(es_frames)} ES frames detected", fontsize=10)
    return figure


def plot_area_curve(areas: ArrayLike, fps: float | None, out_path: str | os.PathLike, *,
                    formats: Sequence[str] = ("png",), **kwargs) -> list[Path]:
    """Write [`area_curve_figure`]; returns the written paths."""
    return save_figure(area_curve_figure(areas, fps, **kwargs), out_path, formats)


def overlay_masks(frame: np.ndarray, label_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB float image in [0, 1]: a grey or RGB uint8 `frame` with each structure of `label_map` tinted."""
    image = np.asarray(frame, dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"frame {image.shape[:2]} and label map {label_map.shape} differ in size")
    for label, color in enumerate(STRUCTURE_COLORS, start=1):
        inside = label_map == label
        image[inside] = (1.0 - alpha) * image[inside] + alpha * np.asarray(color, dtype=np.float32)
    return image


def overlay_strip_figure(
    frames: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], captions: Sequence[str]
) -> Figure:
    """Frames side by side with their masks over them, one caption each."""
    if not len(frames) == len(label_maps) == len(captions) or not len(frames):
        raise ValueError("frames, label_maps and captions must be as many, and at least one")
    height, width = np.asarray(label_maps[0]).shape
    panel = 2.0
    figure = Figure(figsize=(panel * len(frames), panel * height / width + 0.35), dpi=DPI, layout="constrained")
    for index, (frame, label_map, caption) in enumerate(zip(frames, label_maps, captions), start=1):
        ax = figure.add_subplot(1, len(frames), index)
        ax.imshow(overlay_masks(frame, np.asarray(label_map)), interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.set_axis_off()
    return figure


def plot_overlay_strip(frames: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], captions: Sequence[str],
                       out_path: str | os.PathLike, *, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write [`overlay_strip_figure`]; returns the written paths."""
    return save_figure(overlay_strip_figure(frames, label_maps, captions), out_path, formats)


__all__ = [
    "area_curve_figure", "overlay_masks", "overlay_strip_figure", "plot_area_curve", "plot_overlay_strip",
]
