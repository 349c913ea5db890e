"""Per-frame segmentation of whole videos: covering clips through a `DiscovrForSemanticSegmentation`, their logits
averaged per frame, and label maps at the video's own size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..modeling_discovr import DiscovrSemanticSegmenterOutput
from ..video_processing_discovr import (
    ClipSampling,
    DiscovrVideoProcessor,
    VideoClips,
    VideoLike,
    sample_clip_indices,
)
from .prediction import model_logits_fn, run_on_clips

# Frames upsampled to the video's size at once: bounds the memory of full-size logits on large DICOM frames.
UPSAMPLE_CHUNK_FRAMES = 16


@dataclass
class VideoSegmentation:
    """
    A segmentation model's label maps for frames of one video.

    Attributes:
        label_maps: `(len(frames), H, W)` uint8 labels at the video's frame size.
        frames: the video frames they belong to (every frame, or the ones asked for).
        num_video_frames: frames in the video.
        fps: the video's frame rate (`None` for frame arrays).
        starts: start frames of the clips that were run.
    """

    label_maps: np.ndarray
    frames: list[int]
    num_video_frames: int
    fps: float | None
    starts: list[int]


def frame_logits(
    clip_logits: torch.Tensor, clips: VideoClips, num_frames: int, frame_stride: int, frames: Sequence[int]
) -> torch.Tensor:
    """Per-frame logits `(len(frames), num_labels, h, w)`: the mean over every clip that samples the frame of that
    clip's logits `(num_clips, num_frames, num_labels, h, w)` for it."""
    position = {frame: i for i, frame in enumerate(frames)}
    sums = torch.zeros(len(frames), *clip_logits.shape[2:])
    counts = torch.zeros(len(frames))
    for logits, start in zip(clip_logits, clips.starts, strict=True):
        # A clip past the end of the video repeats its last frame: that frame is counted once per clip.
        indices = sample_clip_indices(clips.num_video_frames, num_frames, frame_stride, start)
        for frame, slot in dict(zip(indices, range(num_frames))).items():
            if frame in position:
                sums[position[frame]] += logits[slot]
                counts[position[frame]] += 1
    missing = [frame for frame in frames if counts[position[frame]] == 0]
    if missing:
        raise ValueError(f"no clip samples frames {missing[:10]}: the clips must cover the frames asked for")
    return sums / counts.view(-1, 1, 1, 1)


def segmentation_from_logits(
    clip_logits: torch.Tensor, processor: DiscovrVideoProcessor, clips: VideoClips, frames: Sequence[int] | None = None
) -> VideoSegmentation:
    """Label maps of `frames` (every frame by default) at the video's frame size, from the per-clip logits
    `(num_clips, num_frames, num_labels, h, w)` of `clips` (see [`segment_video`])."""
    frames = list(range(clips.num_video_frames)) if frames is None else sorted(set(frames))
    averaged = frame_logits(clip_logits, clips, processor.num_frames, processor.frame_stride, frames)
    label_maps = []
    for first in range(0, len(frames), UPSAMPLE_CHUNK_FRAMES):
        chunk = DiscovrSemanticSegmenterOutput(logits=averaged[first : first + UPSAMPLE_CHUNK_FRAMES].unsqueeze(0))
        label_maps.append(processor.post_process_semantic_segmentation(chunk, target_sizes=[clips.frame_size])[0])
    return VideoSegmentation(
        label_maps=torch.cat(label_maps).to(torch.uint8).numpy(), frames=frames,
        num_video_frames=clips.num_video_frames, fps=clips.fps, starts=list(clips.starts),
    )


@torch.inference_mode()
def segment_clips(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    processor: DiscovrVideoProcessor,
    clips: VideoClips,
    frames: Sequence[int] | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> VideoSegmentation:
    """[`segment_video`] on clips already decoded with `ClipSampling.covering(frames)`; `logits_fn` maps
    `pixel_values` to per-frame logits `(n, num_frames, num_labels, h, w)`."""
    return segmentation_from_logits(run_on_clips(logits_fn, clips, batch_size, device), processor, clips, frames)


def segment_video(
    model: torch.nn.Module,
    processor: DiscovrVideoProcessor,
    video: VideoLike,
    frames: Sequence[int] | None = None,
    batch_size: int = 8,
) -> VideoSegmentation:
    """
    Label maps of `frames` (every frame by default) of `video`, at the video's frame size.

    The clips are `ClipSampling.covering(frames)`: each frame is sampled by at least one clip at the processor's
    stride, as the model was trained; a frame sampled by several clips gets the mean of their logits. The logits
    are upsampled bilinearly to the frame size by `processor.post_process_semantic_segmentation`, then the
    arg-max label is taken.
    """
    clips = processor.decode_clips(video, ClipSampling.covering(frames))
    device = next(model.parameters()).device
    return segment_clips(model_logits_fn(model), processor, clips, frames, batch_size, device)


__all__ = [
    "VideoSegmentation", "frame_logits", "model_logits_fn", "segment_clips", "segment_video", "segmentation_from_logits",
]
