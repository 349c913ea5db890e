"""Frozen-encoder features per video (the CLS token, averaged over clips), cached on disk as safetensors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..clips import check_clip_mode, iter_video_clips, run_on_clips
from ..video_processing_discovr import DiscovrVideoProcessor


logger = logging.getLogger(__name__)

# Bump when the way features are computed changes, so stale caches are not reused.
FEATURE_VERSION = 1


def _weights_fingerprint(model_dir: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of every weight file of a saved model: a re-saved model gets a new cache key."""
    files = sorted(
        path
        for path in Path(model_dir).iterdir()
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json"))
    )
    if not files:
        raise ValueError(f"No weight files (*.safetensors, *.bin) in model directory {model_dir}")
    return [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in files]


def feature_cache_key(
    model_dir: str | os.PathLike, videos: Sequence[str], processor: DiscovrVideoProcessor, mode: str
) -> str:
    """
    Hash of what the features depend on: the model directory and its weight files (name, size, mtime), the videos
    in order, and the clip settings (mode plus the processor's clip length, stride, size and normalisation).
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
        "clip_mode": mode,
        "processor": json.loads(json.dumps(settings, default=str)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@torch.inference_mode()
def extract_features(
    encoder: torch.nn.Module,
    processor: DiscovrVideoProcessor,
    videos: Sequence[str],
    mode: str = "center",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """
    The CLS feature of each video, `(num_videos, hidden_size)`, averaged over the clips that `mode` selects.

    Args:
        encoder: a `DiscovrModel` (its `last_hidden_state[:, 0]` is the CLS token), in eval mode.
        processor: defines clip length, stride, size and normalisation.
        videos: video files.
        mode: clips per video, see `resolve_clip_starts` (`"center"`, `"all"`, `"uniform:K"`).
        batch_size: clips per forward pass.
        num_workers: background decoding processes.
        progress: show a progress bar.
    """
    check_clip_mode(mode)
    encoder.eval()
    device = next(encoder.parameters()).device

    def cls(pixel_values: torch.Tensor) -> torch.Tensor:
        return encoder(pixel_values=pixel_values).last_hidden_state[:, 0]

    features = [
        run_on_clips(cls, clips, batch_size, device).mean(dim=0)
        for clips in iter_video_clips(processor, videos, mode, num_workers, progress, description="features")
    ]
    if not features:
        raise ValueError("extract_features got no videos")
    return torch.stack(features)


def cached_features(
    encoder: torch.nn.Module,
    model_dir: str | os.PathLike,
    processor: DiscovrVideoProcessor,
    videos: Sequence[str],
    cache_dir: str | os.PathLike,
    name: str,
    mode: str = "center",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """
    [`extract_features`], read from `cache_dir/<name>-<key>.safetensors` when that file exists.

    The key is [`feature_cache_key`], so a change of weights, videos or clip settings computes new features.
    """
    key = feature_cache_key(model_dir, videos, processor, mode)
    path = Path(cache_dir) / f"{name}-{key[:16]}.safetensors"
    if path.is_file():
        stored = load_file(path)
        features = stored["features"]
        if features.shape[0] == len(videos):
            logger.info("Loaded %s features %s from cache %s", name, tuple(features.shape), path)
            return features
        logger.warning("Feature cache %s has %d rows for %d videos; recomputing", path, features.shape[0], len(videos))
    features = extract_features(encoder, processor, videos, mode, batch_size, num_workers, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.contiguous()}, str(path), metadata={"key": key, "clip_mode": mode, "split": name})
    logger.info("Cached %s features %s in %s", name, tuple(features.shape), path)
    return features


__all__ = ["cached_features", "extract_features", "feature_cache_key"]
