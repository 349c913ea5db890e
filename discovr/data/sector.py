"""The ultrasound sector: where it is, and the one crop that keeps only it.

Every path that masks goes through here: `discovr-prepare` (DICOM and AVI/MP4 inputs), and the video processor,
pipeline, `discovr-predict` and manifests, which reach [`read_sector_video`] through `read_video` for DICOM files (and
for every file with `DiscovrVideoProcessor(do_mask_sector=True)`).

Where the sector is ([`find_sector`]):
1. The 2-D tissue regions of `SequenceOfUltrasoundRegions`, when they lie inside the frame and cover the moving
   image. Real files often carry regions written for another resolution, outside the frame: those are not used.
2. Otherwise, the pixels: the pixels that vary over time, within the largest connected region of them, then their
   convex hull, filled. Burned-in text, toolbars and colour bars do not vary, and the ECG trace, which moves, is a
   separate thin region outside the sector, so none of them is kept.

The crop ([`crop_to_sector`]) sets everything outside the sector to 0 and cuts the sector's bounding box, padded to a
square. Resizing to the model size is the video processor's resize, the same for every path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from transformers.video_utils import VideoMetadata

from ..video_processing_discovr import is_dicom_file, read_video
from .errors import SectorNotFoundError


# Frames, evenly spread over the video, that the pixel method and the colour check look at.
SAMPLE_FRAMES = 32
# Temporal standard deviation (grey levels of 255) above which a pixel varies. Speckle varies by 1 (dim far field)
# to 30 inside the sector; static overlays of a digital file do not vary at all.
MOTION_LEVEL = 0.5
# ... and above this multiple of the noise in the frame corners (outside any sector).
NOISE_FACTOR = 2.5
# A sector smaller than this share of the frame is not believed.
MIN_SECTOR_FRACTION = 0.02
# Regions must hold this share of the moving image to be used.
MIN_REGION_COVERAGE = 0.9
# Channel spread (max - min of R, G, B) above which a pixel is coloured, as colour flow is; grey B-mode stays below.
COLOR_LEVEL = 40


@dataclass(frozen=True)
class Sector:
    """
    Where the ultrasound image is in a frame.

    Attributes:
        mask: (H, W) bool, True inside the sector.
        method: `"regions"` (SequenceOfUltrasoundRegions) or `"pixels"` (detected from motion).
        note: why the regions were not used (empty when they were, or when the file has none).
    """

    mask: np.ndarray
    method: str
    note: str = ""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the mask's bounding box, bottom and right exclusive."""
        rows, columns = np.nonzero(self.mask.any(axis=1))[0], np.nonzero(self.mask.any(axis=0))[0]
        return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1

    @property
    def square(self) -> tuple[int, int, int]:
        """(top, left, side) of the bounding box padded to a square about its centre (it may leave the frame)."""
        top, left, bottom, right = self.box
        side = max(bottom - top, right - left)
        return top - (side - (bottom - top)) // 2, left - (side - (right - left)) // 2, side


def _sample_indices(num_frames: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_frames - 1, min(num_frames, SAMPLE_FRAMES)).round().astype(int))


def _sample_gray(frames: np.ndarray) -> np.ndarray:
    """Up to SAMPLE_FRAMES evenly spread frames, as float32 grey (mean of the channels)."""
    sample = frames[_sample_indices(len(frames))]
    if sample.ndim == 3:
        return sample.astype(np.float32)
    # Channel by channel: a reduction over a last axis of 3 is several times slower in numpy.
    gray = sample[..., 0].astype(np.float32)
    gray += sample[..., 1]
    gray += sample[..., 2]
    return gray / 3


