"""Multi-frame ultrasound DICOM to RGB frames, with pydicom, and the metadata an echo pipeline needs.

[`read_dicom_video`] is the one DICOM reader of the package: the processor, the pipeline, `discovr-predict`, the
manifests and `discovr-prepare` all reach DICOM through it (via `discovr.data.sector.read_sector_video`). FFmpeg can
open some JPEG DICOMs too, but gets their frame count and frame rate wrong, so a DICOM never goes to torchcodec.

Colour is converted to RGB exactly once. pydicom 3 reports, with the decoded array, the photometric interpretation
the array is *now* in (a JPEG plugin may already have converted YCbCr to RGB, or not), and the conversion here keys
on that report rather than on the header, which is how YBR frames end up converted twice ("green" frames) elsewhere.
pydicom 2 gives no such report, so pydicom 3 is required.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import (
    CorruptPixelDataError,
    DicomDependencyError,
    DicomReadError,
    NotUltrasoundError,
    SingleFrameError,
    UnknownFrameRateError,
    UnsupportedPhotometricError,
    UnsupportedTransferSyntaxError,
)


logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'discovr[dicom]'"
# Ultrasound Image Storage and Ultrasound Multi-frame Image Storage, current and retired: a file whose Modality is
# missing is still accepted when its SOP class is one of these.
ULTRASOUND_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
}
# Packages of the `dicom` extra that decode each compressed transfer syntax (pydicom decodes the others itself).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "Pillow or pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls or pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pyjpegls or pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (pydicom's own decoder also works, more slowly)",
}
# JPEG, JPEG-LS and JPEG 2000 codestreams end with the marker FFD9 (EOI / EOC): a frame without it is truncated.
_CODESTREAM_END = b"\xff\xd9"
_CODESTREAM_SYNTAXES = {uid for uid in DECODER_PACKAGES if uid != "1.2.840.10008.1.2.5"}
# Pillow (libjpeg-turbo) decodes 8-bit JPEG Baseline several times faster than pylibjpeg-libjpeg, which pydicom
# would try first; the others stay the fallback (12-bit JPEG Extended, for one, is beyond Pillow).
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow"}
# RegionSpatialFormat and RegionDataType values (DICOM PS3.3 C.8.5.5.1).
SPATIAL_2D, SPATIAL_SPECTRAL = 1, 3
DATA_TISSUE, DATA_COLOR_FLOW, DATA_PW_DOPPLER, DATA_CW_DOPPLER = 1, 2, 3, 4
UNITS_CM = 3


@dataclass(frozen=True)
class UltrasoundRegion:
    """
    One item of `SequenceOfUltrasoundRegions`: its kind, its box in pixels (corners inclusive) and its spacing.

    Attributes:
        spatial_format: RegionSpatialFormat (1 = 2-D, 2 = M-mode, 3 = spectral, 4 = waveform, 5 = graphics).
        data_type: RegionDataType (1 = tissue, 2 = colour flow, 3 = PW and 4 = CW spectral Doppler, ...).
        min_x, min_y, max_x, max_y: RegionLocationMinX0, MinY0, MaxX1, MaxY1.
        delta_x, delta_y: PhysicalDeltaX / Y, in `units_x` / `units_y` (3 = cm) per pixel, or None.
    """

    spatial_format: int
    data_type: int
    min_x: int
    min_y: int
    max_x: int
    max_y: int
    units_x: int | None = None
    units_y: int | None = None
    delta_x: float | None = None
    delta_y: float | None = None

    @property
    def is_tissue_2d(self) -> bool:
        return self.spatial_format == SPATIAL_2D and self.data_type == DATA_TISSUE

    @property
    def is_color_flow(self) -> bool:
        return self.data_type == DATA_COLOR_FLOW

    @property
    def is_spectral_doppler(self) -> bool:
        return self.spatial_format == SPATIAL_SPECTRAL or self.data_type in (DATA_PW_DOPPLER, DATA_CW_DOPPLER)

    def fits(self, height: int, width: int) -> bool:
        """Whether the box is a proper box inside a `height` x `width` frame."""
        return 0 <= self.min_x < self.max_x < width and 0 <= self.min_y < self.max_y < height

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        """(row, column) pixel spacing in mm, when the region gives it in cm."""
        if self.units_x == UNITS_CM and self.units_y == UNITS_CM and self.delta_x and self.delta_y:
            return 10.0 * abs(self.delta_y), 10.0 * abs(self.delta_x)
        return None


@dataclass
class DicomVideoMetadata:
    """
    What [`read_dicom_video`] learnt about a file besides its frames.

    Attributes:
        path: the file.
        num_frames, height, width: frames decoded and their size.
        fps: frames per second, or None when the file gives none and none was required.
        fps_source: the attribute it came from (CineRate, FrameTime, FrameTimeVector, RecommendedDisplayFrameRate),
            "default_fps", or "" when unknown.
        modality: the Modality attribute ("US").
        transfer_syntax: name of the transfer syntax.
        photometric_interpretation: as stored in the header (the frames are always RGB).
        regions: the `SequenceOfUltrasoundRegions` items, in file order.
        pixel_spacing_mm: (row, column) spacing of the 2-D tissue region, when it lies inside the frame and gives
            its spacing in cm; None otherwise (regions written for another resolution give a wrong spacing).
        has_color_flow: a colour-flow region is present.
        has_spectral_doppler: a PW/CW spectral Doppler region is present.
    """

    path: str
    num_frames: int
    height: int
    width: int
    fps: float | None
    fps_source: str
    modality: str
    transfer_syntax: str
    photometric_interpretation: str
    regions: list[UltrasoundRegion] = field(default_factory=list)
    pixel_spacing_mm: tuple[float, float] | None = None
    has_color_flow: bool = False
    has_spectral_doppler: bool = False


@dataclass(frozen=True)
class DicomIdentifiers:
    """
    The identifiers `discovr-prepare` turns into keyed hashes. They are never printed: their `repr` hides them.

    Attributes:
        sop_instance_uid: SOPInstanceUID ("" when missing).
        patient_id: PatientID ("" when missing or empty).
        study_instance_uid: StudyInstanceUID ("" when missing).
    """

    sop_instance_uid: str = field(repr=False)
    patient_id: str = field(repr=False)
    study_instance_uid: str = field(repr=False)


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise DicomDependencyError(f"Reading DICOM files needs pydicom and its decoder plugins: {INSTALL_HINT}") from None
    return pydicom


def _read_dataset(path: str, stop_before_pixels: bool = False):
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise DicomReadError(f"Cannot read DICOM '{path}': file not found", path) from None
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise DicomReadError(f"Cannot read DICOM '{path}': not a readable DICOM file ({error})", path) from None


def read_dicom_identifiers(path: str | os.PathLike) -> DicomIdentifiers:
    """The SOPInstanceUID, PatientID and StudyInstanceUID of a DICOM file, read without its pixel data."""
    path = os.fspath(path)
    ds = _read_dataset(path, stop_before_pixels=True)
    return DicomIdentifiers(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or "").strip(),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
    )


def _positive_number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def frame_rate(ds, default_fps: float | None = None) -> tuple[float | None, str]:
    """
    Frames per second of a dataset and the attribute it came from.

    The attributes are tried in order: CineRate, FrameTime (ms per frame), FrameTimeVector (ms since the previous
    frame; the first entry is 0 and is left out, the others are averaged) and RecommendedDisplayFrameRate. A missing,
    zero or non-numeric one is passed over. Without any, `default_fps` is used if given; else `(None, "")`.
    """
    cine = _positive_number(ds.get("CineRate"))
    if cine is not None:
        return cine, "CineRate"
    frame_time = _positive_number(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time, "FrameTime"
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        values = list(vector) if not isinstance(vector, (str, bytes, int, float)) else [vector]
        intervals = [_positive_number(value) for value in values[1:]]
        if intervals and all(interval is not None for interval in intervals):
            return 1000.0 / float(np.mean(intervals)), "FrameTimeVector"
    recommended = _positive_number(ds.get("RecommendedDisplayFrameRate"))
    if recommended is not None:
        return recommended, "RecommendedDisplayFrameRate"
    if default_fps is not None:
        return float(default_fps), "default_fps"
    return None, ""


def _regions(ds) -> list[UltrasoundRegion]:
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            box = [int(item.get(name)) for name in (
                "RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1")]
        except (TypeError, ValueError):
            logger.debug("an ultrasound region without a complete location is left out")
            continue
        regions.append(
            UltrasoundRegion(
                spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
                data_type=int(item.get("RegionDataType", 0) or 0),
                min_x=box[0], min_y=box[1], max_x=box[2], max_y=box[3],
                units_x=item.get("PhysicalUnitsXDirection"),
                units_y=item.get("PhysicalUnitsYDirection"),
                delta_x=_positive_number(item.get("PhysicalDeltaX")),
                delta_y=_positive_number(item.get("PhysicalDeltaY")),
            )
        )
    return regions


def _check_decodable(ds, path: str):
    """The pydicom decoder of the file's transfer syntax, or the refusal that says what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise DicomReadError(f"Cannot read DICOM '{path}': the file meta has no TransferSyntaxUID", path)
    syntax = UID(str(syntax))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"Cannot decode DICOM '{path}': pydicom has no decoder for its transfer syntax {syntax.name} ({syntax}) "
            "at all, so no package can be installed for it; convert the file to an image transfer syntax first "
            "(for example with dcmtk's dcmdjpeg or gdcmconv --raw)",
            path,
        ) from None
    if not decoder.is_native and not decoder.available_plugins:
        packages = DECODER_PACKAGES.get(str(syntax), "a decoder plugin")
        raise UnsupportedTransferSyntaxError(
            f"Cannot decode DICOM '{path}': no installed plugin decodes its transfer syntax {syntax.name} ({syntax}); "
            f"install {packages} ({INSTALL_HINT} installs every plugin DISCOVR uses)",
            path,
        )
    return decoder, syntax


