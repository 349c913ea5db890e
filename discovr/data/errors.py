"""Errors raised by DISCOVR data loading."""

from ..video_processing_discovr import VideoDecodeError


class ManifestError(ValueError):
    """A manifest (FileList.csv, VolumeTracings.csv, a DISCOVR CSV) has problems; the message lists all of them."""

    def __init__(self, message: str, problems: list[str] | None = None):
        # A single positional message keeps the error re-raisable from DataLoader workers.
        super().__init__(message)
        self.problems = problems or []


__all__ = ["ManifestError", "VideoDecodeError"]
