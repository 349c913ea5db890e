"""Pretraining inputs: manifests to clip paths, the reference multi-scale crop, and a mask-drawing collator.

Every random choice (clip start, crop, masks) comes from a generator seeded by (seed, epoch, sample index), so
the same sample gets the same augmentation whichever worker, process or resumed run reads it. That is what
makes a killed-and-resumed run reach the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import Dataset

from ..cli import InputError
from ..data import load_echonet_dynamic, load_echonet_pediatric, load_video_csv
from ..data.transforms import multi_scale_crop
from ..masking_discovr import DiscovrMaskGenerator, DiscovrMasks
from ..video_processing_discovr import DiscovrVideoProcessor
from .data_selection import DATA_FORMATS

logger = logging.getLogger(__name__)



def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator unique to one (seed, epoch, sample) triple."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)


def load_pretraining_videos(
    data_format: str, data_root: str | os.PathLike, manifest: str | os.PathLike | None = None, split: str = "train",
    pediatric_view: str = "A4C",
) -> list[str]:
    """Absolute video paths of one split of an EchoNet-Dynamic, EchoNet-Pediatric or DISCOVR CSV dataset."""
    if data_format == "echonet_dynamic":
        # Pretraining needs no label, so an unlabelled folder (such as discovr-prepare's without --labels) works.
        dataset = load_echonet_dynamic(data_root, require_ef=False)[split]
    elif data_format == "echonet_pediatric":
        dataset = load_echonet_pediatric(data_root, view=pediatric_view)[split]
    elif data_format == "csv":
        if manifest is None:
            raise InputError("--data_format csv needs --manifest (the CSV of clip paths and classes)")
        dataset = load_video_csv(manifest, data_root)
    else:
        raise InputError(f"Unknown data format {data_format!r}; choose one of {DATA_FORMATS}")
    videos = list(dataset["video"])
    if not videos:
        raise InputError(f"No videos in the {split!r} split of {data_root}")
    return videos


def load_health_clips(
    processor: DiscovrVideoProcessor, videos: Sequence[str], count: int
) -> torch.Tensor:
    """The centred clips `(n, T, C, H, W)` of the first `count` of `videos`: the fixed batch the health metrics
    embed at every logging step."""
    return torch.stack([processor.decode_clips(video, "center").clips()[0] for video in list(videos)[:count]])


class PretrainingClips(Dataset):
    """Random augmented clips of a list of videos, for `DiscovrForPreTraining`.

    Each item decodes one clip at a random start (with the processor's clip sampler), applies the multi-scale
    crop, then the processor's resize and normalisation. Call `set_epoch` before every epoch.

    With `clips_per_video` K > 1 (repeated augmentation, as in VideoMAE V2's pretraining), an epoch holds K
    independent clips of every video: item `i` is a clip of video `i % len(videos)` with its own start, crop and
    masks.
    """

    def __init__(
        self, videos: Sequence[str], processor: DiscovrVideoProcessor, seed: int = 0, multi_scale_crop: bool = True,
        clips_per_video: int = 1,
    ):
        if clips_per_video < 1:
            raise InputError(f"clips_per_video must be at least 1, got {clips_per_video}")
        self.videos = list(videos)
        self.processor = processor
        self.seed = seed
        self.multi_scale_crop = multi_scale_crop
        self.clips_per_video = clips_per_video
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        generator = sample_generator(self.seed, self.epoch, index)
        path = self.videos[index % len(self.videos)]
        crop = partial(multi_scale_crop, output_size=self.processor.size["height"], generator=generator)
        clips = self.processor.decode_clips(
            path, "random", generator=generator, frame_transform=crop if self.multi_scale_crop else None
        )
        pixel_values = clips.clips()[0]
        return {"pixel_values": pixel_values, "sample_seed": int(torch.randint(2**62, (1,), generator=generator))}


class PretrainingCollator:
    """Stacks clips and draws the `multi_local` masks of the batch with the model's own mask generator."""

    def __init__(self, mask_generator: DiscovrMaskGenerator):
        self.mask_generator = mask_generator

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor | DiscovrMasks]:
        pixel_values = torch.stack([item["pixel_values"] for item in items])
        # Seeded from the samples themselves, so the masks do not depend on which worker built the batch.
        generator = torch.Generator().manual_seed(hash(tuple(item["sample_seed"] for item in items)) % 2**62)
        return {"pixel_values": pixel_values, "masks": self.mask_generator(len(items), generator)}


__all__ = [
    "PretrainingClips",
    "PretrainingCollator",
    "load_health_clips",
    "load_pretraining_videos",
    "sample_generator",
]
