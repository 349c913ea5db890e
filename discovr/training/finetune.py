"""Fine-tune DISCOVR for LVEF regression or video classification with `transformers.Trainer`.

    python -m discovr.training.finetune --model_name_or_path runs/discovr/encoder \
        --data_root data/EchoNet-Dynamic --task lvef --mode last_k --k 3 --output_dir runs/lvef

Training draws one random clip per video and step. The validation split is scored after every epoch (or every
`--eval_steps`) on one centred clip per video, and the best checkpoint on validation (MAE for LVEF, macro-F1 for
classification) is kept. At the end that model is scored on the validation and test splits on one random clip
per video and on the average over all clips (`--clips`), as EchoNet-Dynamic does; the test split is used
only there, once. The output directory then holds the model (LoRA merged) with its video processor, so
`pipeline("video-classification", model=output_dir)` loads it, plus `predictions.csv`, `metrics.json`, the plots
and a model card.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
import transformers
from datasets import DatasetDict
from transformers import EvalPrediction, Trainer, TrainingArguments, set_seed

from .. import plotting
from ..cli import (
    CLIPS_HELP,
    SPATIAL_CROPS_HELP,
    DiscovrArgumentParser,
    InputError,
    argument,
    clips_argument,
    model_type_of,
    run_console_script,
)
from ..inference.prediction import VideoPrediction, predict_videos
from ..data import VideoTransform, collate_videos
from ..metrics import (
    HFREF_THRESHOLD,
    binary_auroc,
    bootstrap_ci,
    bootstrap_macro_f1_ci,
    classification_metrics,
    regression_metrics,
)
from ..modeling_discovr import DiscovrForVideoClassification
from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor
from .data_selection import TARGET_COLUMN, TASKS, DataSelection, Task, attach_targets
from .encoders import Encoder, is_pretraining_folder, load_complete, pretraining_encoder_under_head
from .model_card import CardResult, dataset_name, describe_size, model_reference, write_model_card
from .presets import DEFAULT_FRAME_STRIDE, PRESETS, load_model_config, model_processor


logger = logging.getLogger(__name__)

Mode = Literal["linear", "last_k", "full", "lora"]
MODES = get_args(Mode)
# Parameters that are newly initialised when an encoder is loaded into the classification model.
HEAD_PREFIXES = ("classifier.", "fc_norm.")
Pooling = Literal["mean", "cls"]
POOLINGS = get_args(Pooling)
SCALED_TARGET_COLUMN = "scaled_target"


@dataclass(kw_only=True)
class FinetuneConfig(DataSelection):
    """Everything a fine-tuning run needs: the `discovr-finetune` options, defined once here (see `--help`).

    Exactly one of `model_name_or_path`, `preset` and `config` gives the model.
    """

    model_name_or_path: str | None = argument(
        None,
        help="Saved encoder directory: a DiscovrModel (e.g. discovr-pretrain's encoder/), a DiscovrForPreTraining or "
        "a fine-tuned model. Only the head starts from scratch.",
    )
    preset: str | None = argument(
        None, help="Random initialisation at a named size (tiny for demos and tests).", choices=sorted(PRESETS)
    )
    config: str | None = argument(None, help="Random initialisation from a DiscovrConfig JSON file.")
    mode: Mode = argument(
        "last_k",
        help="What trains: linear = head only; last_k = last --k blocks + final norm + head; full; lora = LoRA on "
        "query/value + head, merged into the saved model.",
    )
    pooling: Pooling = argument(
        "mean",
        help="Head input: the mean of the patch tokens with fc_norm (VideoMAE's and EchoNet's global average), or the "
        "CLS token.",
    )
    encoder: Encoder = argument(
        "teacher",
        help="Which video encoder of a DiscovrForPreTraining folder (discovr-pretrain's pretrained/) to fine-tune: the "
        "EMA teacher (what encoder/ holds) or the online student.",
    )
    k: int = argument(3, help="Blocks trained by --mode last_k.")
    lora_r: int = argument(8, help="LoRA rank (--mode lora).")
    lora_alpha: int = argument(16, help="LoRA scaling alpha (--mode lora).")
    lora_dropout: float = argument(0.1, help="LoRA dropout (--mode lora).")
    task: Task = argument("lvef", help="lvef: regress EF (%%); classification: predict --label_column.")
    label_column: str | None = argument(
        None, help="Target column: default 'ef' for lvef; required for classification ('label' for a CSV)."
    )
    abnormal_below: float | None = argument(
        None,
        help="Classification of a numeric column: below this value is Abnormal, else Normal (e.g. --label_column ef "
        "--abnormal_below 50).",
    )
    frame_stride: int | None = argument(
        None,
        help=f"Step between clip frames (default: the saved processor's, else {DEFAULT_FRAME_STRIDE}). Clip length "
        "and size always follow the model config.",
    )
    clips: ClipSampling = argument(
        ClipSampling("all"), help=CLIPS_HELP + " Used by the final evaluation of the validation and test splits.",
        parse=clips_argument,
    )
    spatial_crops: int = argument(1, help=SPATIAL_CROPS_HELP + " Used by the final evaluation.")
    num_workers: int = argument(2, help="Video-decoding worker processes.")
    output_dir: str = argument(help="Where the model, predictions and plots go.")
    num_train_epochs: float = argument(10.0, help="Epochs over the training videos.")
    max_steps: int = argument(-1, help="Stop after this many optimiser steps (overrides epochs).")
    per_device_train_batch_size: int = argument(8, help="Training clips per device and step.")
    per_device_eval_batch_size: int = argument(16, help="Evaluation clips per forward pass.")
    gradient_accumulation_steps: int = argument(1, help="Batches per optimiser step.")
    learning_rate: float = argument(1e-4, help="Peak AdamW learning rate.")
    layer_decay: float = argument(
        1.0,
        help="Layer-wise learning-rate decay: block i of L trains at learning_rate * decay^(L - i), the embeddings at "
        "decay^(L + 1); 1 turns it off. The published (VideoMAE) fine-tuning uses 0.75.",
    )
    multi_scale_crop: bool = argument(
        False,
        help="Augment training clips with pretraining's multi-scale crop (scales 1, .875, .75, .66 of the short side, "
        "13 fixed positions), resized back to the model size.",
    )
    weight_decay: float = argument(0.05, help="AdamW weight decay (none on biases, norms and tokens).")
    warmup_ratio: float = argument(0.1, help="Share of the steps spent warming up linearly; cosine decay follows.")
    eval_steps: int | None = argument(None, help="Validate and checkpoint every N steps instead of every epoch.")
    logging_steps: int = argument(10, help="Log the training loss every N steps.")
    bf16: bool = argument(False, help="bfloat16 mixed precision (GPU).")
    seed: int = argument(0, help="Seed of the initialisation, clip draws and shuffling.")
    disable_tqdm: bool = argument(False, help="Hide the progress bars.")


@dataclass
class FinetuneResult:
    """Where a run wrote its outputs, and its final metrics (the content of `metrics.json`)."""

    output_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame


# ---------------------------------------------------------------------------------------------------------------
# Data


def collate_clips(rows: list[dict]) -> dict[str, torch.Tensor]:
    """`collate_videos` without the `video` paths, which the model does not take."""
    batch = collate_videos(rows)
    batch.pop("video")
    return batch


def video_ids(videos: list[str]) -> list[str]:
    """EchoNet `FileName`s: video file names without folder and extension."""
    return [os.path.splitext(os.path.basename(video))[0] for video in videos]


# ---------------------------------------------------------------------------------------------------------------
# Model


def load_classification_model(
    model_name_or_path: str, num_labels: int, problem_type: str, id2label: dict[int, str], pooling: str = "mean"
) -> torch.nn.Module:
    """
    Load a saved encoder (`DiscovrModel`, `DiscovrForPreTraining` or a fine-tuned model) with a new head.

    Another Transformers video encoder with a video-classification class (a `VideoMAEModel`, for comparisons) loads
    into that class. Only head weights may be newly initialised: a directory whose encoder weights do not load
    raises, instead of silently fine-tuning a random encoder. Pretraining-only weights (image branch, decoder,
    teachers) are dropped.
    """
    model_type = model_type_of(model_name_or_path)
    model_class = DiscovrForVideoClassification if model_type == "discovr" else transformers.AutoModelForVideoClassification
    if model_type != "discovr" and pooling != "mean":
        raise InputError(f"{model_name_or_path} holds a {model_type} encoder, which has no CLS token: use --pooling mean")
    model, info = load_complete(
        model_class, model_name_or_path, f"a complete {model_type} encoder", may_be_new=HEAD_PREFIXES,
        num_labels=num_labels, problem_type=problem_type, id2label=id2label,
        label2id={name: i for i, name in id2label.items()}, use_mean_pooling=pooling == "mean",
        ignore_mismatched_sizes=True,
    )
    mismatched = [str(entry[0] if isinstance(entry, tuple) else entry) for entry in info["mismatched_keys"]]
    new = sorted(set(info["missing_keys"]) | set(mismatched))
    if new:
        logger.warning(
            "Newly initialised head weights (trained by this run, as expected): %s. Every encoder weight was "
            "loaded from %s.", ", ".join(new), model_name_or_path,
        )
    if info["unexpected_keys"]:
        logger.info("Ignored %d pretraining-only weights of %s (image branch, decoder, teachers, DINO heads)",
                    len(info["unexpected_keys"]), model_name_or_path)
    return model


def build_model(
    config: FinetuneConfig, num_labels: int, problem_type: str, id2label: dict[int, str]
) -> tuple[DiscovrForVideoClassification, DiscovrVideoProcessor]:
    """The classification model and its video processor, from a saved encoder or a random preset/config."""
    sources = [config.model_name_or_path, config.preset, config.config]
    if sum(source is not None for source in sources) != 1:
        raise InputError("Give exactly one of --model_name_or_path, --preset or --config")
    labels = {
        "num_labels": num_labels, "problem_type": problem_type, "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()}, "use_mean_pooling": config.pooling == "mean",
    }
    if config.model_name_or_path is not None and is_pretraining_folder(config.model_name_or_path):
        model = pretraining_encoder_under_head(
            DiscovrForVideoClassification, config.model_name_or_path, config.encoder, labels
        )
        logger.info("Fine-tuning the video %s of %s", config.encoder, config.model_name_or_path)
    elif config.model_name_or_path is not None:
        model = load_classification_model(
            config.model_name_or_path, num_labels, problem_type, id2label, config.pooling
        )
    else:
        model_config = load_model_config(preset=config.preset, config_file=config.config, **labels)
        model = DiscovrForVideoClassification(model_config)
    return model, model_processor(model.config, config.model_name_or_path, config.frame_stride)


def initialise_regression_bias(model: DiscovrForVideoClassification, mean: float) -> None:
    """Start the LVEF head at the training-set mean EF, so early steps learn variation, not the offset."""
    with torch.no_grad():
        model.classifier.bias.fill_(mean)


@dataclass(frozen=True)
class TargetScaling:
    """Regression targets are trained standardised, `(EF - mean) / std`, and the scaling is folded into the head.

    AdamW moves each weight by about the learning rate per step, so a head reading unit-scale features needs
    hundreds of steps just to span EF's spread of about 13 points; in standardised units the output scale is 1.
    Folding `std` and `mean` into the classifier afterwards makes the saved model predict EF in % directly, and
    the head still starts at the training mean (bias 0 in standardised units).
    """

    mean: float
    std: float

    @classmethod
    def from_targets(cls, targets: np.ndarray) -> TargetScaling:
        std = float(targets.std())
        return cls(mean=float(targets.mean()), std=std if std > 0 else 1.0)

    def scale(self, values: list[float]) -> list[float]:
        return [(value - self.mean) / self.std for value in values]

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def fold_into(self, model: DiscovrForVideoClassification) -> None:
        """Make `model` output EF: classifier(x) * std + mean, as one Linear."""
        with torch.no_grad():
            model.classifier.weight.mul_(self.std)
            model.classifier.bias.mul_(self.std).add_(self.mean)


def apply_mode(model: DiscovrForVideoClassification, config: FinetuneConfig) -> torch.nn.Module:
    """
    Choose what trains: `linear` (head only), `last_k` (last k blocks, final norm and head), `full`, or `lora`.

    `lora` returns a PEFT model with LoRA on the `query` and `value` projections and a trainable copy of the head.
    """
    head = [name for name in ("classifier", "fc_norm") if getattr(model, name, None) is not None]
    if config.mode == "full":
        model.requires_grad_(True)
    elif config.mode in ("linear", "last_k"):
        model.requires_grad_(False)
        for name in head:
            getattr(model, name).requires_grad_(True)
        if config.mode == "last_k":
            layers = model.base_model.encoder.layer
            if not 1 <= config.k <= len(layers):
                raise InputError(f"--k must be in 1..{len(layers)} for this {len(layers)}-layer encoder, got {config.k}")
            for layer in layers[-config.k:]:
                layer.requires_grad_(True)
            # A mean-pooling VideoMAE has no final norm of its own; its fc_norm trains with the head.
            if getattr(model.base_model, "layernorm", None) is not None:
                model.base_model.layernorm.requires_grad_(True)
    elif config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=["query", "value"],
            modules_to_save=head,
        )
        model = get_peft_model(model, lora)
    else:
        raise InputError(f"--mode must be one of {MODES}, got {config.mode!r}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("Mode %s: %d of %d parameters trainable (%.2f%%)", config.mode, trainable, total, 100 * trainable / total)
    return model


ENCODER_BLOCK = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise learning-rate decay: 0 for the embeddings (patch projection, CLS, positions),
    i + 1 for block i, `num_layers + 1` for the final norm and the head (also under a PEFT wrapper)."""
    match = ENCODER_BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if re.search(r"(?:^|\.)embeddings\.", name) else num_layers + 1


