"""Lazy row-to-model-input transforms for manifest datasets, and a collate function that can skip corrupt videos."""

from __future__ import annotations

import logging

import torch

from ..video_processing_discovr import DiscovrVideoProcessor, VideoDecodeError


logger = logging.getLogger(__name__)


class VideoTransform:
    """
    `dataset.with_transform(VideoTransform(processor))`: decode each row's clip when the row is read.

    Rows become `pixel_values` (T, C, H, W) and, with `label_column`, `labels`. The transform is a plain picklable
    object, so it runs inside `DataLoader` workers. Random starts (`training=True`) use the global torch RNG,
    which `DataLoader` seeds differently in every worker; a generator held here would be copied into every worker
    and give them all the same starts.

    Args:
        processor: the video processor (clip length, stride, size and normalisation come from it).
        label_column: column copied to `labels` (`"ef"` for EchoNet, `"label"` for DISCOVR CSVs), or `None`.
        training: draw a random clip start instead of centring the clip.
        skip_corrupt: instead of raising `VideoDecodeError`, mark the row (`pixel_values=None`, `decode_error` set)
            so that [`collate_videos`] drops it with a warning.
        video_column: column holding the video paths.
    """

    def __init__(
        self,
        processor: DiscovrVideoProcessor,
        label_column: str | None = "ef",
        training: bool = False,
        skip_corrupt: bool = False,
        video_column: str = "video",
    ):
        self.processor = processor
        self.label_column = label_column
        self.training = training
        self.skip_corrupt = skip_corrupt
        self.video_column = video_column

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.video_column not in batch:
            raise KeyError(f"VideoTransform: column {self.video_column!r} not in the dataset (has {list(batch)})")
        if self.label_column is not None and self.label_column not in batch:
            raise KeyError(f"VideoTransform: label column {self.label_column!r} not in the dataset (has {list(batch)})")
        clips, errors = [], []
        # One video per call, so one corrupt file fails (or is skipped) alone, not with its whole batch.
        for path in batch[self.video_column]:
            try:
                # A list output skips the processor's one-video batch (a full copy of the clip); collate stacks once.
                clip = self.processor(path, do_random_start=self.training, return_tensors=None)["pixel_values"][0]
                error = None
            except VideoDecodeError as decode_error:
                if not self.skip_corrupt:
                    raise
                clip, error = None, str(decode_error)
            clips.append(clip)
            errors.append(error)
        output = {"pixel_values": clips, "video": list(batch[self.video_column])}
        if self.label_column is not None:
            output["labels"] = list(batch[self.label_column])
        if self.skip_corrupt:
            output["decode_error"] = errors
        return output


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
    batch: dict[str, torch.Tensor | list] = {"pixel_values": torch.stack([row["pixel_values"] for row in kept])}
    if "labels" in kept[0]:
        labels = [row["labels"] for row in kept]
        dtype = torch.long if all(isinstance(label, int) for label in labels) else torch.float32
        batch["labels"] = torch.tensor(labels, dtype=dtype)
    batch["video"] = [row["video"] for row in kept]
    return batch


__all__ = ["VideoTransform", "collate_videos"]
