"""Named model sizes for pretraining and fine-tuning, and the video processor that matches a model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..cli import InputError
from ..configuration_discovr import DiscovrConfig
from ..modeling_discovr import DiscovrModel
from ..video_processing_discovr import DiscovrVideoProcessor

# `tiny` runs the demo and the tests on a laptop CPU; `small` is ViT-S; `base` is the published ViT-B.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size=64, num_frames=16, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=384, decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=256, num_prototypes=64, image_hidden_size=96, image_num_hidden_layers=2,
        image_num_attention_heads=4, image_intermediate_size=384, dino_hidden_size=256, dino_bottleneck_size=64,
        dino_out_dim=512, num_local_views=2,
        # Against DINO's uniform collapse on clips whose features barely differ (docs/pretraining.md, "Recipes").
        dino_head_batch_norm=True, koleo_loss_weight=0.1,
    ),
    "small": dict(
        hidden_size=384, num_attention_heads=6, intermediate_size=1536, decoder_hidden_size=192,
        decoder_num_attention_heads=3, decoder_intermediate_size=768, image_hidden_size=384,
        image_num_attention_heads=6, image_intermediate_size=1536,
    ),
    "base": {},
}


@dataclass(frozen=True)
class PretrainRecipe:
    """How a preset pretrains: the `discovr-pretrain` optimisation defaults that depend on the model size.

    The defaults are the published ViT-B recipe. `docs/pretraining.md` ("Recipes") gives the measurements behind
    every other preset's values; a `discovr-pretrain` flag overrides any of them.
    """

    base_lr: float = 1.5e-4  # learning rate for a global batch of 256 clips, scaled linearly
    min_lr: float = 1e-6
    warmup_epochs: float = 40
    weight_decay: float = 0.05
    weight_decay_end: float = 0.05
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    warmup_teacher_temperature: float = 0.04
    teacher_temperature: float = 0.07
    warmup_teacher_temperature_epochs: float = 30
    center_momentum: float = 0.9
    per_device_batch_size: int = 16
    clips_per_video: int = 1

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))


RECIPES: dict[str, PretrainRecipe] = {
    # A run of about 2,000 steps: an EMA horizon of ~100 steps, a sharp teacher from the start, and four clips of
    # every video per epoch, so that `--epochs 20` trains long enough to learn (docs/pretraining.md, "Recipes").
    "tiny": PretrainRecipe(
        base_lr=1.5e-2, warmup_epochs=2, momentum_teacher=0.99, warmup_teacher_temperature=0.04,
        teacher_temperature=0.04, warmup_teacher_temperature_epochs=0, clips_per_video=4,
    ),
    "small": PretrainRecipe(),
    "base": PretrainRecipe(),
}
# The published clip stride (the processor's default), for a model saved without a video processor.
DEFAULT_FRAME_STRIDE = DiscovrVideoProcessor.frame_stride


def load_model_config(preset: str | None = None, config_file: str | Path | None = None, **overrides) -> DiscovrConfig:
    """A `DiscovrConfig` from a named preset or a JSON file (a saved `config.json` works), plus overrides."""
    if (preset is None) == (config_file is None):
        raise ValueError("Give exactly one of a preset name or a config file")
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        kwargs = dict(PRESETS[preset])
    else:
        path = Path(config_file)
        try:
            kwargs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read model config {path}: {error}") from None
        for key in ("architectures", "auto_map", "transformers_version", "model_type"):
            kwargs.pop(key, None)
    kwargs.update(overrides)
    try:
        return DiscovrConfig(**kwargs)
    except ValueError as error:
        raise InputError(f"{config_file or f'preset {preset}'}: {error}") from None


def save_random_encoder(
    config: DiscovrConfig, output_dir: str | os.PathLike, seed: int = 0, frame_stride: int | None = None
) -> Path:
    """Save a randomly initialised `DiscovrModel` of `config` with its processor: the baseline every pretrained
    encoder must beat, loadable by `discovr-eval` and `discovr-finetune` like any encoder directory."""
    output_dir = Path(output_dir)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = DiscovrModel(config)
    encoder.save_pretrained(output_dir)
    model_processor(config, frame_stride=frame_stride).save_pretrained(output_dir)
    return output_dir


def model_processor(
    model_config: DiscovrConfig, model_dir: str | os.PathLike | None = None, frame_stride: int | None = None
) -> DiscovrVideoProcessor:
    """
    The video processor saved in `model_dir`, or a new one whose clip length and size follow `model_config`.

    `frame_stride` overrides the saved stride (default for a new processor: 3, as published). A saved processor
    whose clip length or size disagrees with the model raises.
    """
    size = {"height": model_config.image_size, "width": model_config.image_size}
    if model_dir is not None and (Path(model_dir) / "video_preprocessor_config.json").is_file():
        processor = DiscovrVideoProcessor.from_pretrained(model_dir)
        if frame_stride is not None:
            processor.frame_stride = frame_stride
    else:
        processor = DiscovrVideoProcessor(
            num_frames=model_config.num_frames, frame_stride=frame_stride or DEFAULT_FRAME_STRIDE, size=size
        )
    if processor.num_frames != model_config.num_frames or dict(processor.size) != size:
        raise InputError(
            f"The video processor in {model_dir} makes {processor.num_frames} frames of {dict(processor.size)}, but "
            f"the model takes {model_config.num_frames} frames of {size}"
        )
    return processor
