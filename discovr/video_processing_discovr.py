"""Video processor for DISCOVR: strided clips from echocardiography videos, decoded with torchcodec (DICOM with pydicom)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
)
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import ModelOutput, TensorType, logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoInput, VideoMetadata, group_videos_by_shape, reorder_videos


logger = logging.get_logger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4")
DICOM_SUFFIXES = (".dcm", ".dicom")
# What to install for DICOM input. The model core never imports `discovr.data` at import time (it is what a
# `trust_remote_code` user downloads); DICOM files and sector masking import it when they are first used.
DICOM_INSTALL_HINT = "pip install 'discovr[dicom]'"


class VideoDecodeError(RuntimeError):
    """A video file is missing, unreadable, truncated or empty. The message names the file and the cause."""

    def __init__(self, message: str, path: str | None = None):
        # A single positional message keeps the error re-raisable from DataLoader workers.
        super().__init__(message)
        self.path = path


def clip_span(num_frames: int, frame_stride: int) -> int:
    """Number of source frames covered by a clip of `num_frames` frames taken every `frame_stride` frames."""
    return (num_frames - 1) * frame_stride + 1


def max_clip_start(num_video_frames: int, num_frames: int, frame_stride: int) -> int:
    """Largest start at which a whole clip fits in the video (0 when the video is shorter than the clip)."""
    return max(0, num_video_frames - clip_span(num_frames, frame_stride))


def _check_clip_args(num_video_frames: int, num_frames: int, frame_stride: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")


def sample_clip_indices(num_video_frames: int, num_frames: int, frame_stride: int = 1, start: int = 0) -> list[int]:
    """
    Frame indices of one clip: `num_frames` frames every `frame_stride` frames from `start`.

    Indices past the end of the video repeat the last frame, as in the reference and EchoNet, so a short video
    still gives a full clip.
    """
    _check_clip_args(num_video_frames, num_frames, frame_stride)
    if not 0 <= start < num_video_frames:
        raise ValueError(f"start must be in [0, {num_video_frames - 1}] for a {num_video_frames}-frame video, got {start}")
    last = num_video_frames - 1
    return [min(start + i * frame_stride, last) for i in range(num_frames)]


def centered_clip_start(num_video_frames: int, num_frames: int, frame_stride: int) -> int:
    """Start that centres the clip in the video (0 when the video is shorter than the clip)."""
    _check_clip_args(num_video_frames, num_frames, frame_stride)
    return max_clip_start(num_video_frames, num_frames, frame_stride) // 2


def random_clip_start(
    num_video_frames: int, num_frames: int, frame_stride: int, generator: torch.Generator | None = None
) -> int:
    """
    Uniformly random start among those where the whole clip fits (0 for a short video).

    Without `generator` the global torch RNG is used, which `DataLoader` seeds differently in every worker.
    """
    _check_clip_args(num_video_frames, num_frames, frame_stride)
    high = max_clip_start(num_video_frames, num_frames, frame_stride) + 1
    return int(torch.randint(high, (1,), generator=generator).item())


def covering_clip_start(num_video_frames: int, num_frames: int, frame_stride: int, frame: int) -> int:
    """
    Start of the clip that samples `frame`, with `frame` as near the clip's middle as the video allows.

    Segmentation needs a given frame (an annotated one, or every frame) among a clip's sampled frames, so the start
    keeps `frame`'s phase modulo `frame_stride`. When no whole clip can sample `frame` (a video shorter than the
    clip, or a frame near the end whose phase no whole clip reaches), the clip starts as early as still reaches
    `frame` and runs past the end, repeating the last frame as a short video's clip does.
    """
    _check_clip_args(num_video_frames, num_frames, frame_stride)
    if not 0 <= frame < num_video_frames:
        raise ValueError(f"frame must be in [0, {num_video_frames - 1}] for a {num_video_frames}-frame video, got {frame}")
    last_start = max_clip_start(num_video_frames, num_frames, frame_stride)
    most_steps_back = min(num_frames - 1, frame // frame_stride)
    steps_back = min(num_frames // 2, most_steps_back)
    if frame - steps_back * frame_stride > last_start:
        needed = -(-(frame - last_start) // frame_stride)  # the fewest steps back to a start where the clip fits
        steps_back = min(needed, most_steps_back)
    return frame - steps_back * frame_stride


@dataclass(frozen=True)
class ClipSampling:
    """
    Which clips of a video a model sees: the one vocabulary of training, evaluation, the pipeline and every
    command-line `--clips` flag.

    Parsed (see [`ClipSampling.parse`]) from `"center"` (one clip in the middle of the video), `"random"` (one clip
    from a uniformly random start: training), `"all"` (every start at which a whole clip fits: EchoNet-Dynamic's
    test-time averaging), `"uniform:K"` (K starts spread evenly from the first to the last such start), or an
    integer K (`"center"` for 1, `"uniform:K"` otherwise).

    Segmentation adds `ClipSampling.covering(frames)` (built in code, not parsed): clips that together sample every
    frame of `frames` (every frame of the video when `None`), each placed by [`covering_clip_start`].
    """

    kind: str
    count: int = 1
    frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("center", "random", "all", "uniform", "covering") or self.count < 1:
            raise ValueError(f"Not a clip sampling: kind {self.kind!r}, count {self.count}")
        if self.frames is not None and self.kind != "covering":
            raise ValueError(f"Only 'covering' clips take frames, got kind {self.kind!r}")

    @classmethod
    def covering(cls, frames: Sequence[int] | None = None) -> ClipSampling:
        """Clips that sample every frame of `frames` (every frame of the video when `None`)."""
        if frames is not None:
            frames = tuple(sorted({int(frame) for frame in frames}))
            if not frames:
                raise ValueError("covering clips need at least one frame")
        return cls("covering", frames=frames)

    @classmethod
    def parse(cls, value: ClipSampling | str | int) -> ClipSampling:
        """A `ClipSampling` from its string or integer form; anything else raises `ValueError` naming the forms."""
        if isinstance(value, ClipSampling):
            return value
        text = str(value).strip() if not isinstance(value, bool) else ""
        if text.isdigit() and int(text) >= 1:
            return cls("center") if int(text) == 1 else cls("uniform", int(text))
        if text in ("center", "random", "all"):
            return cls(text)
        if text.startswith("uniform:") and text[len("uniform:"):].isdigit() and int(text[len("uniform:"):]) >= 1:
            return cls("uniform", int(text[len("uniform:"):]))
        raise ValueError(
            f"clips must be 'center', 'random', 'all', 'uniform:K' or a positive integer K, got {value!r}"
        )

    def __str__(self) -> str:
        if self.kind == "covering":
            return "covering:" + ("every frame" if self.frames is None else ",".join(map(str, self.frames)))
        return f"uniform:{self.count}" if self.kind == "uniform" else self.kind

    def starts(
        self, num_video_frames: int, num_frames: int, frame_stride: int, generator: torch.Generator | None = None
    ) -> list[int]:
        """Start frames of the clips, in order and without duplicates (a short video gives `[0]`)."""
        _check_clip_args(num_video_frames, num_frames, frame_stride)
        if self.kind == "center":
            return [centered_clip_start(num_video_frames, num_frames, frame_stride)]
        if self.kind == "random":
            return [random_clip_start(num_video_frames, num_frames, frame_stride, generator)]
        if self.kind == "covering":
            return self._covering_starts(num_video_frames, num_frames, frame_stride)
        last_start = max_clip_start(num_video_frames, num_frames, frame_stride)
        if self.kind == "all":
            return list(range(last_start + 1))
        return sorted(set(np.linspace(0, last_start, self.count).round().astype(int).tolist()))


    def _covering_starts(self, num_video_frames: int, num_frames: int, frame_stride: int) -> list[int]:
        """Greedy cover: the first frame no chosen clip samples yet gets its covering clip, until none is left."""
        wanted = range(num_video_frames) if self.frames is None else self.frames
        outside = [frame for frame in wanted if frame >= num_video_frames]
        if outside:
            raise ValueError(f"frames {outside} are past the end of a {num_video_frames}-frame video")
        starts: list[int] = []
        covered: set[int] = set()
        for frame in wanted:
            if frame not in covered:
                start = covering_clip_start(num_video_frames, num_frames, frame_stride, frame)
                starts.append(start)
                covered.update(sample_clip_indices(num_video_frames, num_frames, frame_stride, start))
        return sorted(starts)


VideoLike = str | os.PathLike | np.ndarray | torch.Tensor
"""A video file, or decoded frames laid out THW, TCHW or THWC (uint8, or float on the 0-255 scale)."""


@dataclass
class VideoClips:
    """
    The processed frames of one video and the clips to take from them (see [`DiscovrVideoProcessor.decode_clips`]).

    Attributes:
        frames: processed frames `(num_spatial_crops * num_decoded, C, H, W)`: only the frames some clip uses, once
            per spatial crop.
        clip_index: `(num_clips, num_frames)` positions in `frames` of each clip's frames.
        starts: start frame (in the source video) of each clip.
        crops: spatial crop of each clip (0 to `num_spatial_crops - 1`).
        num_video_frames: frames in the source video.
        frame_size: `(height, width)` of the source video's frames, as decoded (before any `frame_transform`).
        fps: the source video's frame rate (`None` for frame arrays).
    """

    frames: torch.Tensor
    clip_index: torch.Tensor
    starts: list[int]
    crops: list[int]
    num_video_frames: int
    frame_size: tuple[int, int] | None = None
    fps: float | None = None

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    def clips(self, selection: slice | Sequence[int] = slice(None)) -> torch.Tensor:
        """`pixel_values` of the selected clips: `(n, num_frames, C, H, W)`."""
        index = self.clip_index[selection]
        if len(index) == 1 and torch.equal(index[0], torch.arange(len(self.frames))):
            return self.frames.unsqueeze(0)  # one clip of every frame in order (training's case): no gather copy
        return self.frames[index]


def spatial_crop_offsets(long_side: int, crop_size: int, num_crops: int) -> list[int]:
    """Offsets of `num_crops` crops spread evenly along a frame's longer side, VideoMAE's test-time crops (they
    coincide when the frame is square)."""
    step = (long_side - crop_size) / (num_crops - 1) if num_crops > 1 else 0.0
    return [int(i * step) for i in range(num_crops)]


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM: a `.dcm` / `.dicom` name, or the `DICM` marker after the 128-byte preamble."""
    if os.fspath(path).lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_with_sector(
    path: str, sample_indices_fn: Callable[..., Sequence[int]] | None, mask_sector: bool
) -> tuple[torch.Tensor, VideoMetadata]:
    """DICOM files and sector masking, from `discovr.data`, imported only now (see `DICOM_INSTALL_HINT`)."""
    try:
        # Absolute, and inside `try`: Transformers copies no file for it when saving remote code, and does not
        # require the package of a remote-code user who never reads DICOM.
        from discovr.data.sector import read_sector_video
    except ImportError as error:
        raise VideoDecodeError(
            f"Cannot decode video '{path}': reading DICOM files and masking the ultrasound sector need the discovr "
            f"package with its DICOM extra ({DICOM_INSTALL_HINT}); {error}",
            path,
        ) from None
    return read_sector_video(path, sample_indices_fn, mask_sector=mask_sector)


