"""`PretrainConfig`: the `discovr-pretrain` options, defined once, and the recipe that fills the unset ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..cli import InputError, argument
from .data_selection import DataFormat
from .encoders import Encoder
from .presets import DEFAULT_FRAME_STRIDE, PRESETS, RECIPES, PretrainRecipe


def recipe_argument(help: str) -> Any:
    """An optimisation option that, left unset, takes the recipe's value."""
    return argument(None, help=help, default_help="the recipe's")


@dataclass(kw_only=True)
class PretrainConfig:
    """Everything a pretraining run needs. Options left `None` that a recipe defines take the recipe's value
    ([`resolve_recipe`]); exactly one of `preset` and `config` gives the model."""

    # data
    data_root: str = argument(help="Dataset folder (EchoNet layout, or the root of CSV paths).")
    data_format: DataFormat = argument("echonet_dynamic", help="Manifest format.")
    manifest: str | None = argument(None, help="DISCOVR CSV manifest (for --data_format csv).")
    split: str = argument("train", help="Split to pretrain on (echonet formats).")
    pediatric_view: Literal["A4C", "PSAX"] = argument("A4C", help="EchoNet-Pediatric view.")
    frame_stride: int = argument(DEFAULT_FRAME_STRIDE, help="Step between sampled frames.")
    multi_scale_crop: bool = argument(True, help="The multi-scale crop augmentation.")
    clips_per_video: int | None = recipe_argument(
        "Independent random clips of every video per epoch (repeated augmentation)."
    )
    num_workers: int = argument(4, help="DataLoader workers per process.")
    # model
    preset: str | None = argument(
        None, help="Named size: tiny (tests, demo), small, base (ViT-B). Exactly one of --preset and --config.",
        choices=sorted(PRESETS),
    )
    config: str | None = argument(None, help="A DiscovrConfig JSON (e.g. a saved config.json).")
    init_from: str | None = argument(None, help="Start from a saved DiscovrForPreTraining directory.")
    gradient_checkpointing: bool = argument(False, help="Recompute activations to save memory.")
    export_encoder: Encoder = argument("teacher", help="Which video encoder is written to OUTPUT_DIR/encoder.")
    # optimisation (docs/pretraining.md lists every recipe and the measurements behind it)
    recipe: str | None = argument(
        None, help="Training recipe for the options left unset (default: the --preset's own; 'base', the published "
        "one, with --config).", choices=sorted(RECIPES),
    )
    epochs: int = argument(400, help="Epochs over the videos; the schedules span them.")
    max_steps: int | None = argument(None, help="Stop after this many optimiser steps (schedules still span --epochs).")
    per_device_batch_size: int | None = recipe_argument("Clips per process and step.")
    gradient_accumulation_steps: int = argument(1, help="Batches per optimiser step.")
    base_lr: float | None = recipe_argument("LR for a global batch of 256; scaled linearly.")
    min_lr: float | None = recipe_argument("Final LR of the cosine decay.")
    warmup_epochs: float | None = recipe_argument("Linear LR warm-up.")
    weight_decay: float | None = recipe_argument("Start of the cosine weight-decay schedule.")
    weight_decay_end: float | None = recipe_argument("Final weight decay.")
    max_grad_norm: float | None = argument(None, help="Clip gradients to this norm.")
    momentum_teacher: float | None = recipe_argument("Start of the teacher EMA cosine schedule.")
    momentum_teacher_end: float | None = recipe_argument("End of the teacher EMA cosine schedule.")
    warmup_teacher_temperature: float | None = recipe_argument(
        "DINO teacher temperature at step 0, rising linearly to --teacher_temperature."
    )
    teacher_temperature: float | None = recipe_argument("DINO teacher temperature after warm-up.")
    warmup_teacher_temperature_epochs: float | None = recipe_argument("Epochs of the teacher-temperature warm-up.")
    center_momentum: float | None = recipe_argument("DINO centre momentum.")
    mixed_precision: Literal["no", "bf16", "fp16"] | None = argument(None, help="Overrides the accelerate config.")
    seed: int = argument(0, help="Seed of the initialisation, the clip draws, the crops and the masks.")
    deterministic: bool = argument(False, help="torch.use_deterministic_algorithms(True).")
    # run
    output_dir: str = argument(help="Where the checkpoints, logs and exported models go.")
    save_steps: int = argument(1000, help="Checkpoint every N optimiser steps.")
    save_total_limit: int = argument(3, help="Checkpoints kept (oldest removed).")
    resume_from_checkpoint: str | None = argument(None, help="'latest' or a checkpoint directory.")
    logging_steps: int = argument(10, help="Log the losses every N optimiser steps.")
    health_clips: int = argument(
        64,
        help="Fixed held-out clips (the validation split when the data has one) whose teacher CLS embeddings give the "
        "RankMe health metric at every logging step; 0 turns it off.",
    )

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.config is None):
            raise InputError("give exactly one of --preset and --config")


def resolve_recipe(config: PretrainConfig) -> PretrainConfig:
    """`config` with every unset recipe option taken from the chosen recipe (the preset's, or `base` for a config
    file), and `recipe` naming it."""
    name = config.recipe or (config.preset if config.preset in RECIPES else "base")
    recipe = RECIPES[name]
    unset = {
        field: getattr(recipe, field) for field in PretrainRecipe.field_names() if getattr(config, field) is None
    }
    return dataclasses.replace(config, recipe=name, **unset)


def recipes_epilog() -> str:
    """The `--help` table of the recipes."""
    rows = [
        f"  {name}: " + ", ".join(f"{key}={value}" for key, value in vars(recipe).items())
        for name, recipe in sorted(RECIPES.items())
    ]
    return "recipes:\n" + "\n".join(rows)


__all__ = ["PretrainConfig", "recipes_epilog", "resolve_recipe"]
