"""Multi-clip evaluation: every clip of a video (or K of them) through a model, and the per-video average.

EchoNet-Dynamic reports EF averaged over all clips of a video; the paper's kNN and probes use one feature per
video. Both run here on top of the one clip vocabulary (`ClipSampling`) and the processor's frame sampler
(`sample_clip_indices`), so fine-tuning, representation evaluation, prediction and the pipeline agree on which
frames a clip holds.

Each video is decoded once: only the frames that some clip needs are decoded, resized and normalised, and the
clips are gathered from them by index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .video_processing_discovr import ClipSampling, DiscovrVideoProcessor, sample_clip_indices


logger = logging.getLogger(__name__)

VideoLike = str | os.PathLike | np.ndarray | torch.Tensor
"""A video file, or decoded frames laid out THW, TCHW or THWC (uint8, or float on the 0-255 scale)."""


@dataclass
class VideoClips:
    """
    The processed frames of one video and the clips to take from them.

    Attributes:
        frames: processed frames `(num_decoded, C, H, W)`, only those that some clip uses.
        clip_index: `(num_clips, num_frames)` positions in `frames` of each clip's frames.
        starts: start frame (in the source video) of each clip.
        num_video_frames: frames in the source video.
    """

    frames: torch.Tensor
    clip_index: torch.Tensor
    starts: list[int]
    num_video_frames: int

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    def clips(self, selection: slice | Sequence[int] = slice(None)) -> torch.Tensor:
        """`pixel_values` of the selected clips: `(n, num_frames, C, H, W)`."""
        return self.frames[self.clip_index[selection]]


def load_video_clips(
    processor: DiscovrVideoProcessor, video: VideoLike, clips: ClipSampling | str | int = "all",
    generator: torch.Generator | None = None,
) -> VideoClips:
    """
    Decode and process the clips of one video that `clips` asks for (a [`ClipSampling`] or its string form).

    Clip length, stride, size, normalisation and sector masking come from `processor`; `"center"` honours a fixed
    `start` saved with it, as its own evaluation clip does. A file is decoded with the processor's decoder
    (`processor.fetch_videos`), which raises `VideoDecodeError` naming the file. `generator` draws `"random"` starts.
    """
    num_frames, frame_stride = processor.num_frames, processor.frame_stride
    sampling = ClipSampling.parse(clips)

    def needed_frames(total: int) -> tuple[list[int], list[int]]:
        if sampling.kind == "center":
            # The processor's own evaluation clip, so a fixed `start` saved with it is honoured.
            starts = [processor.clip_start(total, do_random_start=False)]
        else:
            starts = sampling.starts(total, num_frames, frame_stride, generator)
        frames = sorted({i for start in starts for i in sample_clip_indices(total, num_frames, frame_stride, start)})
        return starts, frames

    if isinstance(video, (str, os.PathLike)):
        chosen: dict[str, list[int]] = {}

        def sample_indices_fn(metadata, **kwargs) -> list[int]:
            chosen["starts"], chosen["frames"] = needed_frames(metadata.total_num_frames)
            return chosen["frames"]

        decoded, metadata = processor.fetch_videos(os.fspath(video), sample_indices_fn)
        total, starts, frame_ids = metadata.total_num_frames, chosen["starts"], chosen["frames"]
    elif isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim not in (3, 4):
            raise ValueError(f"A video array must be THW, TCHW or THWC, got shape {tuple(video.shape)}")
        total = int(video.shape[0])
        if total == 0:
            raise ValueError("Got a video array with no frames")
        starts, frame_ids = needed_frames(total)
        decoded = video[frame_ids]
    else:
        raise ValueError(f"A video must be a file path or a frame array, got {type(video).__name__}")

    pixel_values = processor(decoded, do_sample_frames=False, return_tensors="pt")["pixel_values"][0]
    position = {frame: i for i, frame in enumerate(frame_ids)}
    clip_index = torch.tensor(
        [[position[i] for i in sample_clip_indices(total, num_frames, frame_stride, start)] for start in starts],
        dtype=torch.long,
    )
    return VideoClips(frames=pixel_values, clip_index=clip_index, starts=starts, num_video_frames=total)


class _ClipDataset(Dataset):
    """Videos to `VideoClips`, so that decoding runs in `DataLoader` workers."""

    def __init__(self, processor: DiscovrVideoProcessor, videos: Sequence[VideoLike], clips: ClipSampling):
        self.processor = processor
        self.videos = videos
        self.clips = clips

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoClips:
        return load_video_clips(self.processor, self.videos[index], self.clips)


def iter_video_clips(
    processor: DiscovrVideoProcessor,
    videos: Sequence[VideoLike],
    clips: ClipSampling | str | int = "all",
    num_workers: int = 0,
    progress: bool = True,
    description: str = "videos",
) -> Iterator[VideoClips]:
    """Yield [`VideoClips`] for each video, in order, decoding in `num_workers` background processes."""
    loader = DataLoader(
        _ClipDataset(processor, videos, ClipSampling.parse(clips)), batch_size=None, shuffle=False,
        num_workers=num_workers,
    )
    yield from tqdm(loader, total=len(videos), desc=description, unit="video", disable=not progress)


@torch.inference_mode()
def run_on_clips(
    fn: Callable[[torch.Tensor], torch.Tensor], clips: VideoClips, batch_size: int, device: torch.device | str
) -> torch.Tensor:
    """`fn(pixel_values)` over every clip of a video in batches of `batch_size`; returns the outputs on the CPU."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = []
    for first in range(0, clips.num_clips, batch_size):
        batch = clips.clips(slice(first, first + batch_size)).to(device)
        outputs.append(fn(batch).float().cpu())
    return torch.cat(outputs)


