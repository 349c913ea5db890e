"""
Segmentation data: each format's videos with their annotated frames, and the transform that makes training clips.

Three sources give label maps, in CAMUS's label convention (0 background, 1 LV cavity, 2 LV myocardium, 3 left
atrium) so that one model reads them all:

- `synthetic`: a `discovr-synth` folder; `Masks/<FileName>.npz` labels every frame with all four structures.
- `echonet_dynamic`: EchoNet-Dynamic's `VolumeTracings.csv`, the LV cavity of the ED and ES frames (two labels:
  background and LV cavity), drawn by `discovr.data.tracings` as EchoNet draws them.
- `camus`: a CAMUS folder (the `camus` extra): the half sequence as the video, and its per-frame ground truth when
  the release has it, else the ED and ES ground truth at their frames.

A clip is placed so that it samples an annotated frame ([`ClipSampling.covering`]); its frames without an
annotation get `ignore_index` everywhere, so they add nothing to the loss.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict

from ..metrics.segmentation import DEFAULT_IGNORE_INDEX
from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor, VideoLike, sample_clip_indices
from .camus import CAMUS_LABELS, load_camus, load_camus_images
from .errors import ManifestError
from .manifests import load_echonet_dynamic
from .synthetic import MASKS_DIR
from .tracings import echonet_row_masks


logger = logging.getLogger(__name__)

# The synthetic generator draws CAMUS's four structures, under CAMUS's label values.
CAMUS_STYLE_LABELS = CAMUS_LABELS
LV_CAVITY_LABELS = ("background", "lv_cavity")
IGNORE_INDEX = DEFAULT_IGNORE_INDEX


@dataclass(frozen=True)
class AnnotatedVideo:
    """A video and its label maps: `labels[frame]` is the `(H, W)` uint8 map of that frame of `video`."""

    video: VideoLike
    labels: dict[int, np.ndarray]
    name: str


def synthetic_annotations(row: Mapping) -> AnnotatedVideo:
    """Every frame of a `discovr-synth` video, from `Masks/<FileName>.npz`."""
    video = Path(row["video"])
    path = video.parent.parent / MASKS_DIR / f"{video.stem}.npz"
    if not path.is_file():
        raise ManifestError(f"{path} not found: the label maps of {video.name} (a discovr-synth folder has them)",
                            [f"missing {path}"])
    label_maps = np.load(path)["labels"]
    return AnnotatedVideo(os.fspath(video), {frame: label_maps[frame] for frame in range(len(label_maps))}, video.name)


def echonet_annotations(row: Mapping) -> AnnotatedVideo:
    """The traced ED and ES frames of an EchoNet-Dynamic video, as LV cavity masks (label 1)."""
    masks = dict(zip((row["ed_frame"], row["es_frame"]), echonet_row_masks(row)))
    labels = {int(frame): mask.astype(np.uint8) for frame, mask in masks.items() if mask is not None}
    return AnnotatedVideo(row["video"], labels, Path(row["video"]).name)


def camus_annotations(row: Mapping) -> AnnotatedVideo:
    """A CAMUS half sequence with its per-frame ground truth, or the ED and ES ground truth at their frames."""
    sequence, sequence_labels = load_camus_images(row, "sequence")
    if sequence_labels is not None:
        labels = {frame: sequence_labels[frame] for frame in range(len(sequence_labels))}
    else:
        labels = {int(row[f"{phase.lower()}_frame"]): load_camus_images(row, phase)[1] for phase in ("ED", "ES")}
    return AnnotatedVideo(sequence, labels, f"{row['patient']}_{row['view']}")


def _load_echonet(root: str | os.PathLike) -> DatasetDict:
    data = load_echonet_dynamic(root, masks=True)
    traced = {}
    for split, rows in data.items():
        keep = [i for i, (ed, es) in enumerate(zip(rows["ed_polygon"], rows["es_polygon"])) if len(ed) or len(es)]
        if len(keep) < len(rows):
            left_out = sorted(set(range(len(rows))) - set(keep))
            names = ", ".join(Path(rows[i]["video"]).name for i in left_out[:5])
            logger.warning("%s: %d %s videos have no tracing and are left out of segmentation (%s%s)", root,
                           len(left_out), split, names, ", ..." if len(left_out) > 5 else "")
        traced[split] = rows.select(keep)
    return DatasetDict(traced)


@dataclass(frozen=True)
class SegmentationFormat:
    """How one data format is loaded and where its label maps come from."""

    load: Callable[[str | os.PathLike], DatasetDict]
    annotations: Callable[[Mapping], AnnotatedVideo]
    label_names: tuple[str, ...]


SEGMENTATION_FORMATS = {
    "synthetic": SegmentationFormat(load_echonet_dynamic, synthetic_annotations, CAMUS_STYLE_LABELS),
    "echonet_dynamic": SegmentationFormat(_load_echonet, echonet_annotations, LV_CAVITY_LABELS),
    "camus": SegmentationFormat(load_camus, camus_annotations, CAMUS_STYLE_LABELS),
}


def segmentation_format(name: str) -> SegmentationFormat:
    if name not in SEGMENTATION_FORMATS:
        raise ValueError(f"data_format must be one of {sorted(SEGMENTATION_FORMATS)}, got {name!r}")
    return SEGMENTATION_FORMATS[name]


def resize_labels(label_map: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A label map `(..., H, W)` at `(height, width)`, nearest pixel centre (labels are never blended)."""
    labels = torch.as_tensor(np.asarray(label_map)).long()
    if tuple(labels.shape[-2:]) == (height, width):
        return labels
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).float()
    resized = torch.nn.functional.interpolate(flat, size=(height, width), mode="nearest-exact")
    return resized.long().reshape(*labels.shape[:-2], height, width)


