"""
`discovr-segment`: train a segmentation probe on a DISCOVR encoder, evaluate it, and segment videos.

- `discovr-segment train`: a `DiscovrForSemanticSegmentation` (linear or light head) trained with `Trainer` on a
  segmentation data set (`synthetic`, `echonet_dynamic` tracings or `camus`); the encoder is frozen by default.
- `discovr-segment evaluate`: Dice and IoU per structure on a split, every annotated frame and the ED/ES frames
  apart, with bootstrap intervals over videos.
- `discovr-segment predict`: per-frame masks of videos, the LV area curve, ED/ES frames, beat-by-beat EF.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cli import DiscovrArgumentParser, InputError, argument, model_type_of, run_console_script
from ..data.segmentation import (
    IGNORE_INDEX,
    AnnotatedVideo,
    SegmentationTransform,
    check_annotations,
    segmentation_format,
)
from ..metrics import DEFAULT_NUM_BOOTSTRAP
from ..metrics.segmentation import (
    SegmentationScores,
    bootstrap_segmentation_ci,
    dice_iou,
    segmentation_metrics,
)
from ..modeling_discovr import DiscovrForSemanticSegmentation
from ..inference.segment_videos import load_segmentation_model, predict_folder
from ..inference.segmentation import VideoSegmentation, model_logits_fn, segment_clips
from ..video_processing_discovr import ClipSampling, DiscovrVideoProcessor
from .data_selection import SPLITS
from .encoders import Encoder, is_pretraining_folder, load_complete, pretraining_encoder_under_head
from .model_card import CardResult, dataset_name, describe_size, model_reference, write_model_card
from .presets import model_processor


logger = logging.getLogger(__name__)

DataFormat = Literal["synthetic", "echonet_dynamic", "camus"]
Head = Literal["linear", "light"]
Mode = Literal["frozen", "full", "lora"]
MODES = get_args(Mode)


@dataclass(kw_only=True)
class SegmentTrainConfig:
    """The options of `discovr-segment train`."""

    model_name_or_path: str = argument(
        help="A saved DISCOVR encoder (`encoder/` of discovr-pretrain), a DiscovrForPreTraining folder, or a "
        "segmentation model to train further."
    )
    encoder: Encoder = argument("teacher", help="Which video encoder of a DiscovrForPreTraining folder is used.")
    data_root: str = argument(help="The data set folder.")
    data_format: DataFormat = argument(
        "synthetic", help="synthetic (discovr-synth, every frame labelled), echonet_dynamic (LV cavity of the traced "
        "ED/ES frames) or camus (the half sequences, CAMUS labels)."
    )
    output_dir: str = argument(help="Where the model, its processor, metrics.json and the model card go.")
    head: Head = argument("linear", help="linear: the paper's probe (BatchNorm + 1x1); light: a small conv decoder.")
    mode: Mode = argument(
        "frozen", help="What trains: frozen = the head only (the paper's probe); full = the encoder too; lora = LoRA "
        "on the encoder's query/value projections and the head."
    )
    lora_r: int = argument(8, help="LoRA rank (--mode lora).")
    lora_alpha: int = argument(16, help="LoRA scaling alpha (--mode lora).")
    num_train_epochs: float = argument(10.0, help="Epochs over the training videos (one clip per video and epoch).")
    max_steps: int = argument(-1, help="Stop after this many optimiser steps (-1: the epochs decide).")
    learning_rate: float = argument(1e-3, help="Peak learning rate (cosine schedule).")
    weight_decay: float = argument(1e-4, help="AdamW weight decay.")
    per_device_train_batch_size: int = argument(8, help="Clips per step.")
    max_train_videos: int | None = argument(None, help="Use only the first N training videos.")
    max_eval_videos: int | None = argument(None, help="Evaluate only the first N videos of each split.")
    frame_stride: int | None = argument(None, help="Clip frame stride (default: the saved processor's).")
    num_bootstrap: int = argument(DEFAULT_NUM_BOOTSTRAP, help="Bootstrap resamples of the Dice/IoU intervals.")
    batch_size: int = argument(8, help="Clips per forward pass when evaluating.")
    num_workers: int = argument(2, help="DataLoader workers.")
    logging_steps: int = argument(10, help="Log the loss every N steps.")
    seed: int = argument(0, help="Seed of the head's initialisation and the clip draws.")
    disable_tqdm: bool = argument(False, help="No progress bars.")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"--mode must be one of {MODES}, got {self.mode!r}")


@dataclass(kw_only=True)
class SegmentEvaluateConfig:
    """The options of `discovr-segment evaluate`."""

    model_name_or_path: str = argument(help="A trained segmentation model folder (discovr-segment train's output).")
    data_root: str = argument(help="The data set folder.")
    data_format: DataFormat = argument("synthetic", help="The data set's format (as for train).")
    splits: list[str] = argument(["test"], help="Splits to evaluate.", choices=SPLITS)
    output: str | None = argument(None, help="Write the metrics as JSON here (default: print them).")
    max_eval_videos: int | None = argument(None, help="Evaluate only the first N videos of each split.")
    num_bootstrap: int = argument(DEFAULT_NUM_BOOTSTRAP, help="Bootstrap resamples of the intervals.")
    batch_size: int = argument(8, help="Clips per forward pass.")
    device: str | None = argument(None, help="torch device (default: cuda when available).")
    seed: int = argument(0, help="Seed of the bootstrap.")
    disable_tqdm: bool = argument(False, help="No progress bars.")


@dataclass(kw_only=True)
class SegmentPredictConfig:
    """The options of `discovr-segment predict`."""

    model_name_or_path: str = argument(help="A trained segmentation model folder.", positional=True)
    inputs: list[str] = argument(
        help="Video or DICOM files, folders of them, or an EchoNet FileList.csv or DISCOVR CSV manifest (whose truth "
        "columns are copied to the summary).",
        positional=True, metavar="VIDEO_OR_DIR_OR_MANIFEST",
    )
    output_dir: str = argument(help="Where the per-video CSVs, the summary CSV and the plots go.")
    regression_model: str | None = argument(
        None, help="An LVEF model (discovr-finetune) whose EF prediction is added to the summary beside the EF from "
        "segmentation."
    )
    fps: float | None = argument(None, help="Frame rate to assume for frame arrays or files that do not state one.")
    plots: bool = argument(True, help="The area curve with the detected beats, and an overlay strip, per video.")
    batch_size: int = argument(8, help="Clips per forward pass.")
    device: str | None = argument(None, help="torch device (default: cuda when available).")
    disable_tqdm: bool = argument(False, help="No progress bars.")


def build_model(
    config: SegmentTrainConfig, label_names: Sequence[str]
) -> tuple[DiscovrForSemanticSegmentation, DiscovrVideoProcessor]:
    """The segmentation model on the chosen encoder, and its processor."""
    labels = {
        "num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)}, "segmentation_head": config.head,
        "freeze_backbone": config.mode == "frozen", "semantic_loss_ignore_index": IGNORE_INDEX,
    }
    if is_pretraining_folder(config.model_name_or_path):
        model = pretraining_encoder_under_head(
            DiscovrForSemanticSegmentation, config.model_name_or_path, config.encoder, labels
        )
        logger.info("Segmenting with the video %s of %s", config.encoder, config.model_name_or_path)
    else:
        model_type = model_type_of(config.model_name_or_path)
        if model_type != "discovr":
            raise InputError(f"{config.model_name_or_path} holds a {model_type} model; discovr-segment needs a DISCOVR encoder")
        model, _ = load_complete(
            DiscovrForSemanticSegmentation, config.model_name_or_path, "a complete DISCOVR encoder",
            may_be_new=("decode_head.",), ignore_mismatched_sizes=True, **labels,
        )
    return model, model_processor(model.config, config.model_name_or_path, config.frame_stride)


def apply_mode(model: DiscovrForSemanticSegmentation, config: SegmentTrainConfig) -> torch.nn.Module:
    """`frozen` and `full` are the model's own `freeze_backbone`; `lora` wraps it in a PEFT model."""
    if config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=["query", "value"],
            modules_to_save=["decode_head"],
        ))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("Mode %s: %d of %d parameters trainable", config.mode, trainable,
                sum(p.numel() for p in model.parameters()))
    return model


