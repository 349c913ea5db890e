"""Lazy row-to-model-input transforms for manifest datasets, and a collate function that can skip corrupt videos."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch

from ..video_processing_discovr import DiscovrVideoProcessor, VideoDecodeError


logger = logging.getLogger(__name__)

# The reference's GroupMultiScaleCrop scales; crops return to the model size after cropping.
MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)


def multi_scale_crop_box(
    height: int, width: int, output_size: int, generator: torch.Generator | None = None,
    scales: Sequence[float] = MULTI_SCALE_CROP_SCALES,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of the reference GroupMultiScaleCrop (max distortion 1, fixed offsets).

    Crop sides are `scale * min(height, width)` (snapped to `output_size` within 3 px), with the two scales at most
    one step apart; the offset is one of the 13 fixed positions (corners, centre, edge centres, quarter points).
    """
    base = min(height, width)
    sizes = [int(base * scale) for scale in scales]
    sizes = [output_size if abs(size - output_size) < 3 else size for size in sizes]
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= 1]
    crop_w, crop_h = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    step_w, step_h = (width - crop_w) // 4, (height - crop_h) // 4
    offsets = [
        (0, 0), (4 * step_w, 0), (0, 4 * step_h), (4 * step_w, 4 * step_h), (2 * step_w, 2 * step_h),
        (0, 2 * step_h), (4 * step_w, 2 * step_h), (2 * step_w, 4 * step_h), (2 * step_w, 0),
        (step_w, step_h), (3 * step_w, step_h), (step_w, 3 * step_h), (3 * step_w, 3 * step_h),
    ]
    left, top = offsets[int(torch.randint(len(offsets), (1,), generator=generator))]
    return top, left, crop_h, crop_w


def multi_scale_crop(frames: torch.Tensor, output_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One [`multi_scale_crop_box`] of every frame of a decoded clip `(T, C, H, W)`; the processor resizes it back."""
    top, left, crop_h, crop_w = multi_scale_crop_box(frames.shape[-2], frames.shape[-1], output_size, generator)
    return frames[..., top : top + crop_h, left : left + crop_w]


class VideoTransform:
    """
    `dataset.with_transform(VideoTransform(processor))`: decode each row's clip when the row is read.

    Rows become `pixel_values` (T, C, H, W) and, with `label_column`, `labels`. The clips come from
    [`DiscovrVideoProcessor.decode_clips`], the one decoding path of training, evaluation and the pipeline: the
    rows read together (a DataLoader batch) are decoded one by one and processed as one batch, so
    [`collate_videos`] needs no copy.

    The transform is a plain picklable object, so it runs inside `DataLoader` workers. Random starts
    (`training=True`) use the global torch RNG, which `DataLoader` seeds differently in every worker; a generator
    held here would be copied into every worker and give them all the same starts.

    Args:
        processor: the video processor (clip length, stride, size and normalisation come from it).
        label_column: column copied to `labels` (`"ef"` for EchoNet, `"label"` for DISCOVR CSVs), or `None`.
        training: draw a random clip start instead of centring the clip.
        multi_scale_crop: with `training`, crop every clip with [`multi_scale_crop_box`] (pretraining's
            augmentation) before the processor resizes it.
        skip_corrupt: instead of raising `VideoDecodeError`, mark the row (`pixel_values=None`, `decode_error` set)
            so that [`collate_videos`] drops it with a warning.
        video_column: column holding the video paths.
    """

    def __init__(
        self,
        processor: DiscovrVideoProcessor,
        label_column: str | None = "ef",
        training: bool = False,
        multi_scale_crop: bool = False,
        skip_corrupt: bool = False,
        video_column: str = "video",
    ):
        self.processor = processor
        self.label_column = label_column
        self.training = training
        self.multi_scale_crop = multi_scale_crop
        self.skip_corrupt = skip_corrupt
        self.video_column = video_column

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.video_column not in batch:
            raise KeyError(f"VideoTransform: column {self.video_column!r} not in the dataset (has {list(batch)})")
        if self.label_column is not None and self.label_column not in batch:
            raise KeyError(f"VideoTransform: label column {self.label_column!r} not in the dataset (has {list(batch)})")
        sampling = "random" if self.training else "center"
        crop = partial(multi_scale_crop, output_size=self.processor.size["height"])
        frame_transform = crop if self.training and self.multi_scale_crop else None
        paths = list(batch[self.video_column])
        errors: list[str | None] = [None] * len(paths)
        try:
            # The rows read together (a DataLoader batch) are processed as one tensor; each row's clip is a view of
            # it, which `collate_videos` hands on without copying.
            decoded = self.processor.decode_clips(paths, sampling, frame_transform=frame_transform)
        except VideoDecodeError:
            if not self.skip_corrupt:
                raise
            # Again one video at a time, so a corrupt file is skipped alone, not with its whole batch.
            decoded = []
            for row, path in enumerate(paths):
                try:
                    decoded.append(self.processor.decode_clips(path, sampling, frame_transform=frame_transform))
                except VideoDecodeError as decode_error:
                    decoded.append(None)
                    errors[row] = str(decode_error)
        clips = [None if video is None else video.clips()[0] for video in decoded]
        output = {"pixel_values": clips, "video": list(batch[self.video_column])}
        if self.label_column is not None:
            output["labels"] = list(batch[self.label_column])
        if self.skip_corrupt:
            output["decode_error"] = errors
        return output


def stack_rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    """
    `torch.stack(tensors)`, without the copy when the tensors are, in order, the rows of one tensor.

    [`VideoTransform`] gives the rows of a DataLoader batch such views of one processed batch; stacking them again
    would copy the whole float batch once more.
    """
    base = tensors[0]._base
    if base is None or len(base) != len(tensors):
        return torch.stack(tensors)
    row_bytes = base.stride(0) * base.element_size()
    rows_of_base = all(
        tensor._base is base
        and tensor.shape == base.shape[1:]
        and tensor.stride() == base.stride()[1:]
        and tensor.data_ptr() == base.data_ptr() + position * row_bytes
        for position, tensor in enumerate(tensors)
    )
    return base if rows_of_base else torch.stack(tensors)


def collate_videos(rows: list[dict]) -> dict[str, torch.Tensor | list]:
    """
    Stack transformed rows into a batch: `pixel_values` (B, T, C, H, W), `labels` (float or long) and `video`.

    Rows that [`VideoTransform`] marked as corrupt (`skip_corrupt=True`) are dropped, with a warning naming each
    file. A batch in which every video failed raises `VideoDecodeError`, as no batch can be made of it.
    """
    kept = []
    for row in rows:
        if row.get("pixel_values") is None:
            logger.warning("Skipping corrupt video: %s", row.get("decode_error") or row.get("video"))
        else:
            kept.append(row)
    if not kept:
        raise VideoDecodeError(
            "Every video of the batch failed to decode: " + "; ".join(str(row.get("decode_error")) for row in rows)
        )
    batch: dict[str, torch.Tensor | list] = {"pixel_values": stack_rows([row["pixel_values"] for row in kept])}
    if "labels" in kept[0]:
        labels = [row["labels"] for row in kept]
        dtype = torch.long if all(isinstance(label, int) for label in labels) else torch.float32
        batch["labels"] = torch.tensor(labels, dtype=dtype)
    batch["video"] = [row["video"] for row in kept]
    return batch


__all__ = [
    "MULTI_SCALE_CROP_SCALES", "VideoTransform", "collate_videos", "multi_scale_crop", "multi_scale_crop_box",
    "stack_rows",
]
