"""DISCOVR cluster maps: the prototype of every token drawn over the clip's frames, as a grid and a GIF."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw, ImageFont

from .common import DPI, save_figure


_OTHER_COLOR = (0.55, 0.55, 0.55)
# tab20 without its greys (reserved for "other prototypes"), saturated hues first so that the
# most frequent prototypes never share a hue with their light variant.
_CLUSTER_PALETTE = tuple(
    colormaps["tab20"].colors[i] for i in (0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19)
)


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
    paths = save_figure(_cluster_map_figure(maps, num_columns), out_png, formats)
    if out_gif is not None:
        paths.append(_write_cluster_gif(maps, Path(out_gif), fps))
    return paths
