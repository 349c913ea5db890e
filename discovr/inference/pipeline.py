"""The `video-classification` pipeline for DISCOVR models: strided clips, optional multi-clip averaging.

Transformers' stock `VideoClassificationPipeline` hands the processor only `num_frames`, so the clip it sees depends
on the processor's own sampler, and it has no way to average several clips of one video. DISCOVR models get
[`DiscovrVideoClassificationPipeline`] instead, which samples with the processor's one clip sampler (`frame_stride`,
`start` or centred) and averages the clips that `clips` asks for. Every other model keeps the stock pipeline: see
[`register_pipeline`] for how the task dispatches between the two.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from transformers.pipelines import PIPELINE_REGISTRY, VideoClassificationPipeline
from transformers.pipelines.base import ChunkPipeline, no_collate_fn
from transformers.pipelines.pt_utils import PipelineChunkIterator, PipelineIterator, PipelinePackIterator
from transformers.utils import logging

from .prediction import aggregate_clip_logits
from ..video_processing_discovr import ClipSampling


logger = logging.get_logger(__name__)

TASK = "video-classification"
CENTER = ClipSampling("center")

# `aggregate_clip_logits` is the one place that defines how clips are averaged; it keys on the problem type, and
# each `function_to_apply` corresponds to the problem type whose default it is.
_FUNCTION_PROBLEM_TYPE = {
    "none": "regression",
    "softmax": "single_label_classification",
    "sigmoid": "multi_label_classification",
}


def _collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    # Transformers' batching collate needs an image processor or a feature extractor to read padding settings from;
    # a video-processor model has neither, and clips all have the same shape, so concatenating is the whole job.
    return {
        "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        "clip_start": [item["clip_start"] for item in items],
        "is_last": [item["is_last"] for item in items],
    }


class DiscovrVideoClassificationPipeline(VideoClassificationPipeline, ChunkPipeline):
    """
    Video classification (or LVEF regression) with a DISCOVR model, one or several clips per video.

    A clip is `num_frames` (the model's) frames taken every `frame_stride` frames (the processor's). `clips` uses
    the one vocabulary of the package (`ClipSampling`): `"center"` (the default) is the clip the processor itself
    takes at evaluation, from the processor's `start`, or centred in the video when `start` is None;
    `"uniform:K"` (or the integer K) takes K clips at evenly spaced starts from the first to the last start at
    which a whole clip fits (fewer for a video too short to hold K distinct clips), and `"all"` every such start,
    EchoNet's test-time averaging. `"random"` draws one random start. A video shorter than one clip repeats its
    last frame.

    Averaging: regression models average the raw outputs (EF in %); classification models average the per-clip
    probabilities (softmax, or sigmoid for multi-label), not the logits. `function_to_apply` picks the function
    applied to each clip before the average (`"none"` averages the logits).

    Each video is decoded once, and only the frames its clips need. Every clip is one model input, so `batch_size`
    batches clips, within a video and across the videos of a list.

    Returns, per video, the `top_k` labels with their scores, e.g. `[{"label": "LVEF", "score": 57.3}]` for an
    LVEF model. With `return_clip_starts=True`, a dict `{"predictions": [...], "clip_starts": [...]}` instead.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.video_processor is None:
            raise ValueError(
                "The DISCOVR video-classification pipeline needs the video processor saved beside the model "
                "(`processor.save_pretrained(model_dir)`)."
            )
        config_frames, processor_frames = self.model.config.num_frames, self.video_processor.num_frames
        if config_frames != processor_frames:
            raise ValueError(
                f"The video processor takes {processor_frames} frames per clip but the model expects {config_frames}; "
                "save the processor the model was trained with beside it."
            )

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        clips: ClipSampling | str | int | None = None,
        spatial_crops: int | None = None,
        return_clip_starts: bool | None = None,
    ) -> tuple[dict, dict, dict]:
        _, _, postprocess_params = super()._sanitize_parameters(top_k=top_k, function_to_apply=function_to_apply)
        preprocess_params = {}
        if clips is not None:
            preprocess_params["clips"] = ClipSampling.parse(clips)
        if spatial_crops is not None:
            if isinstance(spatial_crops, bool) or not isinstance(spatial_crops, int) or spatial_crops < 1:
                raise ValueError(f"spatial_crops must be a positive integer, got {spatial_crops!r}")
            preprocess_params["spatial_crops"] = spatial_crops
        if return_clip_starts is not None:
            postprocess_params["return_clip_starts"] = return_clip_starts
        return preprocess_params, {}, postprocess_params

    def __call__(self, inputs, **kwargs):
        """
        Predict the class scores, or the LVEF, of one video or a list of videos.

        Args:
            inputs (`str`, `os.PathLike`, `np.ndarray`, `torch.Tensor`, or a `list` of them):
                Video files (any format FFmpeg decodes: AVI, MP4, ...) or decoded frames laid out THW, TCHW or
                THWC. A list is processed as a batch.
            clips (`str` or `int`, *optional*, defaults to `"center"`):
                Clips averaged per video: `"center"`, `"random"`, `"all"`, `"uniform:K"` or an integer K; see the
                class docstring for where they start.
            spatial_crops (`int`, *optional*, defaults to 1):
                Test-time spatial crops per clip, averaged with the clips: the shorter side resized to the model's
                size and that many square crops spread along the longer side (VideoMAE's protocol; on square
                videos they coincide). 1 resizes the whole frame, as training does.
            top_k (`int`, *optional*, defaults to 5):
                Labels returned per video (at most `num_labels`; an LVEF model has one).
            function_to_apply (`str`, *optional*):
                `"softmax"`, `"sigmoid"` or `"none"`, applied to each clip's logits before averaging. Defaults to
                `"none"` for regression, `"sigmoid"` for multi-label and `"softmax"` otherwise.
            return_clip_starts (`bool`, *optional*, defaults to `False`):
                Also return the first frame of every averaged clip.
            batch_size (`int`, *optional*, defaults to 1):
                Clips per forward pass.

        Return:
            Per video, a list of `{"label": str, "score": float}` (a list of those lists for a list of videos), or
            `{"predictions": [...], "clip_starts": [...]}` with `return_clip_starts=True`.
        """
        return super().__call__(inputs, **kwargs)

    def preprocess(self, video, clips: ClipSampling = CENTER, spatial_crops: int = 1) -> Iterator[dict[str, Any]]:
        if isinstance(video, os.PathLike):
            video = os.fspath(video)
        video_clips = self.video_processor.decode_clips(video, clips, spatial_crops=spatial_crops)
        starts, clips = video_clips.starts, video_clips.clips().to(self.dtype)
        for index, start in enumerate(starts):
            yield {"pixel_values": clips[index : index + 1], "clip_start": start, "is_last": index == len(starts) - 1}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        logits = self.model(pixel_values=model_inputs["pixel_values"]).logits
        return {"logits": logits, "clip_start": model_inputs["clip_start"], "is_last": model_inputs["is_last"]}

    def postprocess(
        self,
        model_outputs: list[dict[str, Any]],
        top_k: int = 5,
        function_to_apply: str | None = None,
        return_clip_starts: bool = False,
    ) -> list[dict[str, Any]] | dict[str, Any]:
        config = self.model.config
        if function_to_apply is None:
            if config.problem_type == "regression":
                function_to_apply = "none"
            elif config.problem_type == "multi_label_classification":
                function_to_apply = "sigmoid"
            else:
                function_to_apply = "softmax"
        clip_logits = torch.cat([output["logits"] for output in model_outputs]).float()
        scores = aggregate_clip_logits(clip_logits, _FUNCTION_PROBLEM_TYPE[function_to_apply])
        top_scores, ids = scores.topk(min(top_k, config.num_labels))
        predictions = [
            {"label": config.id2label[label_id], "score": score}
            for score, label_id in zip(top_scores.tolist(), ids.tolist())
        ]
        if return_clip_starts:
            return {"predictions": predictions, "clip_starts": [int(output["clip_start"]) for output in model_outputs]}
        return predictions

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        # As `ChunkPipeline.get_iterator`, with a collate that works without an image processor (see
        # `_collate_clips`). The clips come from one iterable over all videos, which a single worker must own.
        dataset = PipelineChunkIterator(inputs, self.preprocess, preprocess_params)
        collate_fn = no_collate_fn if batch_size == 1 else _collate_clips
        loader = torch.utils.data.DataLoader(
            dataset, num_workers=min(num_workers, 1), batch_size=batch_size, collate_fn=collate_fn
        )
        model_iterator = PipelinePackIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


