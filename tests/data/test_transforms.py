"""VideoTransform and collate_videos: lazy decoding under DataLoader workers, and skipping corrupt videos."""

import logging
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from discovr.data import VideoDecodeError, VideoTransform, collate_videos, load_echonet_dynamic, stack_rows
from discovr.video_processing_discovr import DiscovrVideoProcessor, read_video, sample_clip_indices


def small_processor():
    return DiscovrVideoProcessor(num_frames=8, frame_stride=3, size={"height": 32, "width": 32})


def test_transform_matches_processor_and_works_with_workers(synthetic_root):
    train = load_echonet_dynamic(synthetic_root)["train"]
    processor = small_processor()
    data = train.with_transform(VideoTransform(processor, label_column="ef"))
    row = data[0]
    expected = processor(train[0]["video"], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(row["pixel_values"], expected)
    assert row["labels"] == train[0]["ef"]

    loader = DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate_videos)
    batches = list(loader)
    assert sum(len(batch["video"]) for batch in batches) == len(train)
    assert batches[0]["pixel_values"].shape == (2, 8, 3, 32, 32)
    assert batches[0]["labels"].dtype == torch.float32
    torch.testing.assert_close(batches[0]["labels"], torch.tensor(train["ef"][:2], dtype=torch.float32))


def test_rows_of_a_batch_are_processed_together_and_collated_without_a_copy(synthetic_root):
    train = load_echonet_dynamic(synthetic_root)["train"]
    processor = small_processor()
    data = train.with_transform(VideoTransform(processor))
    indices = list(range(min(3, len(train))))
    # `__getitems__` is what a DataLoader calls to read the rows of one batch.
    rows = data.__getitems__(indices)
    batch = collate_videos(rows)
    assert batch["pixel_values"].data_ptr() == rows[0]["pixel_values"].data_ptr()
    assert batch["pixel_values"].is_contiguous()
    for position, index in enumerate(indices):
        expected = processor(train[index]["video"], return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(batch["pixel_values"][position], expected, rtol=0, atol=0)


def test_stack_rows_copies_only_when_the_rows_are_not_one_tensor():
    base = torch.rand(4, 2, 3)
    assert stack_rows(list(base)) is base
    not_one_tensor = {
        "reversed": list(base)[::-1],
        "a subset": list(base)[:3],
        "copies": [row.clone() for row in base],
        "rows of a transposed view": list(base.transpose(1, 2)),
    }
    for name, rows in not_one_tensor.items():
        stacked = stack_rows(rows)
        assert stacked is not base, name
        torch.testing.assert_close(stacked, torch.stack(rows), rtol=0, atol=0, msg=name)


def test_training_transform_draws_random_starts(synthetic_root):
    train = load_echonet_dynamic(synthetic_root)["train"]
    processor = DiscovrVideoProcessor(num_frames=4, frame_stride=3, do_resize=False, do_rescale=False, do_normalize=False)
    data = train.with_transform(VideoTransform(processor, training=True))
    frames, _ = read_video(train[0]["video"])
    torch.manual_seed(0)
    starts = set()
    for _ in range(8):
        clip = data[0]["pixel_values"]
        start = next(s for s in range(len(frames)) if torch.equal(clip[0], frames[s]))
        assert torch.equal(clip, frames[sample_clip_indices(len(frames), 4, 3, start)])
        starts.add(start)
    assert len(starts) > 1


def test_corrupt_video_raises_or_is_skipped_with_a_warning(synthetic_root, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    train = load_echonet_dynamic(root)["train"]
    broken = train[1]["video"]
    data = open(broken, "rb").read()
    with open(broken, "wb") as handle:
        handle.write(data[: len(data) // 3])

    strict = train.with_transform(VideoTransform(small_processor()))
    with pytest.raises(VideoDecodeError, match="truncated"):
        collate_videos([strict[0], strict[1]])

    lenient = train.with_transform(VideoTransform(small_processor(), skip_corrupt=True))
    with caplog.at_level(logging.WARNING):
        batch = next(iter(DataLoader(lenient, batch_size=3, collate_fn=collate_videos)))
    assert batch["pixel_values"].shape[0] == 2 and batch["video"] == [train[0]["video"], train[2]["video"]]
    # The kept rows keep their own clips and labels around the skipped one.
    for position, index in enumerate((0, 2)):
        expected = small_processor()(train[index]["video"], return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(batch["pixel_values"][position], expected, rtol=0, atol=0)
    torch.testing.assert_close(batch["labels"], torch.tensor([train[0]["ef"], train[2]["ef"]], dtype=torch.float32))
    assert "Skipping corrupt video" in caplog.text and broken in caplog.text
    with pytest.raises(VideoDecodeError, match="Every video of the batch"):
        collate_videos([lenient[1]])


def test_missing_column_is_named(synthetic_root):
    train = load_echonet_dynamic(synthetic_root)["train"]
    with pytest.raises(KeyError, match="label"):
        train.with_transform(VideoTransform(small_processor(), label_column="label"))[0]


def test_multi_scale_crop_augments_training_clips_only(synthetic_root):
    """With `multi_scale_crop`, a training clip is a crop of the frame resized back (not the whole frame); evaluation
    clips are never cropped."""
    train = load_echonet_dynamic(synthetic_root)["train"]
    processor = DiscovrVideoProcessor(num_frames=8, frame_stride=3, size={"height": 32, "width": 32}, start=0)
    whole = train.with_transform(VideoTransform(processor, label_column=None))[0]["pixel_values"]
    evaluation = train.with_transform(VideoTransform(processor, label_column=None, multi_scale_crop=True))[0]
    torch.testing.assert_close(evaluation["pixel_values"], whole)

    torch.manual_seed(0)
    cropped = [
        train.with_transform(VideoTransform(processor, label_column=None, training=True, multi_scale_crop=True))[0]
        ["pixel_values"] for _ in range(6)
    ]
    assert all(clip.shape == whole.shape for clip in cropped)
    # Random starts alone also change clips; a crop also changes the spatial layout of each frame's content.
    assert any(not torch.allclose(clip.mean(dim=(0, 1)), whole.mean(dim=(0, 1)), atol=1e-3) for clip in cropped)