def layer_decay_optimizer(model: torch.nn.Module, config: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, the learning rate of depth d scaled by `layer_decay ** (L + 1 - d)` (BEiT's
    and VideoMAE's fine-tuning); biases, norms and tokens get no weight decay. Trainer's schedule scales every group."""
    names = [name for name, _ in model.named_parameters()]
    num_layers = 1 + max((int(m.group(1)) for m in map(ENCODER_BLOCK.search, names) if m), default=-1)
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            no_decay = parameter.ndim <= 1 or name.endswith(("cls_token", "position_embeddings"))
            groups.setdefault((layer_id(name, num_layers), no_decay), []).append(parameter)
    return torch.optim.AdamW([
        {"params": params, "lr": config.learning_rate * config.layer_decay ** (num_layers + 1 - depth),
         "weight_decay": 0.0 if no_decay else config.weight_decay}
        for (depth, no_decay), params in sorted(groups.items())
    ], lr=config.learning_rate, betas=(0.9, 0.999))


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def _classification_scores(probabilities: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    metrics = classification_metrics(probabilities.argmax(axis=-1), labels, labels=list(range(num_labels)))
    if num_labels == 2 and 0 < labels.sum() < len(labels):
        metrics["auroc"] = binary_auroc(probabilities[:, 1], labels == 1)
    return metrics


def make_compute_metrics(problem_type: str, num_labels: int, scaling: TargetScaling | None = None):
    """`compute_metrics` for Trainer: MAE, RMSE, R², HFrEF AUROC (LVEF, in EF units) or accuracy, balanced accuracy, F1."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = np.asarray(prediction.predictions)
        labels = np.asarray(prediction.label_ids)
        if problem_type == "regression":
            return regression_metrics(scaling.unscale(logits.reshape(-1)), scaling.unscale(labels.reshape(-1)))
        probabilities = torch.from_numpy(logits).float().softmax(dim=-1).numpy()
        return _classification_scores(probabilities, labels.astype(int), num_labels)

    return compute_metrics


def score_predictions(
    predictions: list[VideoPrediction], targets: np.ndarray, problem_type: str, num_labels: int, seed: int
) -> tuple[dict[str, dict[str, float]], np.ndarray, np.ndarray]:
    """
    Metrics on one random clip per video and on the clip average.

    The random clip is drawn from the clips already scored, so it is a uniformly random start when those are
    all clips. Returns the metrics and the per-video outputs (one clip, average).
    """
    rng = np.random.default_rng(seed)
    one_clip = np.stack([p.clip_logits[rng.integers(p.num_clips)].numpy() for p in predictions])
    average = np.stack([p.output.numpy() for p in predictions])
    if problem_type == "regression":
        one_clip, average = one_clip[:, 0], average[:, 0]
        metrics = {"one_clip": regression_metrics(one_clip, targets), "clip_average": regression_metrics(average, targets)}
    else:
        one_clip = torch.from_numpy(one_clip).softmax(dim=-1).numpy()
        metrics = {
            "one_clip": _classification_scores(one_clip, targets, num_labels),
            "clip_average": _classification_scores(average, targets, num_labels),
        }
    return metrics, one_clip, average


def predictions_table(
    videos: list[str], targets: np.ndarray, outputs: np.ndarray, predictions: list[VideoPrediction],
    id2label: dict[int, str], problem_type: str,
) -> pd.DataFrame:
    """Per-video table: `FileName`, `EF`, `prediction`, `num_clips` (LVEF) or class names and probabilities."""
    num_clips = [p.num_clips for p in predictions]
    if problem_type == "regression":
        return pd.DataFrame({"FileName": video_ids(videos), "EF": targets, "prediction": outputs, "num_clips": num_clips})
    table = pd.DataFrame(
        {
            "FileName": video_ids(videos),
            "label": [id2label[int(t)] for t in targets],
            "prediction": [id2label[int(i)] for i in outputs.argmax(axis=-1)],
            "num_clips": num_clips,
        }
    )
    for index, name in id2label.items():
        table[f"probability_{name}"] = outputs[:, index]
    return table


def write_lvef_plots(table: pd.DataFrame, output_dir: Path) -> list[Path]:
    """Scatter, Bland-Altman and HFrEF ROC plots of a predictions table; each is skipped when undefined."""
    written = []
    if len(table) < 2:
        logger.warning("Plots need at least 2 test videos, got %d; none written", len(table))
        return written
    written += plotting.plot_lvef_scatter(table, output_dir / "lvef_scatter.png")
    written += plotting.plot_bland_altman(table, output_dir / "bland_altman.png")
    below = int((table["EF"] < HFREF_THRESHOLD).sum())
    if 0 < below < len(table):
        written += plotting.plot_roc(table, output_dir / "roc.png")
    else:
        logger.warning("ROC skipped: the test videos are all on one side of EF %g%%", HFREF_THRESHOLD)
    return written


# ---------------------------------------------------------------------------------------------------------------
# Run


def _metric_for_best_model(problem_type: str) -> tuple[str, bool]:
    return ("mae", False) if problem_type == "regression" else ("macro_f1", True)


def training_arguments(config: FinetuneConfig, checkpoint_dir: Path, problem_type: str) -> TrainingArguments:
    """Trainer arguments: evaluation and a checkpoint every epoch (or `eval_steps`), best model kept."""
    metric, greater_is_better = _metric_for_best_model(problem_type)
    strategy = "steps" if config.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="cosine",
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps,
        save_steps=config.eval_steps,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better,
        logging_steps=config.logging_steps,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=config.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=config.bf16,
        seed=config.seed,
        disable_tqdm=config.disable_tqdm,
    )


def _check_config(config: FinetuneConfig) -> None:
    if config.task not in TASKS:
        raise InputError(f"--task must be one of {TASKS}, got {config.task!r}")
    if config.mode not in MODES:
        raise InputError(f"--mode must be one of {MODES}, got {config.mode!r}")
    if config.pooling not in POOLINGS:
        raise InputError(f"--pooling must be one of {POOLINGS}, got {config.pooling!r}")
    if config.preset is not None and config.preset not in PRESETS:
        raise InputError(f"Unknown --preset {config.preset!r}; choose one of {sorted(PRESETS)}")
    if config.abnormal_below is not None and config.task != "classification":
        raise InputError("--abnormal_below only applies to --task classification")
    if not 0 < config.layer_decay <= 1:
        raise InputError(f"--layer_decay must be in (0, 1], got {config.layer_decay}")
    if not 0 <= config.warmup_ratio < 1:
        raise InputError(f"--warmup_ratio must be in [0, 1), got {config.warmup_ratio}")
    if config.spatial_crops < 1:
        raise InputError(f"--spatial_crops must be >= 1, got {config.spatial_crops}")
    try:
        ClipSampling.parse(config.clips)
    except ValueError as error:
        raise InputError(f"--clips: {error}") from None
    if not Path(config.data_root).is_dir():
        raise InputError(f"--data_root {config.data_root} is not a directory")


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run a fine-tuning job end to end (see the module docstring); returns its metrics and predictions."""
    _check_config(config)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)

    splits = config.load_splits()
    splits, id2label = attach_targets(splits, config.task, config.label_column, config.abnormal_below)
    problem_type = "regression" if config.task == "lvef" else "single_label_classification"
    num_labels = 1 if problem_type == "regression" else len(id2label)
    model, processor = build_model(config, num_labels, problem_type, id2label)
    train_targets = np.asarray(splits["train"][TARGET_COLUMN], dtype=np.float64)
    train_mean = float(train_targets.mean())
    scaling = None
    label_column = TARGET_COLUMN
    if problem_type == "regression":
        scaling = TargetScaling.from_targets(train_targets)
        initialise_regression_bias(model, 0.0)
        label_column = SCALED_TARGET_COLUMN
        splits = DatasetDict({
            split: dataset.add_column(SCALED_TARGET_COLUMN, scaling.scale(dataset[TARGET_COLUMN]))
            for split, dataset in splits.items()
        })
    trainable = apply_mode(model, config)

    train_set = splits["train"].with_transform(
        VideoTransform(processor, label_column=label_column, training=True, multi_scale_crop=config.multi_scale_crop)
    )
    validation_set = splits["validation"].with_transform(VideoTransform(processor, label_column=label_column))
    checkpoint_dir = output_dir / "checkpoints"
    trainer = Trainer(
        model=trainable,
        args=training_arguments(config, checkpoint_dir, problem_type),
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=collate_clips,
        compute_metrics=make_compute_metrics(problem_type, num_labels, scaling),
        optimizers=(layer_decay_optimizer(trainable, config), None),
    )
    train_result = trainer.train()
    with open(output_dir / "training_log.jsonl", "w") as handle:
        for record in trainer.state.log_history:
            handle.write(json.dumps(record) + "\n")

    best = trainer.model
    if config.mode == "lora":
        best = best.merge_and_unload()
    elif not isinstance(best, DiscovrForVideoClassification) and trainer.state.best_model_checkpoint:
        # Trainer reloads the best checkpoint with a plain state-dict load, which skips Transformers' key renames
        # (VideoMAE stores q_bias/v_bias): those weights would stay at their last-step values. from_pretrained
        # applies the renames.
        best = type(best).from_pretrained(trainer.state.best_model_checkpoint)
    if scaling is not None:
        scaling.fold_into(best)
    best.eval()

    metrics: dict[str, Any] = {
        "train": {"videos": len(splits["train"]), "steps": train_result.global_step, "loss": train_result.training_loss},
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "clips": str(ClipSampling.parse(config.clips)),
        "spatial_crops": config.spatial_crops,
    }
    tables = {}
    for split in ("validation", "test"):
        videos = list(splits[split]["video"])
        targets = np.asarray(splits[split][TARGET_COLUMN])
        predictions = predict_videos(
            best, processor, videos, config.clips, config.per_device_eval_batch_size, config.num_workers,
            progress=not config.disable_tqdm, spatial_crops=config.spatial_crops,
        )
        scores, _, average = score_predictions(predictions, targets, problem_type, num_labels, config.seed)
        metrics[split] = {"videos": len(videos), **scores}
        tables[split] = predictions_table(videos, targets, average, predictions, id2label, problem_type)
        if problem_type == "regression":
            metrics[split]["train_mean_baseline"] = regression_metrics(np.full(len(targets), train_mean), targets)
            if split == "test" and len(targets) > 1:
                metrics[split]["clip_average_95ci"] = bootstrap_ci(average, targets, seed=config.seed)
        elif split == "test" and len(targets) > 1:
            metrics[split]["clip_average_95ci"] = {"macro_f1": bootstrap_macro_f1_ci(
                average.argmax(axis=1), targets, list(range(num_labels)), seed=config.seed)}
        logger.info("%s (%d videos): %s", split, len(videos), json.dumps(scores))

    tables["test"].to_csv(output_dir / "predictions.csv", index=False)
    tables["validation"].to_csv(output_dir / "validation_predictions.csv", index=False)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    if problem_type == "regression":
        write_lvef_plots(tables["test"], output_dir)
    if any("loss" in record for record in trainer.state.log_history):
        plotting.plot_training_curves(output_dir / "training_log.jsonl", output_dir / "training_curves.png")
    else:
        logger.warning("No training loss was logged (fewer steps than --logging_steps); training_curves.png skipped")

    best.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    _write_card(config, best, processor, output_dir, splits, metrics, problem_type, train_mean)
    logger.info("Saved the fine-tuned model, its processor, predictions and plots to %s", output_dir)
    return FinetuneResult(output_dir=output_dir, metrics=metrics, predictions=tables["test"])


# Hub metric type and readable name of each clip-average metric, per task.
CARD_METRICS = {
    "regression": (("mae", "mae", "MAE (EF %)"), ("rmse", "rmse", "RMSE (EF %)"), ("r2", "r_squared", "R²"),
                   ("auroc", "roc_auc", "AUROC, EF < 50%")),
    "single_label_classification": (("accuracy", "accuracy", "Accuracy"),
                                    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy"),
                                    ("macro_f1", "f1", "Macro-F1"), ("auroc", "roc_auc", "AUROC")),
}


def _write_card(
    config: FinetuneConfig, model: torch.nn.Module, processor: DiscovrVideoProcessor, output_dir: Path,
    splits: DatasetDict, metrics: dict, problem_type: str, train_mean: float,
) -> None:
    sizes = ", ".join(f"{len(splits[split])} {split}" for split in ("train", "validation", "test"))
    intervals = metrics["test"].get("clip_average_95ci", {})
    results = [
        CardResult(metric_type, name, metrics["test"]["clip_average"][key], intervals.get(key),
                   metrics["validation"]["clip_average"][key])
        for key, metric_type, name in CARD_METRICS[problem_type] if key in metrics["test"]["clip_average"]
    ]
    source = (f"`{model_reference(config.model_name_or_path)}`" + (
        f" (its {config.encoder})" if is_pretraining_folder(config.model_name_or_path) else "")
        if config.model_name_or_path else f"random initialisation ({config.preset or 'a config file'})")
    training = (
        f"Fine-tuned with `discovr-finetune` from {source}, mode `{config.mode}`"
        + (f" (last {config.k} blocks)" if config.mode == "last_k" else "")
        + f", learning rate {config.learning_rate}, {metrics['train']['steps']} optimiser steps of "
        f"{config.per_device_train_batch_size} clips, on {sizes} videos. Clips: {processor.num_frames} frames every "
        f"{processor.frame_stride} frames at {processor.size['height']}x{processor.size['width']}, one random clip "
        f"per video and training step; the evaluation averages the `{ClipSampling.parse(config.clips)}` clips of each video."
        + (f" The head bias started at the training mean EF, {train_mean:.2f}%." if config.task == "lvef" else "")
    )
    write_model_card(
        output_dir,
        title=f"DISCOVR fine-tuned for {'LVEF' if config.task == 'lvef' else 'video classification'}",
        size=describe_size(model.config, model.num_parameters()),
        dataset=dataset_name(config.data_root),
        dataset_type=config.data_format,
        task="LVEF regression" if config.task == "lvef" else "Video classification",
        results=results,
        base_model=model_reference(config.model_name_or_path) if config.model_name_or_path else None,
        training=training,
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        FinetuneConfig,
        prog="discovr-finetune",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Outputs in --output_dir: the model (config.json, model.safetensors) and video processor, README.md "
            "(model card), predictions.csv (test split: FileName, EF, prediction, num_clips), "
            "validation_predictions.csv, metrics.json, training_log.jsonl, and for LVEF lvef_scatter.png, "
            "bland_altman.png, roc.png, plus training_curves.png."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`discovr-finetune`."""
    parser = build_parser()
    config = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        result = finetune(config)
        summary = {split: result.metrics[split]["clip_average"] for split in ("validation", "test")}
        print(json.dumps(summary, indent=2))
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
