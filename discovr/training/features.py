"""Frozen-encoder features per video (the CLS token or the mean of the patch tokens, averaged over clips), cached
on disk as safetensors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..cli import InputError
from ..inference.prediction import iter_video_clips, run_on_clips
from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor


logger = logging.getLogger(__name__)

# Bump when the way features are computed changes, so stale caches are not reused.
FEATURE_VERSION = 2
# "cls": the CLS token; "mean": the mean of the patch tokens (VideoMAE's pooling). Random and pretrained encoders
# differ in which serves a probe best, so evaluations compare both (docs/benchmarks.md).
POOLINGS = ("cls", "mean")


def encoder_poolings(encoder: torch.nn.Module) -> tuple[str, ...]:
    """The poolings an encoder offers: both for DISCOVR (CLS first), only `"mean"` for one without a CLS token
    (such as Transformers' `VideoMAEModel`)."""
    return POOLINGS if getattr(encoder.config, "model_type", None) == "discovr" else ("mean",)


def pool_tokens(last_hidden_state: torch.Tensor, pooling: str, has_cls: bool = True) -> torch.Tensor:
    """`(B, L, D)` encoder outputs to `(B, D)`: the CLS token, or the mean of the patch tokens."""
    if pooling == "cls":
        if not has_cls:
            raise InputError("This encoder has no CLS token: use pooling 'mean'")
        return last_hidden_state[:, 0]
    if pooling == "mean":
        return last_hidden_state[:, int(has_cls):].mean(dim=1)
    raise InputError(f"Unknown pooling {pooling!r}; choose one of {POOLINGS}")


def _weights_fingerprint(model_dir: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of every weight file of a saved model: a re-saved model gets a new cache key."""
    files = sorted(
        path
        for path in Path(model_dir).iterdir()
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json"))
    )
    if not files:
        raise InputError(f"No weight files (*.safetensors, *.bin) in model directory {model_dir}")
    return [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in files]


def feature_cache_key(
    model_dir: str | os.PathLike, videos: Sequence[str], processor: DiscovrVideoProcessor,
    clips: ClipSampling | str | int,
) -> str:
    """
    Hash of what the features depend on: the model directory and its weight files (name, size, mtime), the videos
    in order, and the clip settings (the clips plus the processor's clip length, stride, size and normalisation).
    """
    settings = {
        key: getattr(processor, key)
        for key in ("num_frames", "frame_stride", "size", "image_mean", "image_std", "do_normalize", "rescale_factor")
    }
    payload = {
        "version": FEATURE_VERSION,
        "model_dir": str(Path(model_dir).resolve()),
        "weights": _weights_fingerprint(model_dir),
        "videos": [str(video) for video in videos],
        "clip_mode": str(ClipSampling.parse(clips)),
        "processor": json.loads(json.dumps(settings, default=str)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@torch.inference_mode()
def extract_features(
    encoder: torch.nn.Module,
    processor: DiscovrVideoProcessor,
    videos: Sequence[str],
    clips: ClipSampling | str | int = "center",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """
    Every pooling the encoder offers ([`encoder_poolings`]) of each video, `{pooling: (num_videos, hidden_size)}`,
    each averaged over the clips that `clips` selects. One forward pass per clip serves all poolings.

    Args:
        encoder: a `DiscovrModel`, or any encoder whose output has `last_hidden_state` (a `VideoMAEModel`), in eval
            mode.
        processor: defines clip length, stride, size and normalisation.
        videos: video files.
        clips: clips per video, a `ClipSampling` or its string form (`"center"`, `"all"`, `"uniform:K"`, ...).
        batch_size: clips per forward pass.
        num_workers: background decoding processes.
        progress: show a progress bar.
    """
    encoder.eval()
    device = next(encoder.parameters()).device
    poolings = encoder_poolings(encoder)
    has_cls = "cls" in poolings

    def pooled(pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = encoder(pixel_values=pixel_values).last_hidden_state
        return torch.stack([pool_tokens(hidden, pooling, has_cls) for pooling in poolings], dim=1)

    per_video = [
        run_on_clips(pooled, video_clips, batch_size, device).mean(dim=0)
        for video_clips in iter_video_clips(processor, videos, clips, num_workers, progress, description="features")
    ]
    if not per_video:
        raise ValueError("extract_features got no videos")
    stacked = torch.stack(per_video)
    return {pooling: stacked[:, index].contiguous() for index, pooling in enumerate(poolings)}


def cached_features(
    encoder: torch.nn.Module,
    model_dir: str | os.PathLike,
    processor: DiscovrVideoProcessor,
    videos: Sequence[str],
    cache_dir: str | os.PathLike,
    name: str,
    clips: ClipSampling | str | int = "center",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """
    [`extract_features`], read from `cache_dir/<name>-<key>.safetensors` when that file exists.

    The key is [`feature_cache_key`], so a change of weights, videos or clip settings computes new features.
    """
    key = feature_cache_key(model_dir, videos, processor, clips)
    path = Path(cache_dir) / f"{name}-{key[:16]}.safetensors"
    if path.is_file():
        stored = load_file(path)
        if set(stored) == set(encoder_poolings(encoder)) and all(t.shape[0] == len(videos) for t in stored.values()):
            logger.info("Loaded %s features (%s) from cache %s", name, ", ".join(sorted(stored)), path)
            return stored
        logger.warning("Feature cache %s does not match %d videos and this encoder's poolings; recomputing", path,
                       len(videos))
    features = extract_features(encoder, processor, videos, clips, batch_size, num_workers, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(features, str(path), metadata={"key": key, "clip_mode": str(ClipSampling.parse(clips)), "split": name})
    logger.info("Cached %s features %s in %s", name, {k: tuple(v.shape) for k, v in features.items()}, path)
    return features


__all__ = ["POOLINGS", "cached_features", "encoder_poolings", "extract_features", "feature_cache_key", "pool_tokens"]
