"""Synthetic ultrasound DICOMs: the synthetic echo inside a scanner-like frame, in any encoding the readers handle.

The tests and the DICOM benchmark write their inputs with these. A scene is the synthetic apical view of
`discovr.data.synthetic`, enlarged and placed in a larger frame with burned-in text and a moving ECG trace outside
the sector, with masks of where each of them is. [`write_echo_dicom`] stores frames as a multi-frame ultrasound DICOM
in a chosen transfer syntax and photometric interpretation, with the regions, frame-rate attribute and patient
identifiers asked for, so that every path of the reader can be checked against known content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw

from .synthetic import FRAME_SIZE, _contraction, _draw_heart, _draw_imaging, _Renderer


# Ultrasound Multi-frame Image Storage.
US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
TISSUE_REGION = (1, 1)  # RegionSpatialFormat 2-D, RegionDataType tissue
COLOR_FLOW_REGION = (1, 2)
PW_DOPPLER_REGION = (3, 3)


@dataclass
class EchoScene:
    """
    Frames of a synthetic scanner screen and where each thing on it is.

    Attributes:
        frames: (T, H, W) uint8 grayscale frames.
        sector: (H, W) bool, the ultrasound sector.
        text: (H, W) bool, burned-in text (static).
        ecg: (H, W) bool, every pixel the ECG trace covers in some frame (it moves).
        sector_box: the sector's bounding box as DICOM region corners (min x, min y, max x, max y), inclusive.
    """

    frames: np.ndarray
    sector: np.ndarray
    text: np.ndarray
    ecg: np.ndarray
    sector_box: tuple[int, int, int, int]


def _ecg_rows(width: int, num_frames: int, baseline: int, amplitude: int) -> np.ndarray:
    """Row of the ECG trace at each column in each frame: a flat line with a QRS spike, sweeping 6 px a frame."""
    columns = np.arange(width)[None, :] + 6 * np.arange(num_frames)[:, None]
    phase = (columns % 64) / 64.0
    spike = np.where(np.abs(phase - 0.5) < 0.04, 1.0 - np.abs(phase - 0.5) / 0.04, 0.0)
    wave = 0.25 * np.exp(-(((phase - 0.75) / 0.06) ** 2))
    return np.round(baseline - amplitude * (spike + wave)).astype(int)


def render_echo_scene(
    num_frames: int = 40,
    seed: int = 0,
    height: int = 288,
    width: int = 320,
    scale: int = 2,
    text: str = "A4C\nGen\n16cm",
    ecg: bool = True,
) -> EchoScene:
    """
    Render a scanner screen: a synthetic echo sector (enlarged `scale` times), text lines (`text`, one per line) on
    both sides of it and an ECG trace.

    The sector sits at the top centre; the text is drawn top-left and top-right, the ECG trace in a band below the
    sector, as on a scanner screen (at the bottom, well apart from the sector). Nothing but the sector changes over
    time except the ECG trace, which sweeps sideways.
    """
    rng = np.random.default_rng(seed)
    heart = _draw_heart(rng)
    renderer = _Renderer(heart, _draw_imaging(rng), rng)
    small = np.stack([renderer.frame(level)[0] for level in _contraction(heart, np.arange(num_frames))])
    side = FRAME_SIZE * scale
    top, left = 8, (width - side) // 2
    if side + top + 48 > height or side > width:
        raise ValueError(f"a {height}x{width} frame is too small for a sector of {side} pixels, its text and ECG")
    frames = np.zeros((num_frames, height, width), np.uint8)
    frames[:, top : top + side, left : left + side] = small.repeat(scale, axis=1).repeat(scale, axis=2)
    sector = np.zeros((height, width), bool)
    sector[top : top + side, left : left + side] = renderer.sector.repeat(scale, axis=0).repeat(scale, axis=1)

    canvas = Image.new("L", (width, height))
    draw = ImageDraw.Draw(canvas)
    # Left and right of the sector's box, as scanners place their annotations.
    for line, row in zip(text.splitlines(), range(4, 4 + 16 * 8, 16)):
        draw.text((2, row), line, fill=255)
    draw.text((width - 40, 40), "MI 0.9", fill=230)
    draw.text((width - 40, 56), "TIS 0.7", fill=230)
    if (np.asarray(canvas)[:, left : left + side] > 0).any():
        raise ValueError(f"text lines must fit in the {left}-pixel margin left of the sector: {text!r}")
    text_mask = np.asarray(canvas) > 0
    frames[:, text_mask] = np.asarray(canvas)[text_mask]

    ecg_mask = np.zeros((height, width), bool)
    if ecg:
        rows = _ecg_rows(width - 16, num_frames, baseline=height - 6, amplitude=14)
        columns = np.arange(8, width - 8)
        for t in range(num_frames):
            for thickness in (0, 1):
                frames[t, rows[t] - thickness, columns] = 210
                ecg_mask[rows[t] - thickness, columns] = True
    ys, xs = np.nonzero(sector)
    return EchoScene(frames, sector, text_mask, ecg_mask, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    return frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, axis=-1)


def _jpeg_frames(frames: np.ndarray, photometric: str, quality: int) -> list[bytes]:
    """JPEG Baseline codestreams of each frame: grayscale, or YCbCr with 4:2:2 (YBR_FULL_422) or no subsampling."""
    encoded = []
    for frame in frames:
        buffer = BytesIO()
        if photometric == "MONOCHROME2":
            Image.fromarray(frame if frame.ndim == 2 else frame[..., 0]).save(buffer, "JPEG", quality=quality)
        else:
            subsampling = {"YBR_FULL_422": 1, "YBR_FULL": 0}[photometric]
            Image.fromarray(_as_rgb(frame[None])[0]).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
        encoded.append(buffer.getvalue())
    return encoded


def _native_pixels(frames: np.ndarray, photometric: str) -> tuple[np.ndarray, dict]:
    """Stored pixel values and extra Image Pixel attributes of an uncompressed encoding."""
    from pydicom.pixels import convert_color_space

    if photometric == "MONOCHROME2":
        return frames if frames.ndim == 3 else frames[..., 0], {}
    if photometric == "MONOCHROME1":
        return 255 - (frames if frames.ndim == 3 else frames[..., 0]), {}
    if photometric == "PALETTE COLOR":
        return frames if frames.ndim == 3 else frames[..., 0], {}
    rgb = _as_rgb(frames)
    if photometric == "RGB":
        return rgb, {}
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    if photometric == "YBR_FULL":
        return ybr, {}
    if photometric == "YBR_FULL_422":
        # Stored as Y0 Y1 Cb Cr for each horizontal pair of pixels, the chroma averaged over the pair.
        y = ybr[..., 0].reshape(*ybr.shape[:2], -1, 2)
        chroma = ybr[..., 1:].reshape(*ybr.shape[:2], -1, 2, 2).astype(np.uint16).sum(axis=3) // 2
        return np.concatenate([y, chroma.astype(np.uint8)], axis=-1), {}
    raise ValueError(f"unsupported photometric interpretation {photometric!r}")


# A palette that maps index i to a colour unlike its grey value, so a skipped or doubled lookup shows.
def palette_lut() -> np.ndarray:
    """(256, 3) uint8 RGB palette written with `PALETTE COLOR` files: red i, green 255 - i, blue 3i mod 256."""
    index = np.arange(256)
    return np.stack([index, 255 - index, (3 * index) % 256], axis=1).astype(np.uint8)


def write_echo_dicom(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    photometric: str = "MONOCHROME2",
    fps: float = 50.0,
    frame_rate_attribute: str | None = "FrameTime",
    regions: list[tuple[int, int, int, int, tuple[int, int]]] | None = None,
    region_cm_per_pixel: float | None = 0.05,
    patient_name: str = "",
    patient_id: str = "",
    sop_instance_uid: str | None = None,
    study_instance_uid: str | None = None,
    modality: str = "US",
    jpeg_quality: int = 95,
    jls_error: int = 2,
    j2k_psnr: float = 60.0,
    truncate_pixel_data: int = 0,
) -> str:
    """
    Write uint8 frames (T, H, W) or (T, H, W, 3) as a multi-frame ultrasound DICOM; returns its SOPInstanceUID.

    Args:
        path: file to write.
        frames: the frames; grayscale ones are replicated for colour photometric interpretations.
        transfer_syntax: UID of Implicit or Explicit VR Little Endian, JPEG Baseline, RLE Lossless, JPEG-LS
            (lossless or near-lossless) or JPEG 2000 (lossless or not).
        photometric: MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 or PALETTE COLOR (uncompressed), the ones each
            codec supports otherwise (JPEG Baseline: MONOCHROME2, YBR_FULL_422, YBR_FULL).
        fps: frame rate, stored in `frame_rate_attribute` (CineRate, FrameTime, FrameTimeVector,
            RecommendedDisplayFrameRate, or None for none).
        regions: `SequenceOfUltrasoundRegions` items as (min x, min y, max x, max y, (spatial format, data type)).
        region_cm_per_pixel: PhysicalDeltaX/Y of the regions, in cm (None leaves the spacing out).
        patient_name, patient_id: stored as PatientName and PatientID.
        sop_instance_uid, study_instance_uid: generated when None.
        modality: the Modality attribute.
        jpeg_quality, jls_error, j2k_psnr: lossy codec settings.
        truncate_pixel_data: drop this many bytes from the end of the pixel data, to make a corrupt file.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.tag import Tag
    from pydicom.uid import (
        JPEG2000,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLSLossless,
        JPEGLSNearLossless,
        RLELossless,
        UID,
        generate_uid,
    )

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    num_frames, rows, columns = frames.shape[:3]
    syntax = UID(transfer_syntax)
    ds = Dataset()
    ds.SOPClassUID = US_MULTIFRAME_SOP_CLASS
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Synthetic Echo Lab"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = num_frames
    color = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    ds.SamplesPerPixel = 3 if color else 1
    if color:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if photometric == "PALETTE COLOR":
        lut = palette_lut().astype(np.uint16) * 257
        for channel, name in enumerate(("Red", "Green", "Blue")):
            setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{name}PaletteColorLookupTableData", lut[:, channel].tobytes())

    if frame_rate_attribute == "FrameTime":
        ds.FrameTime = round(1000.0 / fps, 4)
        ds.FrameIncrementPointer = Tag("FrameTime")
    elif frame_rate_attribute == "FrameTimeVector":
        ds.FrameTimeVector = [0.0] + [round(1000.0 / fps, 4)] * (num_frames - 1)
        ds.FrameIncrementPointer = Tag("FrameTimeVector")
    elif frame_rate_attribute == "CineRate":
        ds.CineRate = int(round(fps))
    elif frame_rate_attribute == "RecommendedDisplayFrameRate":
        ds.RecommendedDisplayFrameRate = int(round(fps))
    elif frame_rate_attribute is not None:
        raise ValueError(f"unknown frame_rate_attribute {frame_rate_attribute!r}")

    if regions:
        items = []
        for min_x, min_y, max_x, max_y, (spatial_format, data_type) in regions:
            item = Dataset()
            item.RegionSpatialFormat = spatial_format
            item.RegionDataType = data_type
            item.RegionFlags = 0
            item.RegionLocationMinX0, item.RegionLocationMinY0 = min_x, min_y
            item.RegionLocationMaxX1, item.RegionLocationMaxY1 = max_x, max_y
            if region_cm_per_pixel is not None:
                item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
                item.PhysicalDeltaX = item.PhysicalDeltaY = region_cm_per_pixel
            items.append(item)
        ds.SequenceOfUltrasoundRegions = Sequence(items)

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    if syntax == JPEGBaseline8Bit:
        ds.PixelData = encapsulate(_jpeg_frames(frames, photometric, jpeg_quality))
        ds.LossyImageCompression = "01"
    elif syntax in (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000):
        stored, _ = _native_pixels(frames, photometric)
        options = {}
        if syntax == JPEGLSNearLossless:
            options["jls_error"] = jls_error
        if syntax == JPEG2000:
            options["j2k_psnr"] = [j2k_psnr]
        ds.compress(syntax, stored, generate_instance_uid=False, **options)
    elif syntax.is_transfer_syntax and not syntax.is_compressed:
        stored, _ = _native_pixels(frames, photometric)
        ds.PixelData = stored.tobytes()
    else:
        raise ValueError(f"write_echo_dicom cannot encode transfer syntax {syntax.name}")
    if truncate_pixel_data:
        ds.PixelData = ds.PixelData[:-truncate_pixel_data]
    ds.save_as(os.fspath(path), enforce_file_format=True, implicit_vr=None)
    return str(ds.SOPInstanceUID)


__all__ = ["EchoScene", "palette_lut", "render_echo_scene", "write_echo_dicom"]
