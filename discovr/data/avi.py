"""The one MJPEG AVI writer of the package: EchoNet-style videos from uint8 frames, written with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


# FFmpeg's MJPEG quality scale, 2 (best) to 31, as `ffmpeg -q:v`.
MJPEG_QSCALE = 3
# FFmpeg's FF_QP2LAMBDA: a quality scale value in the unit of `global_quality`.
_QP2LAMBDA = 118


def frame_rate_fraction(fps: float | int | Fraction) -> Fraction:
    """`fps` as the exact fraction a container stores: integers stay integers, NTSC-style rates become n/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, int):
        rate = Fraction(fps)
    else:
        rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: float | int | Fraction, quality: int = MJPEG_QSCALE) -> None:
    """
    Write uint8 frames, grayscale (T, H, W) or RGB (T, H, W, 3), as an MJPEG AVI.

    The container carries only what FFmpeg writes by default (its encoder tag): no title or other metadata.
    H and W must be even (4:2:0 chroma). The format is set explicitly, so `path` may have any extension (such as
    a temporary name).

    Args:
        path: the file to write.
        frames: the frames.
        fps: the frame rate, stored as [`frame_rate_fraction`] gives it.
        quality: MJPEG quality scale (2 best to 31) used for every frame, so each frame is coded the same whatever
            the frames around it. (PyAV's `qscale` stream option reaches only the first frame; FFmpeg's default
            bit-rate control, about 200 kb/s, would code the others.)
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(f"frames must be uint8 (T, H, W) or (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("frames must hold at least one frame")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"MJPEG needs an even frame size, got {height}x{width}")
    with av.open(os.fspath(path), mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=frame_rate_fraction(fps))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuvj420p"
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = quality * _QP2LAMBDA
        for frame in frames:
            rgb = np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


__all__ = ["frame_rate_fraction", "write_avi"]
