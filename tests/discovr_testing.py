"""Helpers shared by the test modules (a uniquely named module: `conftest` names clash across test folders)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# Frame stride of the tests' processors: short synthetic videos still give distinct frames.
FRAME_STRIDE = 2


def tiny_config_kwargs(**overrides) -> dict:
    """A DiscovrConfig small enough for fast CPU tests (4 frames of 32x32, width 32)."""
    kwargs = dict(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32, num_prototypes=8, image_hidden_size=32,
        image_num_hidden_layers=1, image_num_attention_heads=4, image_intermediate_size=64, dino_hidden_size=24,
        dino_bottleneck_size=8, dino_out_dim=16, num_local_views=2, mask_ratio=0.75, image_mask_ratio=0.75,
    )
    kwargs.update(overrides)
    return kwargs


NUM_VIDEO_FRAMES = 40
# Frame i of the test videos is uniformly grey at INTENSITY_STEP * i, so a decoded pixel tells its frame index.
INTENSITY_STEP = 6
STRIDE = 3


def write_ramp_video(path: Path, codec: str, num_frames: int = NUM_VIDEO_FRAMES, size: int = 32) -> Path:
    """A video whose frame i is uniformly INTENSITY_STEP * i (MJPEG AVI or H.264 MP4: near-lossless on flat grey)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for index in range(num_frames):
            frame = np.full((size, size, 3), INTENSITY_STEP * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
