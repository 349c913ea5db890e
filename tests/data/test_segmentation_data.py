"""Segmentation training clips from the three label sources: the labels line up with the frames the clip samples."""

import numpy as np
import pytest
import torch

from discovr import DiscovrVideoProcessor
from discovr.data import ManifestError
from discovr.data.segmentation import (
    IGNORE_INDEX,
    AnnotatedVideo,
    SegmentationTransform,
    annotated_clip,
    camus_annotations,
    resize_labels,
    segmentation_format,
    synthetic_annotations,
)
from discovr.data.tracings import echonet_row_masks
from discovr.video_processing_discovr import sample_clip_indices

from test_camus import FRAMES, HEIGHT, WIDTH, write_patient, write_splits


NUM_FRAMES, STRIDE, SIZE = 8, 3, 56


@pytest.fixture(scope="module")
def processor():
    return DiscovrVideoProcessor(num_frames=NUM_FRAMES, frame_stride=STRIDE, size={"height": SIZE, "width": SIZE})


def test_synthetic_clip_labels_every_sampled_frame(synthetic_root, processor):
    data = segmentation_format("synthetic").load(synthetic_root)
    row = data["train"][0]
    annotated = synthetic_annotations(row)
    frame = max(annotated.labels) - 1  # near the end: the clip must still sample it
    pixel_values, labels = annotated_clip(processor, annotated, frame)
    assert pixel_values.shape == (NUM_FRAMES, 3, SIZE, SIZE) and labels.shape == (NUM_FRAMES, SIZE, SIZE)
    clips = processor.decode_clips(annotated.video, "center")
    indices = None
    for start in range(clips.num_video_frames):
        candidate = sample_clip_indices(clips.num_video_frames, NUM_FRAMES, STRIDE, start)
        if frame in candidate and torch.equal(
            labels, torch.stack([resize_labels(annotated.labels[i], SIZE, SIZE) for i in candidate])
        ):
            indices = candidate
            break
    assert indices is not None, "the labels are not those of any clip that samples the frame"
    assert set(np.unique(labels.numpy())) == {0, 1, 2, 3}


def test_echonet_tracings_label_only_the_traced_frames(synthetic_root, processor):
    data = segmentation_format("echonet_dynamic").load(synthetic_root)
    row = next(iter(data["train"]))
    annotated = segmentation_format("echonet_dynamic").annotations(row)
    assert sorted(annotated.labels) == sorted((row["ed_frame"], row["es_frame"]))
    ed_mask, _ = echonet_row_masks(row)
    np.testing.assert_array_equal(annotated.labels[row["ed_frame"]], ed_mask.astype(np.uint8))
    _, labels = annotated_clip(processor, annotated, row["ed_frame"])
    labelled = (labels != IGNORE_INDEX).flatten(1).any(1)
    assert 1 <= int(labelled.sum()) <= 2  # the ED frame, and the ES frame when the clip also reaches it
    assert set(np.unique(labels[labelled].numpy())) == {0, 1}
    assert (labels[~labelled] == IGNORE_INDEX).all()
    assert segmentation_format("echonet_dynamic").label_names == ("background", "lv_cavity")


def test_transform_rows_and_their_randomness(synthetic_root, processor):
    rows = segmentation_format("synthetic").load(synthetic_root)["train"]
    evaluation = rows.with_transform(SegmentationTransform(processor, "synthetic", training=False))
    first, again = evaluation[:2], evaluation[:2]
    assert len(first["pixel_values"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(first["labels"], again["labels"]))
    training = rows.with_transform(SegmentationTransform(processor, "synthetic", training=True))
    torch.manual_seed(0)
    draws = [training[0]["labels"] for _ in range(6)]
    assert any(not torch.equal(draws[0], draw) for draw in draws[1:])


def test_camus_sequences_with_and_without_per_frame_labels(tmp_path, processor):
    root = tmp_path / "database_nifti"
    write_patient(root, "patient0001")
    write_patient(root, "patient0002", sequence_label=False)
    write_splits(tmp_path / "database_split", ["patient0001", "patient0002"], [], [])
    rows = {row["patient"]: row for row in segmentation_format("camus").load(root)["train"] if row["view"] == "4CH"}
    full = camus_annotations(rows["patient0001"])
    assert sorted(full.labels) == list(range(FRAMES)) and full.video.shape == (FRAMES, HEIGHT, WIDTH)
    sparse = camus_annotations(rows["patient0002"])
    assert sorted(sparse.labels) == [0, FRAMES - 1]  # ED and ES of the info file, 0-based
    pixel_values, labels = annotated_clip(processor, sparse, FRAMES - 1)
    assert pixel_values.shape == (NUM_FRAMES, 3, SIZE, SIZE)
    labelled = (labels != IGNORE_INDEX).flatten(1).any(1)
    assert labelled.any() and set(np.unique(labels[labelled].numpy())) <= {0, 1, 2, 3}


def test_annotations_that_do_not_fit_the_video_are_refused(synthetic_root, processor):
    row = segmentation_format("synthetic").load(synthetic_root)["train"][0]
    annotated = synthetic_annotations(row)
    wrong_size = AnnotatedVideo(annotated.video, {0: np.zeros((10, 10), np.uint8)}, "clip.avi")
    with pytest.raises(ManifestError, match=r"clip.avi: the label map of frame 0 is \(10, 10\)"):
        annotated_clip(processor, wrong_size, 0)
    past_end = AnnotatedVideo(annotated.video, {0: annotated.labels[0], 10_000: annotated.labels[0]}, "clip.avi")
    with pytest.raises(ManifestError, match="clip.avi: frame 10000 is annotated"):
        annotated_clip(processor, past_end, 0)


def test_missing_label_maps_name_the_file(synthetic_root, tmp_path):
    row = dict(segmentation_format("synthetic").load(synthetic_root)["train"][0])
    row["video"] = str(tmp_path / "Videos" / "elsewhere.avi")
    with pytest.raises(ManifestError, match="elsewhere.npz not found"):
        synthetic_annotations(row)
    with pytest.raises(ValueError, match="data_format must be one of"):
        segmentation_format("nifti")


def test_resize_labels_never_blends():
    labels = torch.tensor([[0, 1], [2, 3]])
    resized = resize_labels(labels, 4, 4)
    assert torch.equal(resized, labels.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert set(resize_labels(labels, 3, 5).unique().tolist()) <= {0, 1, 2, 3}