def read_video(
    path: str | os.PathLike,
    sample_indices_fn: Callable[..., Sequence[int]] | None = None,
    mask_sector: bool | None = None,
) -> tuple[torch.Tensor, VideoMetadata]:
    """
    Decode the frames of a video file that `sample_indices_fn(metadata=...)` asks for (all frames without it).

    Returns a uint8 tensor (T, C, H, W) and the video metadata. Video files are decoded with torchcodec, and only
    the requested frames are decoded. DICOM files (see [`is_dicom_file`]) never reach torchcodec, which gets their
    frame count and rate wrong: `discovr.data.dicom.read_dicom_video` decodes them.

    Args:
        path: the video or DICOM file.
        sample_indices_fn: picks the frame indices from the metadata.
        mask_sector: keep only the ultrasound sector, cropped to a square (`discovr.data.sector`): `None` (default)
            for DICOM files only, `True` for every file, `False` for none. The metadata then describes the crop.

    Raises:
        VideoDecodeError: the file is missing, cannot be opened, has no frames, or is truncated. For DICOM, its
            subclasses in `discovr.data.errors` say why a file is refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(f"Cannot decode video '{path}': file not found", path)
    if mask_sector or is_dicom_file(path):
        return _read_with_sector(path, sample_indices_fn, mask_sector is not False)
    from torchcodec.decoders import VideoDecoder

    try:
        # "exact" scans the packets once, so the frame count is what the file really holds (truncation shows).
        decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=1)
    except (RuntimeError, ValueError) as error:
        cause = str(error).strip().splitlines()[-1].split(", ")[-1]
        raise VideoDecodeError(f"Cannot decode video '{path}': not a readable video ({cause})", path) from None

    stream = decoder.metadata
    num_frames = len(decoder)
    if num_frames == 0:
        raise VideoDecodeError(f"Cannot decode video '{path}': it has no frames", path)
    declared = stream.num_frames_from_header
    if declared is not None and num_frames < declared:
        raise VideoDecodeError(
            f"Cannot decode video '{path}': truncated, the header declares {declared} frames but only {num_frames} "
            "are present",
            path,
        )
    metadata = VideoMetadata(
        total_num_frames=num_frames,
        fps=stream.average_fps,
        duration=stream.duration_seconds,
        video_backend="torchcodec",
        height=stream.height,
        width=stream.width,
    )
    indices = sample_indices_fn(metadata=metadata) if sample_indices_fn is not None else range(num_frames)
    indices = [int(index) for index in indices]
    # Each frame is decoded once, in order: torchcodec re-seeks for every repeated index (last-frame padding),
    # which made padded clips about 40x slower to decode.
    requested = np.asarray(indices, dtype=np.int64)
    unique, positions = np.unique(requested, return_inverse=True)
    try:
        frames = decoder.get_frames_at(indices=unique.tolist()).data
    except (RuntimeError, IndexError) as error:
        raise VideoDecodeError(f"Cannot decode video '{path}': frames {indices} failed ({error})", path) from None
    if not np.array_equal(unique, requested):
        frames = frames[torch.from_numpy(positions.reshape(-1))]
    metadata.frames_indices = indices
    return frames, metadata


def compute_mean_std(
    paths: Sequence[str | os.PathLike], samples: int | None = 128, seed: int = 0, mask_sector: bool | None = None
) -> tuple[list[float], list[float]]:
    """
    Per-channel mean and std of pixel values in [0, 1] over every frame of `samples` videos drawn from `paths`.

    This is EchoNet's practice of normalising with training-split statistics. Pass the result as
    `DiscovrVideoProcessor(image_mean=mean, image_std=std)` and save the processor to keep it with the model.

    Args:
        paths: video files, usually the training split.
        samples: videos drawn at random without replacement (`None` uses them all).
        seed: seed of that draw.
        mask_sector: as in [`read_video`]; pass the processor's `do_mask_sector` so the statistics are of what the
            model sees.
    """
    if len(paths) == 0:
        raise ValueError("compute_mean_std needs at least one video path")
    chosen = list(paths)
    if samples is not None and samples < len(chosen):
        order = np.random.default_rng(seed).permutation(len(chosen))[:samples]
        chosen = [chosen[i] for i in sorted(order)]

    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for path in tqdm(chosen, desc="mean/std", unit="video", disable=len(chosen) < 16):
        frames, _ = read_video(path, mask_sector=mask_sector)
        # torchcodec always returns RGB, so grayscale echoes already count as three equal channels.
        frames = frames.to(torch.float64) / 255.0
        total += frames.sum(dim=(0, 2, 3))
        total_sq += (frames**2).sum(dim=(0, 2, 3))
        count += frames.shape[0] * frames.shape[2] * frames.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


class DiscovrVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    frame_stride (`int`, *optional*, defaults to `self.frame_stride`):
        Step between the sampled frames of a clip.
    do_random_start (`bool`, *optional*, defaults to `self.do_random_start`):
        Start the clip at a uniformly random frame (training), instead of `start` or the centre.
    start (`int`, *optional*, defaults to `self.start`):
        First frame of the clip when `do_random_start=False`. `None` centres the clip in the video.
    generator (`torch.Generator`, *optional*):
        Generator of the random start, for reproducible draws. Never saved with the processor.
    do_mask_sector (`bool`, *optional*, defaults to `self.do_mask_sector`):
        Keep only the ultrasound sector of file inputs, zero outside it and cropped to a square: `None` for DICOM
        files only, `True` for every file (AVI and MP4 exports with burned-in overlays too), `False` for none. A
        setting of the processor (constructor, `from_pretrained` or attribute), since it decides how files are
        decoded; it cannot change per call.
    """

    frame_stride: int
    do_random_start: bool
    start: int | None
    generator: torch.Generator | None
    do_mask_sector: bool | None