def _filled_hull(points_mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of the True pixels of a mask."""
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull, QhullError

    rows = np.nonzero(points_mask.any(axis=1))[0]
    # The hull of all pixels is the hull of each row's two ends, which are far fewer points.
    first = points_mask[rows].argmax(axis=1)
    last = points_mask.shape[1] - 1 - points_mask[rows, ::-1].argmax(axis=1)
    points = np.concatenate([np.stack([first, rows], 1), np.stack([last, rows], 1)]).astype(float)
    canvas = Image.new("1", (points_mask.shape[1], points_mask.shape[0]))
    try:
        hull = ConvexHull(points)
        polygon = [tuple(points[vertex]) for vertex in hull.vertices]
    except QhullError:  # all points on a line
        polygon = [tuple(point) for point in points]
    ImageDraw.Draw(canvas).polygon(polygon, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _noise_floor(motion: np.ndarray) -> float:
    """Median temporal deviation in the four corner patches, which lie outside a sector: the capture noise."""
    height, width = motion.shape
    patch_h, patch_w = max(2, height // 20), max(2, width // 20)
    corners = [motion[:patch_h, :patch_w], motion[:patch_h, -patch_w:], motion[-patch_h:, :patch_w],
               motion[-patch_h:, -patch_w:]]
    return float(np.median(np.concatenate([corner.ravel() for corner in corners])))


def moving_image(frames: np.ndarray) -> tuple[np.ndarray | None, str]:
    """
    The sector found from the pixels: the filled convex hull of what varies over time within the largest connected
    region of varying pixels. Returns (mask, "") or (None, why not).

    A pixel varies when its temporal deviation is above MOTION_LEVEL and above NOISE_FACTOR times the noise of the
    frame corners (analogue captures are noisy everywhere). The sector's far, dim edges matter here: in pydicom's
    example echo they never get brighter than 8 of 255, yet they vary, where static overlays do not at all.
    """
    if len(frames) < 2:
        return None, "a single frame shows no motion"
    gray = _sample_gray(frames)
    height, width = gray.shape[1:]
    motion = gray.std(axis=0)
    moving = motion > max(MOTION_LEVEL, NOISE_FACTOR * _noise_floor(motion))
    # Gaps of a pixel or two in sparse speckle are closed; wider ones are not, so that something else that moves
    # (an ECG trace) stays a region of its own unless it comes within about a JPEG block of the sector.
    joined = ndimage.binary_closing(np.pad(moving, 1))[1:-1, 1:-1]
    labels, count = ndimage.label(joined | moving, structure=np.ones((3, 3)))
    if count == 0:
        return None, "nothing in the image varies over time"
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = (labels == sizes.argmax()) & moving
    if largest.sum() < MIN_SECTOR_FRACTION * height * width:
        return None, f"less than {MIN_SECTOR_FRACTION:.0%} of the frame varies over time in one region"
    return _filled_hull(largest), ""


def find_sector(frames: np.ndarray, metadata=None) -> Sector:
    """
    Locate the ultrasound sector in uint8 frames (T, H, W, 3) or (T, H, W).

    Args:
        frames: the decoded video.
        metadata: anything with a `regions` attribute (a [`DicomVideoMetadata`]), or None.

    Raises:
        SectorNotFoundError: the regions cannot be used and no moving image was found in the pixels.
    """
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    pixels, pixel_failure = moving_image(frames)
    regions = list(getattr(metadata, "regions", None) or [])
    tissue = [region for region in regions if region.is_tissue_2d]
    note = ""
    if regions and not tissue:
        note = "no 2-D tissue region"
    elif tissue:
        outside = [region for region in tissue if not region.fits(height, width)]
        if outside:
            note = f"{len(outside)} of {len(tissue)} tissue region(s) lie outside the {width}x{height} frame"
        else:
            boxes = np.zeros((height, width), bool)
            for region in tissue:
                boxes[region.min_y : region.max_y + 1, region.min_x : region.max_x + 1] = True
            coverage = 1.0 if pixels is None else float((pixels & boxes).sum() / pixels.sum())
            if coverage >= MIN_REGION_COVERAGE:
                return Sector(boxes, "regions")
            note = f"the tissue region(s) cover only {coverage:.0%} of the moving image"
    if pixels is None:
        path = getattr(metadata, "path", None)
        where = f" in '{path}'" if path else ""
        reasons = "; ".join(reason for reason in (note, pixel_failure) if reason)
        raise SectorNotFoundError(f"No ultrasound sector found{where}: {reasons}", path)
    return Sector(pixels, "pixels", note)


def ultrasound_mask(frames: np.ndarray, metadata=None) -> np.ndarray:
    """(H, W) bool mask of the ultrasound sector of `frames`; see [`find_sector`], which also says how it was found."""
    return find_sector(frames, metadata).mask


def crop_to_sector(frames: np.ndarray, sector: Sector) -> np.ndarray:
    """
    Frames with everything outside the sector set to 0, cut to the sector's bounding box padded to a square.

    Args:
        frames: uint8 (T, H, W, C) or (T, H, W).
        sector: from [`find_sector`], for frames of this size.

    Returns:
        uint8 (T, S, S, C) or (T, S, S); where the square leaves the frame, it is 0 too.
    """
    frames = np.asarray(frames)
    if frames.shape[1:3] != sector.mask.shape:
        raise ValueError(f"frames of size {frames.shape[1:3]} do not match a sector mask of {sector.mask.shape}")
    height, width = sector.mask.shape
    top, left, side = sector.square
    rows = slice(max(top, 0), min(top + side, height))
    columns = slice(max(left, 0), min(left + side, width))
    out = np.zeros((len(frames), side, side, *frames.shape[3:]), frames.dtype)
    target = (slice(None), slice(rows.start - top, rows.stop - top), slice(columns.start - left, columns.stop - left))
    out[target] = frames[:, rows, columns]
    outside = ~sector.mask[rows, columns]
    out[target][:, outside] = 0
    return out


def color_fraction(frames: np.ndarray, sector: Sector) -> float:
    """Share of the sector's pixels that are coloured (as colour flow is) in at least one sampled frame."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        return 0.0
    top, left, bottom, right = sector.box
    sample = frames[_sample_indices(len(frames)), top:bottom, left:right]
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    colored = (spread > COLOR_LEVEL).any(axis=0)
    return float(colored[sector.mask[top:bottom, left:right]].mean())


def read_sector_video(
    path: str | os.PathLike,
    sample_indices_fn: Callable[..., Sequence[int]] | None = None,
    mask_sector: bool = True,
) -> tuple[torch.Tensor, VideoMetadata]:
    """
    `read_video` for DICOM files and for masked videos: decode every frame, find the sector, crop to it.

    DICOM goes through [`read_dicom_video`] (never through FFmpeg), other files through torchcodec. The sector is
    found from every frame (so every clip of a video gets the same crop), then only the frames that
    `sample_indices_fn(metadata=...)` asks for are cropped. The metadata describes the cropped square video.

    Returns:
        uint8 (T, C, H, W) frames and their `VideoMetadata` (`fps` is None for a DICOM without a frame rate).
    """
    path = os.fspath(path)
    if is_dicom_file(path):
        from .dicom import read_dicom_video

        frames, dicom_metadata = read_dicom_video(path, require_frame_rate=False)
        fps, backend = dicom_metadata.fps, "pydicom"
    else:
        decoded, video_metadata = read_video(path, mask_sector=False)
        frames, dicom_metadata = decoded.permute(0, 2, 3, 1).numpy(), None
        fps, backend = video_metadata.fps, video_metadata.video_backend
    sector = find_sector(frames, dicom_metadata) if mask_sector else None
    size = sector.square[2] if sector is not None else None
    metadata = VideoMetadata(
        total_num_frames=len(frames),
        fps=fps,
        duration=len(frames) / fps if fps else None,
        video_backend=backend,
        height=size or frames.shape[1],
        width=size or frames.shape[2],
    )
    indices = sample_indices_fn(metadata=metadata) if sample_indices_fn is not None else range(len(frames))
    indices = [int(index) for index in indices]
    selected = frames[indices]
    if sector is not None:
        selected = crop_to_sector(selected, sector)
    metadata.frames_indices = indices
    return torch.from_numpy(np.ascontiguousarray(selected)).permute(0, 3, 1, 2), metadata


__all__ = [
    "Sector",
    "color_fraction",
    "crop_to_sector",
    "find_sector",
    "moving_image",
    "read_sector_video",
    "ultrasound_mask",
]
