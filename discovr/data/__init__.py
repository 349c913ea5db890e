"""Echo data for DISCOVR: manifests to `datasets`, lazy video transforms and a synthetic echo generator."""

from .errors import ManifestError, VideoDecodeError
from .manifests import load_echonet_dynamic, load_echonet_pediatric, load_video_csv, read_video_csv
from .synthetic import make_synthetic_echonet
from .transforms import VideoTransform, collate_videos, stack_rows


__all__ = [
    "ManifestError",
    "VideoDecodeError",
    "VideoTransform",
    "collate_videos",
    "load_echonet_dynamic",
    "load_echonet_pediatric",
    "load_video_csv",
    "make_synthetic_echonet",
    "read_video_csv",
    "stack_rows",
]