class DiscovrVideoProcessor(BaseVideoProcessor):
    r"""
    Turns echo videos into DISCOVR `pixel_values` of shape (batch, num_frames, 3, height, width).

    A clip is `num_frames` frames taken every `frame_stride` frames, from a random start (`do_random_start=True`,
    training), a given `start`, or the centre of the video. A video shorter than the clip repeats its last frame.
    Video files are decoded with torchcodec, and only the frames of the clip are decoded. DICOM files (`.dcm`, or
    any file with the DICOM marker) are decoded with pydicom and cropped to their ultrasound sector (see
    `do_mask_sector`); they need the `discovr` package with its DICOM extra. Grayscale input is
    replicated to 3 channels, frames are resized to `size` and normalised with `image_mean` / `image_std`
    (ImageNet by default; see [`compute_mean_std`] for dataset statistics).

    Accepted videos: file paths (video or DICOM), lists of PIL frames, and numpy arrays or torch tensors, uint8 (or
    float on the same 0-255 scale), laid out THW (grayscale), TCHW or THWC, alone or in a list.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 112, "width": 112}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 64
    frame_stride = 3
    do_random_start = False
    start = None
    generator = None
    do_mask_sector = None
    valid_kwargs = DiscovrVideoProcessorKwargs
    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs: Unpack[DiscovrVideoProcessorKwargs]):
        if kwargs.get("generator") is not None:
            raise ValueError("Pass `generator` to the processor call, not to its constructor: it cannot be saved.")
        super().__init__(**kwargs)

    def preprocess(self, videos: VideoInput, **kwargs: Unpack[DiscovrVideoProcessorKwargs]) -> BatchFeature:
        if "do_mask_sector" in kwargs:
            raise ValueError(
                "`do_mask_sector` is a setting of the processor, not of a call: pass it to the constructor or "
                "`from_pretrained`, or set `processor.do_mask_sector`."
            )
        batch = super().preprocess(_as_video_list(videos), **kwargs)
        batch["pixel_values"] = batch.pop("pixel_values_videos")
        return batch

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Resize, crop, rescale and normalise each group of same-shape videos as one batch, as the base class does.

        When all videos share one shape and tensors are asked for, that processed batch is returned as it is: the
        base class splits it into videos and stacks them again, a second full copy of the float output.
        """
        grouped, index = group_videos_by_shape(videos)
        processed = {}
        for shape, stacked in grouped.items():
            if do_resize:
                stacked = self.resize(stacked, size=size, resample=resample)
            if do_center_crop:
                stacked = self.center_crop(stacked, crop_size)
            processed[shape] = self.rescale_and_normalize(
                stacked, do_rescale, rescale_factor, do_normalize, image_mean, image_std
            )
        if return_tensors is not None and TensorType(return_tensors) == TensorType.PYTORCH and len(processed) == 1:
            (batch,) = processed.values()
            return BatchFeature(data={"pixel_values_videos": batch})
        return BatchFeature(data={"pixel_values_videos": reorder_videos(processed, index)}, tensor_type=return_tensors)

    def rescale_and_normalize(
        self,
        images: torch.Tensor,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float],
        image_std: float | list[float],
    ) -> torch.Tensor:
        """
        The base class's fused rescale and normalisation, on a float copy made in the standard memory layout.

        torchcodec decodes frames channels-last in memory, where a per-channel normalisation runs over rows of
        three values; in the standard layout it runs over whole planes.
        """
        image_mean, image_std, do_rescale = self._fuse_mean_std_and_rescale_factor(
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            device=images.device,
        )
        if do_normalize:
            converted = images.to(torch.float32, memory_format=torch.contiguous_format)
            # In place only on a copy of our own: a float input may be the caller's array.
            return self.normalize(converted, image_mean, image_std, inplace=converted is not images)
        if do_rescale:
            return self.rescale(images, rescale_factor)
        return images

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        frame_stride: int | None = None,
        do_random_start: bool | None = None,
        start: int | None = None,
        generator: torch.Generator | None = None,
        fps: int | float | None = None,
        **kwargs,
    ) -> np.ndarray:
        """
        Indices of the clip to take from a video described by `metadata`.

        Args:
            metadata: the video's metadata; only `total_num_frames` is used.
            num_frames: frames per clip. Defaults to `self.num_frames`.
            frame_stride: step between frames. Defaults to `self.frame_stride`.
            do_random_start: draw the start at random. Defaults to `self.do_random_start`.
            start: start when not random; `None` centres the clip. Defaults to `self.start`.
            generator: generator of the random start.
            fps: not supported: DISCOVR samples by frame stride, so a value raises.
        """
        if fps is not None:
            raise ValueError("DiscovrVideoProcessor samples by `frame_stride`, not `fps`; leave `fps` unset.")
        num_frames = num_frames if num_frames is not None else self.num_frames
        frame_stride = frame_stride if frame_stride is not None else self.frame_stride
        total = metadata.total_num_frames
        start = self.clip_start(total, num_frames, frame_stride, do_random_start, start, generator)
        return np.asarray(sample_clip_indices(total, num_frames, frame_stride, start), dtype=np.int64)

    def clip_start(
        self,
        num_video_frames: int,
        num_frames: int | None = None,
        frame_stride: int | None = None,
        do_random_start: bool | None = None,
        start: int | None = None,
        generator: torch.Generator | None = None,
    ) -> int:
        """The start of this processor's clip: random (training), its fixed `start`, or centred (see
        [`sample_frames`] for the arguments; each defaults to the processor's own setting)."""
        num_frames = num_frames if num_frames is not None else self.num_frames
        frame_stride = frame_stride if frame_stride is not None else self.frame_stride
        do_random_start = do_random_start if do_random_start is not None else self.do_random_start
        start = start if start is not None else self.start
        if do_random_start:
            return random_clip_start(num_video_frames, num_frames, frame_stride, generator=generator)
        if start is None:
            return centered_clip_start(num_video_frames, num_frames, frame_stride)
        if start >= num_video_frames:
            raise ValueError(f"start={start} is past the end of a {num_video_frames}-frame video")
        return start

    def fetch_videos(self, video_url_or_urls: str | list[str], sample_indices_fn: Callable | None = None):
        """
        Decode local video or DICOM files with [`read_video`], only the frames `sample_indices_fn` selects, masked as
        `do_mask_sector` says. Everything that decodes a file for this processor goes through here.
        """
        if isinstance(video_url_or_urls, (list, tuple)):
            return list(zip(*[self.fetch_videos(path, sample_indices_fn) for path in video_url_or_urls]))
        return read_video(video_url_or_urls, sample_indices_fn, mask_sector=self.do_mask_sector)

    def decode_clips(
        self,
        videos: VideoLike | Sequence[VideoLike],
        clips: ClipSampling | str | int = "center",
        generator: torch.Generator | None = None,
        spatial_crops: int = 1,
        frame_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> VideoClips | list[VideoClips]:
        """
        Decode and process the clips of a video: what training, evaluation, the pipeline and the cluster maps read.

        Args:
            videos: a video or DICOM file (decoded with [`fetch_videos`], which raises `VideoDecodeError` naming the
                file, and decodes only the frames some clip uses), or decoded frames (see `VideoLike`). A list of
                them gives a list of `VideoClips`: each video is decoded alone and all are processed as one batch
                (a DataLoader batch's rows), whose rows the `VideoClips` share without a copy.
            clips: which clips, a [`ClipSampling`] or its string form. `"center"` is this processor's own clip: a
                fixed `start` saved with it is honoured. `"random"` draws its start from `generator`.
            spatial_crops: `1` resizes whole frames to `size`. `K > 1` takes VideoMAE's test-time crops instead:
                the shorter side resized to `size` and K square crops spread along the longer side, each a clip of
                its own (clips x crops). On square frames the K crops coincide.
            frame_transform: applied to a file's decoded frames `(T, C, H, W)` before they are processed, for
                augmentations that crop (pretraining's multi-scale crop).
        """
        sampling = ClipSampling.parse(clips)
        if spatial_crops < 1:
            raise ValueError(f"spatial_crops must be >= 1, got {spatial_crops}")
        many = isinstance(videos, (list, tuple))
        plans = [self._clip_frames(video, sampling, generator, frame_transform) for video in (videos if many else [videos])]
        decoded = [plan.pop("decoded") for plan in plans]
        if spatial_crops == 1:
            same_shape = len({tuple(frames.shape) for frames in decoded}) == 1
            processed = self(decoded, do_sample_frames=False, return_tensors="pt" if same_shape else None)["pixel_values"]
        else:
            processed = [self._spatial_crops(frames, spatial_crops) for frames in decoded]
        video_clips = [
            self._gather_clips(frames, spatial_crops, **plan) for frames, plan in zip(processed, plans, strict=True)
        ]
        return video_clips if many else video_clips[0]

    def _clip_frames(
        self, video: VideoLike, sampling: ClipSampling, generator: torch.Generator | None,
        frame_transform: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> dict:
        """Decode the frames that the clips of `sampling` use: `decoded`, their indices, the clip starts and the
        video's frame count."""
        num_frames, frame_stride = self.num_frames, self.frame_stride

        def needed_frames(total: int) -> tuple[list[int], list[int]]:
            if sampling.kind in ("center", "random"):
                starts = [self.clip_start(total, do_random_start=sampling.kind == "random", generator=generator)]
            else:
                starts = sampling.starts(total, num_frames, frame_stride, generator)
            frames = sorted({i for start in starts for i in sample_clip_indices(total, num_frames, frame_stride, start)})
            return starts, frames

        if isinstance(video, (str, os.PathLike)):
            chosen: dict[str, list[int]] = {}

            def sample_indices_fn(metadata, **kwargs) -> list[int]:
                chosen["starts"], chosen["frames"] = needed_frames(metadata.total_num_frames)
                return chosen["frames"]

            decoded, metadata = self.fetch_videos(os.fspath(video), sample_indices_fn)
            total, starts, frame_ids = metadata.total_num_frames, chosen["starts"], chosen["frames"]
            frame_size, fps = tuple(decoded.shape[-2:]), metadata.fps
            if frame_transform is not None:
                decoded = frame_transform(decoded)
        elif isinstance(video, (np.ndarray, torch.Tensor)):
            if video.ndim not in (3, 4):
                raise ValueError(f"A video array must be THW, TCHW or THWC, got shape {tuple(video.shape)}")
            total = int(video.shape[0])
            if total == 0:
                raise ValueError("Got a video array with no frames")
            if frame_transform is not None:
                raise ValueError("frame_transform applies to decoded files, not to frame arrays")
            starts, frame_ids = needed_frames(total)
            decoded = video[frame_ids]
            frame = _as_video(decoded)[0]
            channels_first = video.ndim == 3 or infer_channel_dimension_format(np.asarray(frame)) == ChannelDimension.FIRST
            frame_size, fps = tuple(frame.shape[-2:] if channels_first else frame.shape[:2]), None
        else:
            raise ValueError(f"A video must be a file path or a frame array, got {type(video).__name__}")
        return {
            "decoded": decoded, "frame_ids": frame_ids, "starts": starts, "total": total, "frame_size": frame_size,
            "fps": fps,
        }

    def _gather_clips(
        self, frames: torch.Tensor, spatial_crops: int, frame_ids: list[int], starts: list[int], total: int,
        frame_size: tuple[int, int], fps: float | None,
    ) -> VideoClips:
        """`VideoClips` of processed `frames` (`spatial_crops` copies of the frames `frame_ids`, crop by crop)."""
        position = {frame: i for i, frame in enumerate(frame_ids)}
        rows = [
            [position[i] for i in sample_clip_indices(total, self.num_frames, self.frame_stride, start)]
            for start in starts
        ]
        clip_index = torch.tensor(
            [[crop * len(frame_ids) + row for row in clip] for clip in rows for crop in range(spatial_crops)],
            dtype=torch.long,
        )
        return VideoClips(
            frames=frames,
            clip_index=clip_index,
            starts=[start for start in starts for _ in range(spatial_crops)],
            crops=[crop for _ in starts for crop in range(spatial_crops)],
            num_video_frames=total,
            frame_size=(int(frame_size[0]), int(frame_size[1])),
            fps=fps,
        )

    def _spatial_crops(self, decoded, spatial_crops: int) -> torch.Tensor:
        """Processed crops `(spatial_crops * T, C, H, W)` of one video's frames (see [`decode_clips`])."""
        crop_size = self.size["height"]
        if self.size.get("width") != crop_size:
            raise ValueError(f"spatial crops need a square processor `size`, got {dict(self.size)}")
        resized = self(
            decoded, do_sample_frames=False, size={"shortest_edge": crop_size}, return_tensors="pt"
        )["pixel_values"][0]
        height, width = resized.shape[-2:]
        offsets = spatial_crop_offsets(max(height, width), crop_size, spatial_crops)
        if height >= width:
            crops = [resized[..., offset : offset + crop_size, :] for offset in offsets]
        else:
            crops = [resized[..., offset : offset + crop_size] for offset in offsets]
        return torch.cat(crops)

    def post_process_semantic_segmentation(
        self, outputs: ModelOutput, target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """
        Per-frame label maps from the output of [`DiscovrForSemanticSegmentation`], one `(T, H, W)` long tensor per
        video: the argmax over classes of the logits, bilinearly upsampled first to `target_sizes[i]` (the `(H, W)`
        of video i, e.g. its frames' size) when given, at the logits' patch resolution otherwise.
        """
        logits = outputs.logits
        if logits.dim() != 5:
            raise ValueError(
                "`outputs.logits` must have shape (batch_size, num_frames, num_labels, height, width), got "
                f"{tuple(logits.shape)}"
            )
        if target_sizes is None:
            return list(logits.max(dim=2).indices)
        if len(target_sizes) != len(logits):
            raise ValueError(
                f"`target_sizes` must hold one (height, width) per video: got {len(target_sizes)} for a batch of "
                f"{len(logits)}"
            )
        return [
            # `max(...).indices` is argmax with the same first-maximum rule, about 10x faster over the class axis.
            torch.nn.functional.interpolate(
                video_logits, size=tuple(int(side) for side in size), mode="bilinear", align_corners=False
            ).max(dim=1).indices
            for video_logits, size in zip(logits, target_sizes, strict=True)
        ]


def _as_video(video):
    """One video as a 4-D array or tensor (grayscale THW gains a channel axis), or a path string."""
    if isinstance(video, os.PathLike):
        return os.fspath(video)
    if isinstance(video, str):
        return video
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("Got an empty list of frames")
        from PIL import Image

        if not all(isinstance(frame, Image.Image) for frame in video):
            raise ValueError("A video given as a list must hold PIL images only")
        video = np.stack([np.asarray(frame if frame.mode in ("L", "RGB") else frame.convert("RGB")) for frame in video])
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim == 3:
            return video[:, None]
        if video.ndim == 4:
            return video
        raise ValueError(f"A video array must be THW, TCHW or THWC, got shape {tuple(video.shape)}")
    raise ValueError(f"Unsupported video input of type {type(video).__name__}")


def _as_video_list(videos: VideoInput) -> list:
    """Normalise the accepted inputs to a list of videos, which Transformers' batching then handles."""
    from PIL import Image

    if isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 5:
        return list(videos)
    if isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], Image.Image):
        return [_as_video(videos)]
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("Got an empty list of videos")
        return [_as_video(video) for video in videos]
    return [_as_video(videos)]


__all__ = [
    "VideoClips",
    "VideoLike",
    "DICOM_SUFFIXES",
    "DiscovrVideoProcessor",
    "VIDEO_SUFFIXES",
    "ClipSampling",
    "VideoDecodeError",
    "centered_clip_start",
    "clip_span",
    "compute_mean_std",
    "is_dicom_file",
    "max_clip_start",
    "random_clip_start",
    "read_video",
    "sample_clip_indices",
]