def _check_codestreams(ds, path: str, syntax, num_frames: int) -> None:
    """Refuse encapsulated pixel data with missing frames or a truncated codestream, which decoders may hide."""
    from pydicom.encaps import generate_frames

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=num_frames))
    except (ValueError, KeyError, EOFError, IndexError) as error:
        raise CorruptPixelDataError(f"Cannot decode DICOM '{path}': broken encapsulated pixel data ({error})", path) from None
    if len(frames) != num_frames:
        raise CorruptPixelDataError(
            f"Cannot decode DICOM '{path}': NumberOfFrames is {num_frames} but the pixel data holds {len(frames)}", path
        )
    if str(syntax) in _CODESTREAM_SYNTAXES:
        # Fragments are padded to an even length with a zero byte.
        truncated = [index for index, frame in enumerate(frames) if not frame.rstrip(b"\x00").endswith(_CODESTREAM_END)]
        if truncated:
            raise CorruptPixelDataError(
                f"Cannot decode DICOM '{path}': frame(s) {truncated[:5]} are truncated (no end-of-image marker)", path
            )


def _decode(decoder, ds, syntax) -> tuple[np.ndarray, dict]:
    """All frames, undecoded colour space (`raw`), with the fastest plugin first and then pydicom's own order."""
    preferred = _PREFERRED_PLUGIN.get(str(syntax))
    if preferred in decoder.available_plugins:
        try:
            return decoder.as_array(ds, raw=True, decoding_plugin=preferred)
        except (ValueError, RuntimeError):
            logger.debug("the %s plugin failed; trying the others", preferred)
    return decoder.as_array(ds, raw=True)


