"""The `video-classification` pipeline: DISCOVR dispatch, the clip sampling convention, clip averaging, batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEVideoProcessor, pipeline
from transformers.pipelines import VideoClassificationPipeline

from discovr import (
    DiscovrConfig,
    DiscovrForVideoClassification,
    DiscovrVideoClassificationPipeline,
    DiscovrVideoProcessor,
)
from discovr_testing import INTENSITY_STEP, STRIDE, tiny_config_kwargs, write_ramp_video
from discovr.video_processing_discovr import read_video


CLASSES = ["normal", "reduced", "severe"]


def save_discovr_classifier(directory: Path, **config_overrides) -> Path:
    """A tiny DiscovrForVideoClassification and a processor that keeps raw intensities (mean 0, std 1)."""
    torch.manual_seed(0)
    model = DiscovrForVideoClassification(DiscovrConfig(**tiny_config_kwargs(**config_overrides)))
    model.save_pretrained(directory)
    size = model.config.image_size
    DiscovrVideoProcessor(
        num_frames=model.config.num_frames, frame_stride=STRIDE, size={"height": size, "width": size},
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
    ).save_pretrained(directory)
    return directory


def frame_indices(pixel_values: torch.Tensor) -> list[int]:
    """Source frame index of each frame of a (1, T, C, H, W) clip of a ramp video."""
    return (pixel_values[0, :, :, 8:24, 8:24].mean(dim=(1, 2, 3)) * 255 / INTENSITY_STEP).round().int().tolist()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ramp_videos")
    return {"avi": write_ramp_video(root / "ramp.avi", "mjpeg"), "mp4": write_ramp_video(root / "ramp.mp4", "libx264")}


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory) -> Path:
    return save_discovr_classifier(
        tmp_path_factory.mktemp("lvef_model"), num_labels=1, problem_type="regression",
        id2label={0: "LVEF"}, label2id={"LVEF": 0},
    )


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return save_discovr_classifier(
        tmp_path_factory.mktemp("class_model"), num_labels=3, problem_type="single_label_classification",
        id2label=dict(enumerate(CLASSES)), label2id={name: i for i, name in enumerate(CLASSES)},
    )


@pytest.fixture(scope="module")
def regressor(regressor_dir):
    return pipeline("video-classification", model=str(regressor_dir))


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    return pipeline("video-classification", model=str(classifier_dir))


def clip_logits(pipe, video: Path, clips) -> tuple[torch.Tensor, list[int]]:
    """The model's logits on each clip the pipeline's preprocessing yields, computed outside the pipeline."""
    items = list(pipe.preprocess(video, clips=clips))
    with torch.no_grad():
        logits = torch.cat([pipe.model(pixel_values=item["pixel_values"]).logits for item in items])
    return logits, [item["clip_start"] for item in items]


def test_discovr_model_gets_the_discovr_pipeline_and_returns_lvef(regressor, regressor_dir, videos):
    assert type(regressor) is DiscovrVideoClassificationPipeline
    processor = DiscovrVideoProcessor.from_pretrained(regressor_dir)
    for video in videos.values():
        result = regressor(str(video))
        assert len(result) == 1 and result[0]["label"] == "LVEF"
        # The default is the single clip the processor itself takes at evaluation.
        with torch.no_grad():
            expected = regressor.model(**processor(str(video), return_tensors="pt")).logits.item()
        assert result[0]["score"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("codec", ["avi", "mp4"])
def test_single_clip_is_centred_and_strided(regressor, videos, codec):
    # 4 frames every 3 span 10 frames; the centred start of a 40-frame video is (40 - 10) // 2 = 15. The stock
    # pipeline's convention (the first num_frames frames) would give 0, 1, 2, 3.
    (item,) = regressor.preprocess(videos[codec])
    assert item["clip_start"] == 15
    assert frame_indices(item["pixel_values"]) == [15, 18, 21, 24]


def test_multiple_clips_start_evenly_from_first_to_last_start(regressor, videos):
    items = list(regressor.preprocess(videos["avi"], clips=3))
    assert [item["clip_start"] for item in items] == [0, 15, 30]
    expected = [[0, 3, 6, 9], [15, 18, 21, 24], [30, 33, 36, 39]]
    assert [frame_indices(item["pixel_values"]) for item in items] == expected
    assert [item["is_last"] for item in items] == [False, False, True]
    all_starts = [item["clip_start"] for item in regressor.preprocess(videos["avi"], clips="all")]
    assert all_starts == list(range(31))


def test_short_video_repeats_its_last_frame(regressor, tmp_path):
    short = write_ramp_video(tmp_path / "short.avi", "mjpeg", num_frames=7)
    items = list(regressor.preprocess(short, clips=3))
    # No second distinct clip fits in 7 frames, so only one is averaged.
    assert len(items) == 1
    assert frame_indices(items[0]["pixel_values"]) == [0, 3, 6, 6]


def test_regression_averages_the_clip_predictions(regressor, videos):
    logits, starts = clip_logits(regressor, videos["avi"], clips=3)
    result = regressor(str(videos["avi"]), clips=3, return_clip_starts=True, batch_size=2)
    assert result["clip_starts"] == starts == [0, 15, 30]
    assert result["predictions"][0]["score"] == pytest.approx(logits.mean().item(), abs=1e-5)


def test_classification_averages_probabilities_and_honours_top_k(classifier, videos):
    logits, _ = clip_logits(classifier, videos["mp4"], clips=4)
    probabilities = logits.softmax(dim=-1).mean(dim=0)

    result = classifier(str(videos["mp4"]), clips=4)
    assert [entry["label"] for entry in result] == [CLASSES[i] for i in probabilities.argsort(descending=True)]
    expected_scores = sorted(probabilities.tolist(), reverse=True)
    assert [entry["score"] for entry in result] == pytest.approx(expected_scores, abs=1e-5)
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-5)

    assert len(classifier(str(videos["mp4"]), top_k=1)) == 1
    raw = classifier(str(videos["mp4"]), clips=4, function_to_apply="none", top_k=3)
    assert sorted(entry["score"] for entry in raw) == pytest.approx(sorted(logits.mean(dim=0).tolist()), abs=1e-5)


def test_a_list_of_videos_is_batched_like_single_calls(classifier, videos):
    paths = [str(videos["avi"]), str(videos["mp4"])]
    batched = classifier(paths, clips=2, batch_size=3)
    single = [classifier(path, clips=2) for path in paths]
    assert len(batched) == 2
    for got, expected in zip(batched, single):
        assert [entry["label"] for entry in got] == [entry["label"] for entry in expected]
        assert [entry["score"] for entry in got] == pytest.approx([entry["score"] for entry in expected], abs=1e-5)


def test_invalid_clips_are_rejected(regressor, videos):
    with pytest.raises(ValueError, match="clips must be"):
        regressor(str(videos["avi"]), clips=0)
    with pytest.raises(ValueError, match="spatial_crops must be a positive integer"):
        regressor(str(videos["avi"]), spatial_crops=0)


def test_spatial_crops_are_averaged_with_the_clips(regressor, videos):
    frames, _ = read_video(videos["avi"])
    wide = torch.cat((frames, 255 - frames), dim=-1)  # 32 x 64: the two square halves differ
    items = list(regressor.preprocess(wide, clips=2, spatial_crops=3))
    assert [item["clip_start"] for item in items] == [0, 0, 0, 30, 30, 30]
    expected = regressor.video_processor.decode_clips(wide, clips=2, spatial_crops=3).clips()
    torch.testing.assert_close(torch.cat([item["pixel_values"] for item in items]), expected, rtol=0, atol=0)
    left, right = expected[0], expected[2]
    assert not torch.equal(left, right)
    with torch.no_grad():
        logits = regressor.model(pixel_values=expected).logits
    result = regressor(wide, clips=2, spatial_crops=3, return_clip_starts=True)
    assert result["predictions"][0]["score"] == pytest.approx(logits.mean().item(), abs=1e-5)


def test_processor_with_other_clip_length_is_rejected(tmp_path):
    model_dir = save_discovr_classifier(tmp_path, num_labels=1, problem_type="regression")
    DiscovrVideoProcessor(num_frames=8).save_pretrained(model_dir)
    with pytest.raises(ValueError, match="takes 8 frames per clip but the model expects 4"):
        pipeline("video-classification", model=str(model_dir))


def test_other_models_keep_the_stock_pipeline(tmp_path, videos):
    config = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=37, num_labels=2, id2label={0: "a", 1: "b"},
        label2id={"a": 0, "b": 1},
    )
    VideoMAEForVideoClassification(config).save_pretrained(tmp_path)
    VideoMAEVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    pipe = pipeline("video-classification", model=str(tmp_path))
    assert type(pipe) is VideoClassificationPipeline
    result = pipe(str(videos["avi"]))
    assert sorted(entry["label"] for entry in result) == ["a", "b"]
