"""DiscovrVideoProcessor and the shared clip sampler, checked against torchcodec on an ffmpeg-written video."""

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from torchcodec.decoders import VideoDecoder
from transformers import AutoVideoProcessor

import discovr  # noqa: F401  (registers the Auto classes)
from discovr.video_processing_discovr import (
    DiscovrVideoProcessor,
    VideoDecodeError,
    ClipSampling,
    compute_mean_std,
    covering_clip_start,
    random_clip_start,
    sample_clip_indices,
)


NUM_VIDEO_FRAMES = 40


@pytest.fixture(scope="module")
def ffmpeg_video(tmp_path_factory):
    """A 40-frame 64x48 MJPEG AVI written by the ffmpeg binary, and every frame as torchcodec decodes it."""
    path = tmp_path_factory.mktemp("ffmpeg") / "testsrc.avi"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=50",
         "-frames:v", str(NUM_VIDEO_FRAMES), "-c:v", "mjpeg", "-q:v", "2", str(path)],
        check=True,
    )
    frames = VideoDecoder(str(path)).get_frames_in_range(0, NUM_VIDEO_FRAMES).data
    return str(path), frames


def raw_processor(**kwargs):
    """A processor that only samples frames, so its output can be compared with decoded frames exactly."""
    return DiscovrVideoProcessor(do_resize=False, do_rescale=False, do_normalize=False, **kwargs)


def test_sample_clip_indices_strides_and_repeats_last_frame():
    assert sample_clip_indices(100, 4, frame_stride=3, start=5) == [5, 8, 11, 14]
    assert sample_clip_indices(10, 5, frame_stride=3, start=2) == [2, 5, 8, 9, 9]
    assert sample_clip_indices(1, 3, frame_stride=2) == [0, 0, 0]
    with pytest.raises(ValueError, match="start"):
        sample_clip_indices(10, 4, 3, start=10)
    with pytest.raises(ValueError, match="frame_stride"):
        sample_clip_indices(10, 4, 0)


def test_clip_sampling_vocabulary_and_starts():
    # 4 frames at stride 3 span 10 frames: starts 0..10 fit in a 20-frame video.
    assert ClipSampling.parse("all").starts(20, 4, 3) == list(range(11))
    assert ClipSampling.parse("uniform:3").starts(20, 4, 3) == [0, 5, 10]
    assert ClipSampling.parse(3) == ClipSampling.parse("3") == ClipSampling.parse("uniform:3") == ClipSampling("uniform", 3)
    assert ClipSampling.parse(1) == ClipSampling.parse("center") and ClipSampling.parse("center").starts(20, 4, 3) == [5]
    assert ClipSampling.parse("uniform:3").starts(5, 4, 3) == [0]
    random_starts = ClipSampling.parse("random").starts(20, 4, 3, generator=torch.Generator().manual_seed(0))
    assert len(random_starts) == 1 and 0 <= random_starts[0] <= 10
    assert [str(ClipSampling.parse(value)) for value in ("center", "random", "all", 5)] == [
        "center", "random", "all", "uniform:5"]
    for bad in ("uniform:x", "uniform:0", 0, -2, "some", True, None):
        with pytest.raises(ValueError, match="clips must be 'center', 'random', 'all', 'uniform:K'"):
            ClipSampling.parse(bad)
    draws = [random_clip_start(20, 4, 3, generator=torch.Generator().manual_seed(s)) for s in range(30)]
    assert min(draws) >= 0 and max(draws) <= 10 and len(set(draws)) > 3
    again = [random_clip_start(20, 4, 3, generator=torch.Generator().manual_seed(s)) for s in range(30)]
    assert draws == again


def test_covering_clips_sample_every_frame_asked_for():
    # Every frame of every video length, clip length and stride is sampled by its covering clip, nearest the middle
    # that the video allows.
    for total in range(1, 50):
        for num_frames in (1, 2, 4, 16):
            for stride in (1, 2, 3):
                for frame in range(total):
                    start = covering_clip_start(total, num_frames, stride, frame)
                    indices = sample_clip_indices(total, num_frames, stride, start)
                    assert frame in indices, (total, num_frames, stride, frame)
                starts = ClipSampling.covering().starts(total, num_frames, stride)
                covered = {i for start in starts for i in sample_clip_indices(total, num_frames, stride, start)}
                assert covered == set(range(total)) and starts == sorted(set(starts))
    # 16 frames at stride 3 in 200 frames: frame 100 sits in the middle (slot 8) of its clip.
    assert sample_clip_indices(200, 16, 3, covering_clip_start(200, 16, 3, 100)).index(100) == 8
    assert ClipSampling.covering([30, 31]).starts(200, 16, 3) == [6, 7]
    assert str(ClipSampling.covering([5, 1])) == "covering:1,5" and str(ClipSampling.covering()) == "covering:every frame"
    with pytest.raises(ValueError, match="past the end"):
        ClipSampling.covering([40]).starts(40, 4, 3)
    with pytest.raises(ValueError, match="clips must be"):
        ClipSampling.parse("covering")  # built in code only, never a --clips value
    with pytest.raises(ValueError, match="Only 'covering' clips take frames"):
        ClipSampling("all", frames=(1,))


def test_decoded_clips_know_the_source_frame_size_and_rate(ffmpeg_video):
    path, _ = ffmpeg_video
    clips = DiscovrVideoProcessor(num_frames=4, frame_stride=2).decode_clips(path, "center")
    assert clips.frame_size == (48, 64) and clips.fps == pytest.approx(50.0)
    frames = np.zeros((10, 30, 20), np.uint8)
    processor = DiscovrVideoProcessor(num_frames=4, frame_stride=2)
    for video in (frames, frames[..., None].repeat(3, -1), torch.from_numpy(frames)[:, None].repeat(1, 3, 1, 1)):
        clips = processor.decode_clips(video, "center")
        assert clips.frame_size == (30, 20) and clips.fps is None


