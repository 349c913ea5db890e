"""Errors raised by DISCOVR data loading."""

from ..cli import InputError
from ..video_processing_discovr import VideoDecodeError


class ManifestError(InputError):
    """A manifest (FileList.csv, VolumeTracings.csv, a DISCOVR CSV) has problems; the message lists all of them."""

    def __init__(self, message: str, problems: list[str] | None = None):
        # A single positional message keeps the error re-raisable from DataLoader workers.
        super().__init__(message)
        self.problems = problems or []


class DicomReadError(VideoDecodeError):
    """
    A DICOM file cannot be used as an echo video. The message names the file and the cause.

    Subclasses name each refusal; `reason` is the short code `discovr-prepare` writes in its report. Every one is a
    `VideoDecodeError`, so the loaders that skip undecodable videos skip these too.
    """

    reason = "unreadable"


class DicomDependencyError(DicomReadError):
    """pydicom (or another package DICOM reading needs) is not installed; the message says what to install."""

    reason = "missing_dependency"


class SingleFrameError(DicomReadError):
    """The DICOM holds one frame: a still image, not a video."""

    reason = "single_frame"


class NotUltrasoundError(DicomReadError):
    """The DICOM is not an ultrasound image (its Modality is not US)."""

    reason = "not_ultrasound"


class UnsupportedTransferSyntaxError(DicomReadError):
    """No installed decoder reads the file's transfer syntax; the message says which package would."""

    reason = "unsupported_transfer_syntax"


class UnsupportedPhotometricError(DicomReadError):
    """The pixel data's photometric interpretation has no conversion to RGB here."""

    reason = "unsupported_photometric"


class CorruptPixelDataError(DicomReadError):
    """The pixel data is missing, truncated or fails to decode."""

    reason = "corrupt_pixel_data"


class UnknownFrameRateError(DicomReadError):
    """No frame-rate attribute is present, and no default frame rate was given."""

    reason = "unknown_frame_rate"


class SectorNotFoundError(VideoDecodeError):
    """No ultrasound sector was found: the regions do not fit the frame and too little of the image moves."""

    reason = "no_sector"


__all__ = [
    "CorruptPixelDataError",
    "DicomDependencyError",
    "DicomReadError",
    "ManifestError",
    "NotUltrasoundError",
    "SectorNotFoundError",
    "SingleFrameError",
    "UnknownFrameRateError",
    "UnsupportedPhotometricError",
    "UnsupportedTransferSyntaxError",
    "VideoDecodeError",
]