class VideoClassificationDispatcher(VideoClassificationPipeline):
    """
    The registered implementation of the `video-classification` task after `import discovr`.

    `pipeline()` instantiates the task's class with the loaded model; this one returns a
    [`DiscovrVideoClassificationPipeline`] for a DISCOVR model and the stock `VideoClassificationPipeline` for any
    other, so the task keeps working unchanged for VideoMAE, TimeSformer, ... It is never an instance itself.
    """

    def __new__(cls, model, *args, **kwargs):
        is_discovr = getattr(model.config, "model_type", None) == "discovr"
        target = DiscovrVideoClassificationPipeline if is_discovr else VideoClassificationPipeline
        # The returned object is not an instance of `cls`, so Python does not call `__init__` a second time.
        return target(model, *args, **kwargs)


def register_pipeline() -> None:
    """
    Make `pipeline("video-classification", model=...)` use [`DiscovrVideoClassificationPipeline`] for DISCOVR models.

    Transformers picks a pipeline class per task, not per model, so the alternatives were:
    - `pipeline(..., pipeline_class=DiscovrVideoClassificationPipeline)`: works, but every caller must pass it;
    - `custom_pipelines` in the saved config: Transformers loads those only with `trust_remote_code=True`;
    - `PIPELINE_REGISTRY.register_pipeline(task, DiscovrVideoClassificationPipeline)`: the subclass would then serve
      every model of the task, and VideoMAE & co. would break.

    Instead the task's `impl` becomes [`VideoClassificationDispatcher`], which picks the class from the loaded
    model's `model_type`. Only `impl` is replaced, in place: the task keeps its model classes and default model,
    `register_pipeline`'s "overwriting" warning is not raised at every import, and no `_registered_impl` is attached,
    so saving a pipeline does not write a `custom_pipelines` entry into the model's config.
    """
    PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] = VideoClassificationDispatcher


__all__ = [
    "DiscovrVideoClassificationPipeline",
    "VideoClassificationDispatcher",
    "register_pipeline",
]