def check_annotations(annotated: AnnotatedVideo, num_video_frames: int, frame_size: tuple[int, int]) -> None:
    """Raise `ManifestError`, naming the video and frame, for a label map past the video's end or of another size
    than the video's frames."""
    for index, label_map in annotated.labels.items():
        if not 0 <= index < num_video_frames:
            raise ManifestError(
                f"{annotated.name}: frame {index} is annotated, but the video has {num_video_frames} frames",
                [f"{annotated.name} frame {index}"],
            )
        if tuple(label_map.shape) != tuple(frame_size):
            raise ManifestError(
                f"{annotated.name}: the label map of frame {index} is {tuple(label_map.shape)}, the video's frames "
                f"{tuple(frame_size)}", [f"{annotated.name} frame {index}"],
            )


def annotated_clip(
    processor: DiscovrVideoProcessor,
    annotated: AnnotatedVideo,
    frame: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`pixel_values` `(T, C, H, W)` of the clip that samples `frame`, and its labels `(T, H, W)` at the model size:
    the label map of every annotated frame the clip samples, `ignore_index` on the others."""
    clips = processor.decode_clips(annotated.video, ClipSampling.covering([frame]))
    check_annotations(annotated, clips.num_video_frames, clips.frame_size)
    pixel_values = clips.clips()[0]
    height, width = pixel_values.shape[-2:]
    indices = sample_clip_indices(clips.num_video_frames, processor.num_frames, processor.frame_stride, clips.starts[0])
    labels = torch.full((len(indices), height, width), ignore_index, dtype=torch.long)
    for position, index in enumerate(indices):
        if index in annotated.labels:
            labels[position] = resize_labels(annotated.labels[index], height, width)
    return pixel_values, labels


class SegmentationTransform:
    """
    `dataset.with_transform(SegmentationTransform(processor, "synthetic", training=True))`: each row becomes the
    `pixel_values` and `labels` of one clip that samples one of its annotated frames.

    Training picks that frame at random (the global torch RNG, which `DataLoader` seeds per worker); evaluation
    takes the middle annotated frame, so a validation loss is deterministic. Whole-video evaluation, with every
    annotated frame, is `discovr.inference.segmentation`'s.
    """

    def __init__(
        self, processor: DiscovrVideoProcessor, data_format: str, training: bool, ignore_index: int = IGNORE_INDEX
    ):
        self.processor = processor
        self.annotations = segmentation_format(data_format).annotations
        self.training = training
        self.ignore_index = ignore_index

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        output: dict[str, list] = {"pixel_values": [], "labels": []}
        for row in rows:
            annotated = self.annotations(row)
            frames = sorted(annotated.labels)
            if not frames:
                raise ManifestError(f"{annotated.name} has no annotated frame", [annotated.name])
            if self.training:
                frame = frames[int(torch.randint(len(frames), (1,)))]
            else:
                frame = frames[len(frames) // 2]
            pixel_values, labels = annotated_clip(self.processor, annotated, frame, self.ignore_index)
            output["pixel_values"].append(pixel_values)
            output["labels"].append(labels)
        return output


__all__ = [
    "AnnotatedVideo",
    "CAMUS_STYLE_LABELS",
    "IGNORE_INDEX",
    "LV_CAVITY_LABELS",
    "SEGMENTATION_FORMATS",
    "SegmentationFormat",
    "SegmentationTransform",
    "annotated_clip",
    "check_annotations",
    "camus_annotations",
    "echonet_annotations",
    "resize_labels",
    "segmentation_format",
    "synthetic_annotations",
]
