"""Echo data for DISCOVR: manifests to `datasets`, lazy video transforms, DICOM input and a synthetic echo generator."""

from .dicom import DicomVideoMetadata, UltrasoundRegion, read_dicom_video
from .errors import (
    CorruptPixelDataError,
    DicomReadError,
    ManifestError,
    NotUltrasoundError,
    SectorNotFoundError,
    SingleFrameError,
    UnknownFrameRateError,
    UnsupportedTransferSyntaxError,
    VideoDecodeError,
)
from .manifests import load_echonet_dynamic, load_echonet_pediatric, load_video_csv, read_video_csv
from .sector import Sector, crop_to_sector, find_sector, ultrasound_mask
from .synthetic import make_synthetic_echonet
from .transforms import VideoTransform, collate_videos, stack_rows


__all__ = [
    "CorruptPixelDataError",
    "DicomReadError",
    "DicomVideoMetadata",
    "ManifestError",
    "NotUltrasoundError",
    "Sector",
    "SectorNotFoundError",
    "SingleFrameError",
    "UltrasoundRegion",
    "UnknownFrameRateError",
    "UnsupportedTransferSyntaxError",
    "VideoDecodeError",
    "VideoTransform",
    "collate_videos",
    "crop_to_sector",
    "find_sector",
    "load_echonet_dynamic",
    "load_echonet_pediatric",
    "load_video_csv",
    "make_synthetic_echonet",
    "read_dicom_video",
    "read_video_csv",
    "stack_rows",
    "ultrasound_mask",
]
