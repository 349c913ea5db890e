"""Multi-clip evaluation on hand-checkable videos: frame t holds the value t, the model outputs the clip mean."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from discovr import DiscovrVideoProcessor
from discovr.data import load_echonet_dynamic
from discovr.inference.prediction import (
    aggregate_clip_logits,
    predict_video,
    predict_videos,
)
from discovr.video_processing_discovr import ClipSampling, read_video



class MeanPixelModel(torch.nn.Module):
    """Predicts the mean pixel value of the clip, so a clip of known frames has a known prediction."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(problem_type="regression", num_labels=1)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.batch_sizes = []

    def forward(self, pixel_values):
        self.batch_sizes.append(pixel_values.shape[0])
        return SimpleNamespace(logits=pixel_values.mean(dim=(1, 2, 3, 4)).unsqueeze(-1) + self.anchor)


def ramp_video(num_frames: int) -> np.ndarray:
    """Grayscale THW video whose frame t is the constant t (float, on the 0-255 scale)."""
    return np.broadcast_to(np.arange(num_frames, dtype=np.float32)[:, None, None], (num_frames, 16, 16)).copy()


@pytest.fixture
def identity_processor():
    # No rescaling or normalisation, so pixel values stay the frame indices.
    return DiscovrVideoProcessor(
        num_frames=4, frame_stride=2, size={"height": 8, "width": 8}, do_rescale=False, do_normalize=False
    )


def test_all_clips_of_a_ten_frame_video(identity_processor):
    # Clips span (4 - 1) * 2 + 1 = 7 frames, so starts 0..3; the clip at s holds s, s+2, s+4, s+6 -> mean s + 3.
    model = MeanPixelModel()
    prediction = predict_video(model, identity_processor, ramp_video(10), clips="all", batch_size=3)
    assert prediction.starts == [0, 1, 2, 3]
    assert prediction.num_clips == 4
    torch.testing.assert_close(prediction.clip_logits[:, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    torch.testing.assert_close(prediction.output, torch.tensor([4.5]))
    assert model.batch_sizes == [3, 1]


@pytest.mark.parametrize(
    "clips, starts, clip_means, average",
    [
        ("uniform:2", [0, 3], [3.0, 6.0], 4.5),
        ("uniform:3", [0, 2, 3], [3.0, 5.0, 6.0], 14.0 / 3.0),  # linspace(0, 3, 3) = 0, 1.5, 3 rounds to 0, 2, 3
        ("center", [1], [4.0], 4.0),
    ],
)
def test_clip_modes(identity_processor, clips, starts, clip_means, average):
    prediction = predict_video(MeanPixelModel(), identity_processor, ramp_video(10), clips=clips)
    assert prediction.starts == starts
    torch.testing.assert_close(prediction.clip_logits[:, 0], torch.tensor(clip_means))
    torch.testing.assert_close(prediction.output, torch.tensor([average]))


def test_short_video_repeats_its_last_frame(identity_processor):
    # 5 frames cannot hold a 7-frame span: one clip from 0 with frames 0, 2, 4, 4 -> mean 2.5.
    clips = identity_processor.decode_clips(ramp_video(5), clips="all")
    assert clips.starts == [0]
    assert clips.clips().shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(clips.clips()[0, :, 0, 0, 0], torch.tensor([0.0, 2.0, 4.0, 4.0]))
    prediction = predict_video(MeanPixelModel(), identity_processor, ramp_video(5))
    torch.testing.assert_close(prediction.output, torch.tensor([2.5]))


def test_only_needed_frames_are_processed(identity_processor):
    clips = identity_processor.decode_clips(ramp_video(40), clips="uniform:2")
    # Starts 0 and 33: frames 0, 2, 4, 6 and 33, 35, 37, 39.
    assert clips.starts == [0, 33]
    assert clips.frames.shape[0] == 8
    assert clips.num_video_frames == 40


def test_aggregation_by_problem_type():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    high, low = 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))
    expected = torch.tensor([(high + low + 0.5) / 3, (low + high + 0.5) / 3], dtype=torch.float32)
    torch.testing.assert_close(aggregate_clip_logits(logits, "single_label_classification"), expected)
    torch.testing.assert_close(aggregate_clip_logits(logits, "regression"), torch.tensor([2 / 3, 2 / 3]))
    with pytest.raises(ValueError, match="problem_type"):
        aggregate_clip_logits(logits, "ranking")
    with pytest.raises(ValueError, match="num_clips"):
        aggregate_clip_logits(torch.zeros(0, 2), "regression")