def _first(rows, count: int | None):
    return rows if count is None or count >= len(rows) else rows.select(range(count))


def iter_segmented(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    processor: DiscovrVideoProcessor,
    rows,
    data_format: str,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Iterator[tuple[Mapping, AnnotatedVideo, VideoSegmentation]]:
    """Each row of a segmentation data set with its annotations and its segmentation of the annotated frames (one
    decode per video, on the clips that cover those frames)."""
    source = segmentation_format(data_format)
    for row in tqdm(rows, desc="segmenting", unit="video", disable=not progress):
        annotated = source.annotations(row)
        frames = sorted(annotated.labels)
        clips = processor.decode_clips(annotated.video, ClipSampling.covering(frames))
        check_annotations(annotated, clips.num_video_frames, clips.frame_size)
        yield row, annotated, segment_clips(logits_fn, processor, clips, frames, batch_size, device)


def video_scores(
    row: Mapping, annotated: AnnotatedVideo, segmentation: VideoSegmentation, structures: Mapping[str, int]
) -> dict[str, SegmentationScores]:
    """Dice/IoU counts of one video: `all_frames` (its annotated frames, pooled into one sample) and `ed_es` (the
    ED and ES frames the row names, when it names them)."""
    truth = np.stack([annotated.labels[frame] for frame in segmentation.frames])
    scores = {"all_frames": dice_iou(segmentation.label_maps[None], truth[None], structures, IGNORE_INDEX)}
    phases = [int(row[key]) for key in ("ed_frame", "es_frame") if int(row.get(key, -1)) in annotated.labels]
    if phases:
        keep = [segmentation.frames.index(frame) for frame in phases]
        scores["ed_es"] = dice_iou(segmentation.label_maps[keep][None], truth[keep][None], structures, IGNORE_INDEX)
    return scores


def summarize_scores(
    per_video: Sequence[dict[str, SegmentationScores]], num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP, seed: int = 0
) -> dict:
    """Means over videos and their bootstrap intervals (over videos, since the frames of one video are not
    independent), for each subset of [`video_scores`]."""
    summary = {}
    for subset in ("all_frames", "ed_es"):
        parts = [scores[subset] for scores in per_video if subset in scores]
        if parts:
            scores = SegmentationScores.concatenate(parts)
            summary[subset] = {
                "num_videos": scores.num_samples,
                "metrics": segmentation_metrics(scores),
                "intervals": {key: list(value) for key, value in
                              bootstrap_segmentation_ci(scores, num_bootstrap, seed=seed).items()},
            }
    return summary


def structures_of(model_config) -> dict[str, int]:
    """The scored structures of a segmentation model: every label but the background (label 0)."""
    return {model_config.id2label[i]: i for i in range(1, model_config.num_labels)}


def evaluate_split(
    model: DiscovrForSemanticSegmentation,
    processor: DiscovrVideoProcessor,
    rows,
    data_format: str,
    batch_size: int = 8,
    num_bootstrap: int = DEFAULT_NUM_BOOTSTRAP,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Dice and IoU per structure over the videos of `rows` (see [`video_scores`] and [`summarize_scores`])."""
    model.eval()
    structures = structures_of(model.config)
    per_video = [
        video_scores(row, annotated, segmentation, structures)
        for row, annotated, segmentation in iter_segmented(
            model_logits_fn(model), processor, rows, data_format, batch_size, model.device, progress
        )
    ]
    return summarize_scores(per_video, num_bootstrap, seed)


def train(config: SegmentTrainConfig) -> dict:
    """`discovr-segment train`; returns the metrics it writes to `metrics.json`."""
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(config.seed)
    source = segmentation_format(config.data_format)
    data = source.load(config.data_root)
    if len(data["train"]) == 0:
        raise InputError(f"{config.data_root} has no training videos")
    model, processor = build_model(config, source.label_names)
    trainable_model = apply_mode(model, config)
    train_rows = _first(data["train"], config.max_train_videos)
    output_dir = Path(config.output_dir)
    arguments = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, lr_scheduler_type="cosine",
        warmup_steps=0.1, num_train_epochs=config.num_train_epochs, max_steps=config.max_steps,
        save_strategy="no", eval_strategy="no", logging_steps=config.logging_steps, report_to="none",
        remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=config.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(), seed=config.seed, disable_tqdm=config.disable_tqdm,
    )
    trainer = Trainer(
        model=trainable_model, args=arguments,
        train_dataset=train_rows.with_transform(SegmentationTransform(processor, config.data_format, training=True)),
    )
    trainer.train()
    if config.mode == "lora":
        model = trainable_model.merge_and_unload()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    log_history = trainer.state.log_history
    (output_dir / "training_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log_history))

    metrics = {"settings": asdict(config)}
    for split in ("validation", "test"):
        rows = _first(data[split], config.max_eval_videos) if split in data else []
        if len(rows):
            metrics[split] = evaluate_split(
                model, processor, rows, config.data_format, config.batch_size, config.num_bootstrap, config.seed,
                progress=not config.disable_tqdm,
            )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_model_card(
        output_dir, title=f"DISCOVR {config.head} segmentation probe", task_type="image-segmentation",
        size=describe_size(model.config, model.num_parameters()), dataset=dataset_name(config.data_root),
        dataset_type=config.data_format, task="LV segmentation", results=_card_results(metrics),
        base_model=model_reference(config.model_name_or_path),
        training=f"{config.mode} encoder, {config.head} head, {config.num_train_epochs:g} epochs, "
        f"learning rate {config.learning_rate:g}, batch {config.per_device_train_batch_size}.",
    )
    logger.info("Saved the segmentation model to %s", output_dir)
    return metrics


def _card_results(metrics: dict) -> list[CardResult]:
    test = metrics.get("test", {}).get("all_frames")
    if test is None:
        return []
    validation = metrics.get("validation", {}).get("all_frames", {}).get("metrics", {})
    return [
        CardResult("dice", f"Dice, {key[len('dice_'):]}", value, tuple(test["intervals"][key]), validation.get(key))
        for key, value in test["metrics"].items() if key.startswith("dice_")
    ]


def evaluate(config: SegmentEvaluateConfig) -> dict:
    """`discovr-segment evaluate`."""
    model, processor = load_segmentation_model(config.model_name_or_path, config.device)
    data = segmentation_format(config.data_format).load(config.data_root)
    missing = [split for split in config.splits if split not in data or len(data[split]) == 0]
    if missing:
        raise InputError(f"{config.data_root} has no videos in the splits {missing}")
    return {
        split: evaluate_split(
            model, processor, _first(data[split], config.max_eval_videos), config.data_format, config.batch_size,
            config.num_bootstrap, config.seed, progress=not config.disable_tqdm,
        )
        for split in config.splits
    }


SUBCOMMANDS = {
    "train": (SegmentTrainConfig, "Train a segmentation head on a DISCOVR encoder (frozen by default)."),
    "evaluate": (SegmentEvaluateConfig, "Dice and IoU per structure, with bootstrap intervals over videos."),
    "predict": (SegmentPredictConfig, "Per-frame masks, LV area curve, ED/ES frames and beat-by-beat EF of videos."),
}


def build_parser(command: str) -> DiscovrArgumentParser:
    options_class, description = SUBCOMMANDS[command]
    return DiscovrArgumentParser(options_class, prog=f"discovr-segment {command}", description=description)


def main(argv: list[str] | None = None) -> int:
    """`discovr-segment {train,evaluate,predict} ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: discovr-segment {train,evaluate,predict} [-h] ..."
    if not argv or argv[0] in ("-h", "--help"):
        lines = [usage, "", __doc__.strip().split("\n\n")[0], ""]
        lines += [f"  {name:<9} {description}" for name, (_, description) in SUBCOMMANDS.items()]
        lines += ["", "`discovr-segment COMMAND --help` lists a command's options."]
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"{usage}\ndiscovr-segment: error: unknown command {argv[0]!r} (choose from train, evaluate, predict)",
              file=sys.stderr)
        return 2
    command, parser = argv[0], build_parser(argv[0])
    config = parser.parse(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        if command == "train":
            result = train(config)
            print(json.dumps({split: result[split] for split in ("validation", "test") if split in result}, indent=2))
            return 0
        if command == "evaluate":
            result = evaluate(config)
            text = json.dumps(result, indent=2)
            if config.output:
                Path(config.output).write_text(text)
            else:
                print(text)
            return 0
        failed = predict_folder(config)
        return 1 if failed else 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