def aggregate_clip_logits(clip_logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """
    One video-level output from per-clip logits `(num_clips, num_labels)`.

    Regression averages the predictions (EchoNet). Single-label classification averages the class probabilities,
    which a single confident wrong clip cannot dominate as it would an average of logits; multi-label averages the
    sigmoid probabilities. Classification therefore returns probabilities, not logits.
    """
    if clip_logits.ndim != 2 or clip_logits.shape[0] == 0:
        raise ValueError(f"clip_logits must be (num_clips >= 1, num_labels), got shape {tuple(clip_logits.shape)}")
    if problem_type == "regression":
        return clip_logits.mean(dim=0)
    if problem_type == "single_label_classification":
        return clip_logits.softmax(dim=-1).mean(dim=0)
    if problem_type == "multi_label_classification":
        return clip_logits.sigmoid().mean(dim=0)
    raise ValueError(
        f"Unknown problem_type {problem_type!r}: expected 'regression', 'single_label_classification' or "
        "'multi_label_classification'"
    )


@dataclass
class VideoPrediction:
    """
    A model's outputs on the clips of one video.

    Attributes:
        clip_logits: `(num_clips, num_labels)` raw model outputs per clip (EF in % for LVEF).
        output: the video-level output, see [`aggregate_clip_logits`] (EF for regression, probabilities otherwise).
        starts: start frame of each clip.
    """

    clip_logits: torch.Tensor
    output: torch.Tensor
    starts: list[int]

    @property
    def num_clips(self) -> int:
        return len(self.starts)


def _problem_type(model: torch.nn.Module) -> str:
    config = model.config
    if config.problem_type is not None:
        return config.problem_type
    # The model infers the type from its labels during training; without labels, one output means regression.
    return "regression" if config.num_labels == 1 else "single_label_classification"


def _logits_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda pixel_values: model(pixel_values=pixel_values).logits


def predict_video(
    model: torch.nn.Module, processor: DiscovrVideoProcessor, video: VideoLike,
    clips: ClipSampling | str | int = "all", batch_size: int = 16,
) -> VideoPrediction:
    """
    Per-clip and video-level predictions of a `DiscovrForVideoClassification` (or any model returning `logits`).

    Args:
        model: the model, in eval mode; it runs on its own device.
        processor: the processor defining clip length, stride, size and normalisation.
        video: a video file or frame array.
        clips: which clips, a [`ClipSampling`] or its string form.
        batch_size: clips per forward pass.
    """
    return _predict(model, load_video_clips(processor, video, clips), batch_size)


def _predict(model: torch.nn.Module, clips: VideoClips, batch_size: int) -> VideoPrediction:
    device = next(model.parameters()).device
    clip_logits = run_on_clips(_logits_fn(model), clips, batch_size, device)
    return VideoPrediction(clip_logits, aggregate_clip_logits(clip_logits, _problem_type(model)), clips.starts)


def predict_videos(
    model: torch.nn.Module,
    processor: DiscovrVideoProcessor,
    videos: Sequence[VideoLike],
    clips: ClipSampling | str | int = "all",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> list[VideoPrediction]:
    """[`predict_video`] over many videos, decoding in `num_workers` background processes, with a progress bar."""
    was_training = model.training
    model.eval()
    try:
        return [
            _predict(model, video_clips, batch_size)
            for video_clips in iter_video_clips(
                processor, videos, clips, num_workers, progress, description=f"predict ({ClipSampling.parse(clips)})"
            )
        ]
    finally:
        model.train(was_training)


__all__ = [
    "VideoClips",
    "VideoPrediction",
    "aggregate_clip_logits",
    "iter_video_clips",
    "load_video_clips",
    "predict_video",
    "predict_videos",
    "run_on_clips",
]