def test_bad_clips_are_rejected(identity_processor):
    with pytest.raises(ValueError, match="uniform:K"):
        predict_video(MeanPixelModel(), identity_processor, ramp_video(10), clips="uniform:zero")


def test_random_clips_draw_from_the_generator(identity_processor):
    draws = {
        identity_processor.decode_clips(ramp_video(40), "random", generator=torch.Generator().manual_seed(seed)).starts[0]
        for seed in range(20)
    }
    assert len(draws) > 3 and all(0 <= start <= 33 for start in draws)


def test_video_files_match_decoded_frames(synthetic_echonet):
    """A file path gives the same clips as its fully decoded frames, also through worker processes."""
    processor = DiscovrVideoProcessor(num_frames=4, frame_stride=2, size={"height": 32, "width": 32})
    videos = list(load_echonet_dynamic(synthetic_echonet)["test"]["video"])[:2]
    model = MeanPixelModel()
    from_files = predict_videos(model, processor, videos, clips="uniform:5", num_workers=2, progress=False)
    for video, prediction in zip(videos, from_files):
        frames, metadata = read_video(video)
        expected = predict_video(model, processor, frames, clips="uniform:5")
        assert prediction.starts == expected.starts
        assert prediction.starts == ClipSampling.parse("uniform:5").starts(metadata.total_num_frames, 4, 2)
        torch.testing.assert_close(prediction.clip_logits, expected.clip_logits)


def column_video(num_frames: int, height: int, width: int) -> np.ndarray:
    """Grayscale THW video whose pixel (t, y, x) is 100 t + x: every column says where a crop took it from."""
    columns = np.arange(width, dtype=np.float32)[None, None, :] + 100 * np.arange(num_frames, dtype=np.float32)[:, None, None]
    return np.broadcast_to(columns, (num_frames, height, width)).copy()


def test_spatial_crops_tile_the_longer_side(identity_processor):
    # Shorter side 8 = the processor's size, so no resampling: 3 crops of 8 columns at offsets 0, 4, 8 of 16.
    clips = identity_processor.decode_clips(column_video(10, 8, 16), clips="uniform:2", spatial_crops=3)
    assert clips.starts == [0, 0, 0, 3, 3, 3] and clips.crops == [0, 1, 2, 0, 1, 2]
    pixel_values = clips.clips()
    assert pixel_values.shape == (6, 4, 3, 8, 8)
    for clip, (start, offset) in enumerate(zip(clips.starts, [0, 4, 8] * 2)):
        expected = 100 * torch.arange(start, start + 7, 2, dtype=torch.float32)[:, None] + torch.arange(offset, offset + 8)
        torch.testing.assert_close(pixel_values[clip, :, 0, 0, :], expected)
    # Portrait frames are cropped along their height.
    portrait = identity_processor.decode_clips(column_video(10, 8, 16).transpose(0, 2, 1).copy(), spatial_crops=2)
    torch.testing.assert_close(portrait.clips()[1, 0, 0, :, 0], 100.0 + torch.arange(8, 16, dtype=torch.float32))


def test_spatial_crops_average_with_the_clips(identity_processor):
    prediction = predict_video(MeanPixelModel(), identity_processor, column_video(10, 8, 16), "center", spatial_crops=3)
    # The centre clip starts at 1 (frames 1, 3, 5, 7: 400 on average); the crops' column means are 3.5, 7.5, 11.5.
    torch.testing.assert_close(prediction.clip_logits[:, 0], torch.tensor([403.5, 407.5, 411.5]))
    torch.testing.assert_close(prediction.output, torch.tensor([407.5]))
    assert prediction.crops == [0, 1, 2]
    with pytest.raises(ValueError, match="spatial_crops"):
        identity_processor.decode_clips(ramp_video(10), spatial_crops=0)