def test_file_frames_match_torchcodec_at_stride_and_start(ffmpeg_video):
    path, frames = ffmpeg_video
    out = raw_processor()(path, num_frames=6, frame_stride=3, start=7, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 6, 3, 48, 64)
    torch.testing.assert_close(out[0], frames[[7, 10, 13, 16, 19, 22]], rtol=0, atol=0)


def test_short_video_repeats_last_frame(ffmpeg_video):
    path, frames = ffmpeg_video
    out = raw_processor()(path, num_frames=20, frame_stride=3, start=30, return_tensors="pt")["pixel_values"][0]
    expected = [min(30 + 3 * i, NUM_VIDEO_FRAMES - 1) for i in range(20)]
    torch.testing.assert_close(out, frames[expected], rtol=0, atol=0)


def test_default_start_is_centred_and_random_start_is_seedable(ffmpeg_video):
    path, frames = ffmpeg_video
    processor = raw_processor(num_frames=4, frame_stride=3)
    # Span 10 of 40 frames: the last start that fits is 30, so the centred start is 15.
    centred = processor(path, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(centred, frames[[15, 18, 21, 24]], rtol=0, atol=0)
    kwargs = {"do_random_start": True, "return_tensors": "pt"}
    first = processor(path, generator=torch.Generator().manual_seed(3), **kwargs)["pixel_values"]
    second = processor(path, generator=torch.Generator().manual_seed(3), **kwargs)["pixel_values"]
    torch.testing.assert_close(first, second)
    start = random_clip_start(NUM_VIDEO_FRAMES, 4, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first[0], frames[[start, start + 3, start + 6, start + 9]], rtol=0, atol=0)


def test_defaults_shape_dtype_and_normalisation(ffmpeg_video):
    path, frames = ffmpeg_video
    processor = DiscovrVideoProcessor()
    assert processor.num_frames == 64 and processor.frame_stride == 3
    out = processor(path, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 64, 3, 112, 112) and out.dtype == torch.float32

    # Hand computation without resizing: (x / 255 - mean) / std, on the frames the sampler picks.
    out = processor(path, do_resize=False, num_frames=2, frame_stride=1, start=0, return_tensors="pt")["pixel_values"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out[0], (frames[:2].float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_batch_is_contiguous_equals_single_videos_and_leaves_float_input_alone():
    rng = np.random.default_rng(1)
    # THWC uint8 frames, channels-last in memory as torchcodec decodes them.
    frames = rng.integers(0, 256, size=(3, 6, 16, 20, 3), dtype=np.uint8)
    videos = [torch.from_numpy(video).permute(0, 3, 1, 2) for video in frames]
    processor = DiscovrVideoProcessor(num_frames=4, frame_stride=1, start=0, do_resize=False)
    batch = processor(videos, return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 4, 3, 16, 20) and batch.is_contiguous()
    for position, video in enumerate(videos):
        single = processor(video, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(batch[position], single, rtol=0, atol=0)

    # A float input that needs no conversion must not be normalised in place.
    float_video = videos[0][:4].float().contiguous()
    untouched = float_video.clone()
    out = processor(float_video, do_sample_frames=False, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(float_video, untouched, rtol=0, atol=0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (untouched / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_array_and_pil_inputs_grayscale_and_layouts():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(10, 16, 20), dtype=np.uint8)
    processor = raw_processor(num_frames=4, frame_stride=2, start=1)
    expected = torch.from_numpy(gray[[1, 3, 5, 7]]).float()[:, None].expand(-1, 3, -1, -1)
    inputs = {
        "THW": gray,
        "THWC": gray[..., None],
        "TCHW torch": torch.from_numpy(gray)[:, None],
        "THWC float": gray[..., None].astype(np.float32),
        "PIL L": [Image.fromarray(frame) for frame in gray],
        "PIL RGB": [Image.fromarray(frame).convert("RGB") for frame in gray],
    }
    for name, video in inputs.items():
        out = processor(video, return_tensors="pt")["pixel_values"]
        assert out.shape == (1, 4, 3, 16, 20), name
        torch.testing.assert_close(out[0].float(), expected, rtol=0, atol=0, msg=name)
    batch = processor([gray, gray[:6]], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 4, 3, 16, 20)
    # The second video has 6 frames: its clip [1, 3, 5, 7] ends on a repeat of its last frame, 5.
    torch.testing.assert_close(batch[1, -1].float(), expected[2], rtol=0, atol=0)


def test_bad_files_raise_named_error(tmp_path, ffmpeg_video):
    path, _ = ffmpeg_video
    processor = DiscovrVideoProcessor()
    missing = tmp_path / "missing.avi"
    with pytest.raises(VideoDecodeError, match="missing.avi.*not found"):
        processor(str(missing))
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all")
    with pytest.raises(VideoDecodeError, match="garbage.avi.*not a readable video"):
        processor(str(garbage))
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated.avi.*truncated"):
        processor(str(truncated))


def test_save_and_auto_round_trip(tmp_path):
    processor = DiscovrVideoProcessor(num_frames=16, frame_stride=2, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6])
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "video_preprocessor_config.json").is_file()
    loaded = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is DiscovrVideoProcessor
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.num_frames == 16 and loaded.frame_stride == 2 and list(loaded.image_mean) == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="generator"):
        DiscovrVideoProcessor(generator=torch.Generator())


def test_compute_mean_std_matches_direct_computation(ffmpeg_video):
    path, frames = ffmpeg_video
    mean, std = compute_mean_std([path], samples=None)
    pixels = frames.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), pixels.std(dim=(0, 2, 3), correction=0))
