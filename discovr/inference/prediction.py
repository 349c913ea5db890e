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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor, VideoClips, VideoLike


logger = logging.getLogger(__name__)

class _ClipDataset(Dataset):
    """Videos to `VideoClips`, so that decoding runs in `DataLoader` workers."""

    def __init__(
        self, processor: DiscovrVideoProcessor, videos: Sequence[VideoLike], clips: ClipSampling, spatial_crops: int
    ):
        self.processor = processor
        self.videos = videos
        self.clips = clips
        self.spatial_crops = spatial_crops

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoClips:
        return self.processor.decode_clips(self.videos[index], self.clips, spatial_crops=self.spatial_crops)


def iter_video_clips(
    processor: DiscovrVideoProcessor,
    videos: Sequence[VideoLike],
    clips: ClipSampling | str | int = "all",
    num_workers: int = 0,
    progress: bool = True,
    description: str = "videos",
    spatial_crops: int = 1,
) -> Iterator[VideoClips]:
    """Yield [`VideoClips`] for each video, in order, decoding in `num_workers` background processes (see
    [`DiscovrVideoProcessor.decode_clips`] for `clips` and `spatial_crops`)."""
    loader = DataLoader(
        _ClipDataset(processor, videos, ClipSampling.parse(clips), spatial_crops), batch_size=None, shuffle=False,
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
        crops: spatial crop of each clip (all 0 without test-time crops).
    """

    clip_logits: torch.Tensor
    output: torch.Tensor
    starts: list[int]
    crops: list[int]

    @property
    def num_clips(self) -> int:
        return len(self.starts)


def _problem_type(model: torch.nn.Module) -> str:
    config = model.config
    if config.problem_type is not None:
        return config.problem_type
    # The model infers the type from its labels during training; without labels, one output means regression.
    return "regression" if config.num_labels == 1 else "single_label_classification"


def model_logits_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A model's logits as a function of `pixel_values` (a classifier's, or a segmentation model's)."""
    return lambda pixel_values: model(pixel_values=pixel_values).logits


def predict_video(
    model: torch.nn.Module, processor: DiscovrVideoProcessor, video: VideoLike,
    clips: ClipSampling | str | int = "all", batch_size: int = 16, spatial_crops: int = 1,
) -> VideoPrediction:
    """
    Per-clip and video-level predictions of a `DiscovrForVideoClassification` (or any model returning `logits`).

    Args:
        model: the model, in eval mode; it runs on its own device.
        processor: the processor defining clip length, stride, size and normalisation.
        video: a video file or frame array.
        clips: which clips, a [`ClipSampling`] or its string form.
        batch_size: clips per forward pass.
        spatial_crops: test-time spatial crops per clip (see [`DiscovrVideoProcessor.decode_clips`]).
    """
    return _predict(model, processor.decode_clips(video, clips, spatial_crops=spatial_crops), batch_size)


def _predict(model: torch.nn.Module, clips: VideoClips, batch_size: int) -> VideoPrediction:
    device = next(model.parameters()).device
    clip_logits = run_on_clips(model_logits_fn(model), clips, batch_size, device)
    output = aggregate_clip_logits(clip_logits, _problem_type(model))
    return VideoPrediction(clip_logits, output, clips.starts, clips.crops)


def predict_videos(
    model: torch.nn.Module,
    processor: DiscovrVideoProcessor,
    videos: Sequence[VideoLike],
    clips: ClipSampling | str | int = "all",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    spatial_crops: int = 1,
) -> list[VideoPrediction]:
    """[`predict_video`] over many videos, decoding in `num_workers` background processes, with a progress bar."""
    was_training = model.training
    model.eval()
    try:
        return [
            _predict(model, video_clips, batch_size)
            for video_clips in iter_video_clips(
                processor, videos, clips, num_workers, progress, description=f"predict ({ClipSampling.parse(clips)})",
                spatial_crops=spatial_crops,
            )
        ]
    finally:
        model.train(was_training)


__all__ = [
    "VideoPrediction",
    "aggregate_clip_logits",
    "iter_video_clips",
    "model_logits_fn",
    "predict_video",
    "predict_videos",
    "run_on_clips",
]
