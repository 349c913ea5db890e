"""Whole-video segmentation: covering clips, logits averaged per frame, label maps at the video's frame size."""

import numpy as np
import pytest
import torch

from discovr import DiscovrVideoProcessor
from discovr.inference.segmentation import frame_logits, segment_video
from discovr.video_processing_discovr import ClipSampling

from discovr_testing import INTENSITY_STEP, write_ramp_video


NUM_FRAMES, STRIDE, SIZE, PATCHES = 4, 3, 32, 4


class BrightnessModel(torch.nn.Module):
    """Two labels per frame: 1 where the frame (of a grey ramp video) is brighter than its normalised `threshold`."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(threshold))

    def forward(self, pixel_values):
        brightness = pixel_values.mean(dim=(2, 3, 4))  # (clips, frames)
        scores = torch.stack((self.threshold.expand_as(brightness), brightness), dim=2)
        logits = scores[..., None, None].expand(*scores.shape, PATCHES, PATCHES)
        return type("Output", (), {"logits": logits})()


def test_every_frame_gets_the_label_of_its_own_pixels(tmp_path):
    video = write_ramp_video(tmp_path / "ramp.avi", "mjpeg", num_frames=40, size=48)
    processor = DiscovrVideoProcessor(num_frames=NUM_FRAMES, frame_stride=STRIDE, size={"height": SIZE, "width": SIZE})
    # The processor normalises grey level g to about (g / 255 - 0.45) / 0.225: frame 20 (g = 120) sits near 0.1.
    model = BrightnessModel(threshold=0.1)
    segmentation = segment_video(model, processor, video, batch_size=3)
    assert segmentation.label_maps.shape == (40, 48, 48) and segmentation.label_maps.dtype == np.uint8
    assert segmentation.frames == list(range(40)) and segmentation.fps == pytest.approx(25.0)
    bright = segmentation.label_maps.reshape(40, -1).mean(axis=1)
    assert set(np.unique(bright)) == {0.0, 1.0}  # whole frames, no blending across frames
    first_bright = int(np.argmax(bright))
    assert (bright[first_bright:] == 1).all() and (bright[:first_bright] == 0).all()
    assert abs(first_bright * INTENSITY_STEP - 120) <= 3 * INTENSITY_STEP
    # Only some frames: the clips cover just those.
    some = segment_video(model, processor, video, frames=[39, 2])
    assert some.frames == [2, 39] and some.label_maps.shape == (2, 48, 48)
    np.testing.assert_array_equal(some.label_maps, segmentation.label_maps[[2, 39]])


def test_frame_logits_average_every_clip_that_samples_a_frame():
    processor = DiscovrVideoProcessor(num_frames=2, frame_stride=1, size={"height": SIZE, "width": SIZE})
    clips = processor.decode_clips(np.zeros((3, 8, 8), np.uint8), ClipSampling("all"))  # starts 0 and 1
    assert clips.starts == [0, 1]
    clip_logits = torch.tensor([[1.0, 2.0], [4.0, 8.0]]).view(2, 2, 1, 1, 1)
    averaged = frame_logits(clip_logits, clips, 2, 1, [0, 1, 2]).flatten()
    assert averaged.tolist() == [1.0, (2.0 + 4.0) / 2, 8.0]
    with pytest.raises(ValueError, match=r"no clip samples frames \[2\]"):
        frame_logits(clip_logits[:1], type(clips)(**{**vars(clips), "starts": [0], "crops": [0]}), 2, 1, [0, 2])
