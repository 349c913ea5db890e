"""
LV cavity masks from EchoNet tracings (`VolumeTracings.csv`).

EchoNet-Dynamic traces each ED and ES frame as a long axis followed by chords across it (method of discs);
EchoNet-Pediatric as the points of the outline. The cavity of a traced frame is the polygon EchoNet itself draws:
for Dynamic the chord ends walked down the (X1, Y1) side and back up the (X2, Y2) side, the long-axis row left out
(the parsing is `manifests.py`'s, which picks the ED and ES frames from the same polygons' areas).

Pixel convention: tracing coordinates are pixel coordinates of the frame, x to the right and y down, and pixel
(row r, column c) is the unit square centred on x = c, y = r. A pixel belongs to the mask when its centre lies
inside the polygon or on its outline: the result of scikit-image's `skimage.draw.polygon` (0.26), pixel for pixel
(checked on 7,000 random polygons), so the masks are those of EchoNet's own segmentation code without needing
scikit-image. EchoNet rounds the vertices to whole pixels first (`round_vertices=True`, the default here); the
mask of a polygon with whole-pixel vertices then also holds the centres on its outline, so it is about half a
perimeter larger than the polygon's area.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .errors import ManifestError
from .manifests import (
    ECHONET_TRACING_COLUMNS,
    PEDIATRIC_TRACING_COLUMNS,
    _echonet_polygon,
    _names,
    _pediatric_polygon,
    _polygon_area,
    _stem,
    _tracing_table,
)


# A coordinate further than this share of the frame size beyond the frame's edges is not a generous outline but a
# tracing in other coordinates (such as the original, larger image), so it is refused rather than clipped.
OUTSIDE_TOLERANCE = 0.1


@dataclass(frozen=True)
class _Layout:
    """How one tracing layout is read: its columns, its outline and the fewest rows that outline an area."""

    columns: list[str]
    polygon: Callable[[pd.DataFrame], np.ndarray]
    x_columns: tuple[str, ...]
    y_columns: tuple[str, ...]
    min_rows: int
    min_rows_reason: str


ECHONET_LAYOUT = _Layout(
    ECHONET_TRACING_COLUMNS, _echonet_polygon, ("X1", "X2"), ("Y1", "Y2"), 3, "the long axis and at least 2 chords"
)
PEDIATRIC_LAYOUT = _Layout(PEDIATRIC_TRACING_COLUMNS, _pediatric_polygon, ("X",), ("Y",), 3, "at least 3 points")


def polygon_mask(polygon: ArrayLike, height: int, width: int, round_vertices: bool = False) -> np.ndarray:
    """
    Boolean `(height, width)` mask of the pixels whose centre lies inside `polygon` or on its outline.

    Args:
        polygon: `(N, 2)` vertices as (x, y) pixel coordinates (x = column, y = row, pixel centres at integers).
            Parts outside the frame are clipped.
        height: mask height.
        width: mask width.
        round_vertices: round the vertices to whole pixels first, as EchoNet does before rasterising.
    """
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if round_vertices:
        points = np.rint(points)
    mask = np.zeros((height, width), dtype=bool)
    if len(points) < 3:
        return mask
    x, y = points[:, 0], points[:, 1]
    # Only the centres in the polygon's bounding box can be inside it.
    c0, c1 = max(0, math.ceil(x.min())), min(width - 1, math.floor(x.max()))
    r0, r1 = max(0, math.ceil(y.min())), min(height - 1, math.floor(y.max()))
    if c0 > c1 or r0 > r1:
        return mask
    cols = np.arange(c0, c1 + 1, dtype=np.float64)[None, :]
    rows = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    inside = np.zeros((rows.size, cols.size), dtype=bool)
    on_edges = np.zeros_like(inside)
    vertices = np.zeros_like(inside)
    tolerance = 1e-9 * max(1.0, float(np.abs(points).max())) ** 2
    for x0, y0, x1, y1 in zip(x, y, np.roll(x, 1), np.roll(y, 1)):
        # Even-odd rule: count the edges crossed by a ray from the centre towards +x (half-open in y, so a vertex
        # on the ray is counted once).
        if y0 != y1:
            spans = (min(y0, y1) <= rows) & (rows < max(y0, y1))
            inside ^= spans & (cols < x0 + (x1 - x0) * (rows - y0) / (y1 - y0))
        is_vertex = (cols == x0) & (rows == y0)
        vertices |= is_vertex
        cross = (x1 - x0) * (rows - y0) - (y1 - y0) * (cols - x0)
        within = (min(x0, x1) <= cols) & (cols <= max(x0, x1)) & (min(y0, y1) <= rows) & (rows <= max(y0, y1))
        # Parity, not "any edge": a centre where the outline crosses itself (on two edges) counts as outside, as
        # in scikit-image, so the masks agree with EchoNet's pixel for pixel.
        on_edges ^= (np.abs(cross) <= tolerance) & within & ~is_vertex & ~((cols == x1) & (rows == y1))
    mask[r0 : r1 + 1, c0 : c1 + 1] = inside | on_edges | vertices
    return mask


def _frame_outline(
    rows: pd.DataFrame, frame: float, layout: _Layout, height: int, width: int, num_frames: int
) -> tuple[np.ndarray | None, list[str]]:
    """One traced frame's outline, or `None` with why it cannot give a mask. A size or frame count below 1 is
    unknown."""
    problems = []
    if not float(frame).is_integer() or frame < 0:
        problems.append("a frame number that is not a whole number >= 0")
    elif num_frames > 0 and frame >= num_frames:
        problems.append(f"a frame beyond the video's {num_frames} frames")
    if len(rows) < layout.min_rows:
        problems.append(f"{len(rows)} row(s) (need {layout.min_rows_reason})")
        return None, problems
    for columns, size, axis, unit in ((layout.x_columns, width, "x", "columns"), (layout.y_columns, height, "y", "rows")):
        values = rows[list(columns)].to_numpy(float)
        if size > 0:
            margin = OUTSIDE_TOLERANCE * size
            low, high = float(values.min()), float(values.max())
            if low < -0.5 - margin or high > size - 0.5 + margin:
                problems.append(f"{axis} from {low:g} to {high:g}, far outside the frame's {size} {unit}")
    polygon = layout.polygon(rows)
    if _polygon_area(polygon[:, 0], polygon[:, 1]) <= 0:
        problems.append("an outline that encloses no area")
    return (None if problems else polygon), problems


def _video_polygons(
    rows: pd.DataFrame, layout: _Layout, height: int, width: int, num_frames: int
) -> tuple[dict[int, np.ndarray], list[str]]:
    """Outline of every traced frame of one video, and the problems found (`frame N: reason`)."""
    polygons, problems = {}, []
    for frame, frame_rows in rows.groupby("Frame", sort=False):
        polygon, found = _frame_outline(frame_rows, frame, layout, height, width, num_frames)
        if polygon is None:
            problems += [f"frame {frame:g}: {reason}" for reason in found]
        else:
            polygons[int(frame)] = polygon
    return polygons, problems


def _tracing_polygons(
    tracings: pd.DataFrame,
    layout: _Layout,
    source: Path,
    sizes: Mapping[str, tuple[int, int, int]],
) -> dict[str, dict[int, np.ndarray]]:
    """
    Outlines per video stem and traced frame, for the videos in `sizes` (stem -> (height, width, num_frames)).

    Every bad traced frame (too few rows, coordinates far outside the frame, no area, a frame number outside the
    video) is a problem, and one `ManifestError` names the file and each video and frame: a mask is never dropped
    in silence. Tracings of videos not in `sizes` are ignored.
    """
    result, problems = {}, []
    for stem, rows in tracings[tracings["stem"].isin(list(sizes))].groupby("stem", sort=False):
        height, width, num_frames = sizes[stem]
        polygons, found = _video_polygons(rows, layout, height, width, num_frames)
        if height < 1 or width < 1:
            found.append("has no frame size (FrameHeight, FrameWidth) to rasterise in")
        if found:
            name = rows["FileName"].iloc[0]
            problems += [f"{name} {reason}" for reason in found]
        else:
            result[stem] = polygons
    if problems:
        message = f"{source}: {len(problems)} tracing problem(s) that leave no mask: {_names(problems)}"
        raise ManifestError(message, problems)
    return result


def _attach_polygons(frame: pd.DataFrame, stems: pd.Series, tracings: pd.DataFrame | None, source: Path) -> None:
    """Add `ed_polygon` / `es_polygon` (lists of [x, y]) to a `load_echonet_dynamic` table, in place."""
    if tracings is None:
        raise ManifestError(f"masks=True needs the tracings, and {source} was not found", [f"missing file {source}"])
    sizes = {stem: (h, w, n) for stem, h, w, n in zip(stems, frame["height"], frame["width"], frame["num_frames"])}
    polygons = _tracing_polygons(tracings, ECHONET_LAYOUT, source, sizes)
    for phase in ("ed", "es"):
        frame[f"{phase}_polygon"] = [
            polygons.get(stem, {}).get(index, np.zeros((0, 2))).astype(np.float32).tolist()
            for stem, index in zip(stems, frame[f"{phase}_frame"])
        ]


def _tracing_masks(
    tracings_csv: str | os.PathLike, file_name: str, height: int, width: int, layout: _Layout, round_vertices: bool
) -> dict[int, np.ndarray]:
    path = Path(tracings_csv)
    if not path.is_file():
        raise ManifestError(f"Tracings file not found: {path}", [f"missing file {path}"])
    tracings = _tracing_table(path, layout.columns)
    stem = _stem(file_name)
    rows = tracings[tracings["stem"] == stem]
    if rows.empty:
        raise ManifestError(f"{path} has no tracings for {file_name}", [f"no tracings for {file_name}"])
    polygons = _tracing_polygons(rows, layout, path, {stem: (height, width, 0)})[stem]
    return {frame: polygon_mask(polygon, height, width, round_vertices) for frame, polygon in polygons.items()}


def echonet_tracing_masks(
    tracings_csv: str | os.PathLike, file_name: str, height: int, width: int, round_vertices: bool = True
) -> dict[int, np.ndarray]:
    """
    Cavity masks of every traced frame of one EchoNet-Dynamic video: frame index -> boolean `(height, width)`.

    Reads the whole CSV; for many videos, use `load_echonet_dynamic(root, masks=True)` and [`echonet_row_masks`].

    Args:
        tracings_csv: a `VolumeTracings.csv` (`FileName, X1, Y1, X2, Y2, Frame`).
        file_name: the video, with or without `.avi`.
        height: frame height (`FrameHeight` in `FileList.csv`).
        width: frame width (`FrameWidth`).
        round_vertices: round the vertices to whole pixels first, as EchoNet does.

    Raises:
        ManifestError: no such file, no tracing of the video, or a bad traced frame (too few rows, missing
            coordinates, coordinates far outside the frame, no area), naming the file, video and frame.
    """
    return _tracing_masks(tracings_csv, file_name, height, width, ECHONET_LAYOUT, round_vertices)


def pediatric_tracing_masks(
    tracings_csv: str | os.PathLike, file_name: str, height: int, width: int, round_vertices: bool = True
) -> dict[int, np.ndarray]:
    """As [`echonet_tracing_masks`], for EchoNet-Pediatric's `VolumeTracings.csv` (`FileName, X, Y, Frame`), whose
    rows are the outline's points in order."""
    return _tracing_masks(tracings_csv, file_name, height, width, PEDIATRIC_LAYOUT, round_vertices)


def echonet_row_masks(row: Mapping, round_vertices: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """
    ED and ES cavity masks (boolean `(height, width)`) of one `load_echonet_dynamic(root, masks=True)` row.

    Either is `None` where the video has no usable tracing of that frame (its outline is empty).
    """
    if "ed_polygon" not in row:
        raise ValueError("the row has no `ed_polygon`: load the data set with load_echonet_dynamic(root, masks=True)")
    height, width = int(row["height"]), int(row["width"])
    masks = []
    for phase in ("ed", "es"):
        polygon = np.asarray(row[f"{phase}_polygon"], dtype=np.float64).reshape(-1, 2)
        masks.append(polygon_mask(polygon, height, width, round_vertices) if len(polygon) else None)
    return masks[0], masks[1]


__all__ = [
    "OUTSIDE_TOLERANCE",
    "echonet_row_masks",
    "echonet_tracing_masks",
    "pediatric_tracing_masks",
    "polygon_mask",
]