def _to_uint8(array: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored values of `bits_stored` bits to 0-255, linearly over the whole stored range."""
    if array.dtype == np.uint8 and bits_stored == 8:
        return array
    values = array.astype(np.float32)
    if signed:
        values += 2.0 ** (bits_stored - 1)
    scaled = np.round(values * (255.0 / (2.0**bits_stored - 1)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _ybr_to_rgb(frames: np.ndarray) -> np.ndarray:
    """YBR_FULL (the JPEG/JFIF full-range YCbCr) to RGB, frame by frame with Pillow's C conversion (low memory)."""
    from PIL import Image

    rgb = np.empty_like(frames)
    height, width = frames.shape[1:3]
    for index, frame in enumerate(frames):
        image = Image.frombuffer("YCbCr", (width, height), np.ascontiguousarray(frame).tobytes(), "raw", "YCbCr", 0, 1)
        rgb[index] = np.asarray(image.convert("RGB"))
    return rgb


def _to_rgb(array: np.ndarray, properties: dict, ds, path: str) -> np.ndarray:
    """Decoded pixels in the colour space `properties` reports to uint8 RGB (T, H, W, 3), converting exactly once."""
    photometric = str(properties["photometric_interpretation"])
    bits_stored = int(properties.get("bits_stored", 8))
    signed = int(properties.get("pixel_representation", 0)) == 1
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        gray = _to_uint8(array, bits_stored, signed)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        return np.repeat(gray[..., None], 3, axis=-1)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(array, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return (rgb >> 8).astype(np.uint8) if bits == 16 else rgb.astype(np.uint8)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise UnsupportedPhotometricError(
            f"Cannot decode DICOM '{path}': {photometric} pixel data has shape {array.shape}, not 3 samples per pixel",
            path,
        )
    if photometric in ("RGB", "YBR_ICT", "YBR_RCT"):
        # JPEG 2000 decoders undo the ICT/RCT component transform themselves: what they return is RGB.
        return _to_uint8(array, bits_stored, signed)
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        # pydicom has already removed any 4:2:2 subsampling, so both are full-resolution YCbCr here.
        return _ybr_to_rgb(_to_uint8(array, bits_stored, signed))
    raise UnsupportedPhotometricError(
        f"Cannot decode DICOM '{path}': photometric interpretation {photometric} is not supported "
        "(MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT and PALETTE COLOR are)",
        path,
    )


def read_dicom_video(
    path: str | os.PathLike, default_fps: float | None = None, require_frame_rate: bool = True
) -> tuple[np.ndarray, DicomVideoMetadata]:
    """
    Decode a multi-frame ultrasound DICOM to RGB frames.

    Args:
        path: the DICOM file (any name; the `.dcm` extension is not needed).
        default_fps: frame rate to use when the file gives none (see [`frame_rate`]); never guessed otherwise.
        require_frame_rate: raise `UnknownFrameRateError` when the file gives no frame rate and `default_fps` is
            None. With False, `metadata.fps` is None instead (the processor samples by frame stride and needs none).

    Returns:
        uint8 frames (T, H, W, 3) in RGB, and their [`DicomVideoMetadata`].

    Raises:
        DicomReadError: not a readable DICOM file. Its subclasses: `SingleFrameError` (one frame),
        `NotUltrasoundError` (Modality not US), `UnsupportedTransferSyntaxError` (no installed decoder; says which
        package to install), `CorruptPixelDataError` (missing, truncated or undecodable pixel data),
        `UnknownFrameRateError`, `UnsupportedPhotometricError`, `DicomDependencyError` (pydicom missing).
    """
    path = os.fspath(path)
    ds = _read_dataset(path)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "US" and not (modality == "" and str(ds.get("SOPClassUID", "")) in ULTRASOUND_SOP_CLASSES):
        raise NotUltrasoundError(
            f"Cannot use DICOM '{path}' as an echo video: its modality is {modality or 'missing'}, not US (ultrasound)",
            path,
        )
    if "PixelData" not in ds:
        raise CorruptPixelDataError(f"Cannot decode DICOM '{path}': it has no pixel data", path)
    try:
        num_frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise CorruptPixelDataError(f"Cannot decode DICOM '{path}': NumberOfFrames is not a number", path) from None
    if num_frames < 2:
        raise SingleFrameError(f"Cannot use DICOM '{path}' as a video: it holds a single frame (a still image)", path)
    fps, fps_source = frame_rate(ds, default_fps)
    if fps is None and require_frame_rate:
        raise UnknownFrameRateError(
            f"Cannot use DICOM '{path}' as a video: it gives no frame rate (no CineRate, FrameTime, FrameTimeVector "
            "or RecommendedDisplayFrameRate); pass a default frame rate (discovr-prepare --default_fps) to use one",
            path,
        )

    decoder, syntax = _check_decodable(ds, path)
    if syntax.is_encapsulated:
        _check_codestreams(ds, path, syntax, num_frames)
    try:
        array, properties = _decode(decoder, ds, syntax)
    except (ValueError, RuntimeError, KeyError, IndexError, EOFError, TypeError, AttributeError) as error:
        cause = str(error).strip().splitlines()
        raise CorruptPixelDataError(
            f"Cannot decode DICOM '{path}': its pixel data does not decode ({cause[0] if cause else type(error).__name__})",
            path,
        ) from None
    if array.shape[0] != num_frames:
        raise CorruptPixelDataError(
            f"Cannot decode DICOM '{path}': NumberOfFrames is {num_frames} but {array.shape[0]} frames decoded", path
        )
    frames = np.ascontiguousarray(_to_rgb(array, properties, ds, path))

    regions = _regions(ds)
    height, width = frames.shape[1:3]
    tissue = [region for region in regions if region.is_tissue_2d and region.fits(height, width)]
    metadata = DicomVideoMetadata(
        path=path,
        num_frames=num_frames,
        height=height,
        width=width,
        fps=fps,
        fps_source=fps_source,
        modality=modality or "US",
        transfer_syntax=syntax.name,
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
        regions=regions,
        pixel_spacing_mm=tissue[0].spacing_mm if tissue else None,
        has_color_flow=any(region.is_color_flow for region in regions),
        has_spectral_doppler=any(region.is_spectral_doppler for region in regions),
    )
    return frames, metadata


__all__ = [
    "DicomIdentifiers",
    "DicomVideoMetadata",
    "UltrasoundRegion",
    "frame_rate",
    "read_dicom_identifiers",
    "read_dicom_video",
]
