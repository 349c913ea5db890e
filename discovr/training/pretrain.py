"""DISCOVR pretraining with Accelerate: one process, many GPUs or many machines, by `accelerate launch`.

    accelerate launch -m discovr.training.pretrain --data_root DIR --preset base --output_dir runs/discovr
    python -m discovr.training.pretrain --data_root DIR --preset tiny --output_dir runs/tiny   # one process
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..cli import DiscovrArgumentParser, InputError, model_type_of, run_console_script
from ..modeling_discovr import DiscovrForPreTraining
from ..video_processing_discovr import DiscovrVideoProcessor
from .model_card import dataset_name, describe_size, write_model_card
from .health import CollapseMonitor, encoder_rankme, step_health
from .pretrain_data import PretrainingClips, PretrainingCollator, load_health_clips, load_pretraining_videos
from .presets import load_model_config
from .pretrain_config import PretrainConfig, recipes_epilog, resolve_recipe
from .schedules import PretrainSchedules

logger = logging.getLogger("discovr.pretrain")

# Names that never get weight decay (the published method), besides every 1-D tensor (biases, norms).
NO_DECAY_NAMES = ("cls_token", "mask_token", "prototypes", "position_embeddings")
# Output field -> log key (the plots read every key that starts with "loss").
LOSS_FIELDS = {
    "loss": "loss", "scd_loss": "loss_scd", "video_dino_loss": "loss_video_dino",
    "image_dino_loss": "loss_image_dino", "scd_swapped_loss": "loss_scd_swapped", "koleo_loss": "loss_koleo",
}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stops instead of applying garbage updates."""


@dataclass
class TrainingState:
    """Counters saved with every checkpoint, so a resumed run continues where the killed one stopped."""

    global_step: int = 0  # optimiser steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed, per process
    # (processes, per-device batch, accumulation): what `batches_in_epoch` and the schedules count in.
    batch_layout: tuple[int, int, int] | None = None
    # The layout of the checkpoint a resumed run loaded (None for checkpoints written before it was saved).
    resumed_batch_layout: tuple[int, int, int] | None = None

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "batch_layout": list(self.batch_layout) if self.batch_layout else None}

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self.epoch, self.batches_in_epoch = (
            int(state["global_step"]), int(state["epoch"]), int(state["batches_in_epoch"])
        )
        layout = state.get("batch_layout")
        self.resumed_batch_layout = tuple(int(value) for value in layout) if layout else None


def parameter_groups(model: torch.nn.Module) -> list[dict]:
    """AdamW groups of the trainable (student) parameters: decay on weights, none on 1-D tensors and tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # teachers and the fixed weight-norm gains
        if param.ndim <= 1 or any(part in name for part in NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "apply_weight_decay": True}, {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False}]


# Devices with PyTorch's fused AdamW kernel (one kernel over all parameters instead of ~8 small ops per tensor).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """The published AdamW (betas 0.9/0.95) over `parameter_groups`, fused where PyTorch has the kernel.

    On the CPU the default implementation loops over the 170-odd student tensors of the small model and takes
    19 ms a step; the fused one takes 7 ms, and agrees with it to float32 rounding (tested).
    """
    return torch.optim.AdamW(parameter_groups(model), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay,
                             fused=device.type in FUSED_ADAMW_DEVICES)


def check_output_dir(output_dir: Path, required_bytes: int) -> None:
    """Fail before training when the output directory is unwritable or its disk cannot hold the checkpoints."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise InputError(f"output directory {output_dir} is not writable: {error}") from None
    free = shutil.disk_usage(output_dir).free
    if free < required_bytes:
        raise InputError(
            f"{output_dir} has {free / 2**30:.2f} GiB free, but the checkpoints need about "
            f"{required_bytes / 2**30:.2f} GiB"
        )


def _every_process(value: object) -> list:
    """`value` of every process, in rank order (a collective: every process must call it)."""
    return gather_object([value])


def check_output_dir_shared(output_dir: Path) -> None:
    """Every process must see what the main process wrote: checkpoints and the resume marker live there.

    On several machines without a shared file system, each node would otherwise resume from its own (or no)
    checkpoint and train apart. All processes take part, so they fail together instead of leaving the rest waiting.
    """
    sees = _every_process((output_dir / "pretrain_args.json").is_file())
    if not all(sees):
        blind = [rank for rank, seen in enumerate(sees) if not seen]
        raise InputError(
            f"processes {blind} cannot see {output_dir / 'pretrain_args.json'}, which the main process wrote: "
            "--output_dir must be on a file system shared by every machine"
        )


def resume_checkpoint(output_dir: Path, requested: str) -> Path | None:
    """The checkpoint to resume (`latest`: the newest complete one), the same on every process, or None."""
    checkpoint = latest_checkpoint(output_dir) if requested == "latest" else Path(requested)
    # Every process checks, then all fail together rather than leave the others waiting in a collective.
    found = _every_process(None if checkpoint is None else (str(checkpoint.resolve()), checkpoint.is_dir()))
    missing = [rank for rank, choice in enumerate(found) if choice is not None and not choice[1]]
    if missing:
        where = f" on processes {missing}" if len(found) > 1 else ""
        raise InputError(f"checkpoint {checkpoint} does not exist{where}")
    if len(set(found)) > 1:
        raise InputError(
            f"the processes would resume from different checkpoints (per rank: "
            f"{[choice and choice[0] for choice in found]}); every machine must see the same {output_dir / 'checkpoints'}"
        )
    return checkpoint


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = sorted(
        (p for p in (output_dir / "checkpoints").glob("step_*") if p.is_dir() and (p / "training_state.json").is_file()),
        key=lambda p: int(p.name.split("_")[1]),
    )
    return checkpoints[-1] if checkpoints else None


class JsonlLogger:
    """Appends one JSON object per logged step; the plots and the tests read it.

    A run that starts at `start_step` (0, or the step of the checkpoint it resumes) first drops the rows an earlier
    run logged after that step: they are logged again, and the log holds each step once.
    """

    def __init__(self, path: Path, enabled: bool, start_step: int = 0):
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_file():
                rows = [line for line in path.read_text().splitlines() if line.strip()]
                kept = [line for line in rows if json.loads(line)["step"] <= start_step]
                path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        PretrainConfig,
        prog="discovr-pretrain",
        description="Pretrain DISCOVR on a folder of echo videos. Run under `accelerate launch` for several GPUs\n"
        "or machines (DDP from your accelerate config; DeepSpeed and FSDP are refused until tested, see\n"
        "docs/scaling.md), or directly for one process.",
        epilog=recipes_epilog(),
        raw_epilog=True,
    )


# What breaks DISCOVR's teachers under each distributed type that is not supported yet (docs/scaling.md).
UNSUPPORTED_DISTRIBUTED_TYPES = {
    DistributedType.DEEPSPEED: (
        "DeepSpeed is refused: its bf16/fp16 modes cast the whole model, teachers included, to half precision, where "
        "the EMA step (1 - m)(student - teacher) with 1 - m <= 0.004 rounds away and the teachers stop moving; "
        "this path is not tested here. Use DDP with --mixed_precision bf16 (docs/scaling.md)"
    ),
    DistributedType.FSDP: (
        "FSDP is refused: the teacher EMA and the prototype re-normalisation write into sharded parameters in "
        "place and the export saves on the main process alone, and it cannot be tested on a CPU, where Accelerate "
        "does not apply FSDP (processes without a GPU run as MULTI_CPU, that is DDP). Use DDP (docs/scaling.md)"
    ),
}


# Accelerate's launch flags for each refused type: on processes without a GPU, Accelerate ignores them and runs
# MULTI_CPU (DDP) instead, so the request is refused from the flag (the run would not be what was asked for).
REQUEST_FLAGS = {DistributedType.FSDP: "ACCELERATE_USE_FSDP", DistributedType.DEEPSPEED: "ACCELERATE_USE_DEEPSPEED"}


def check_distributed_type(distributed_type: DistributedType, environ: Mapping[str, str] = os.environ) -> None:
    """Raise `InputError` for a distributed type, asked for or in effect, under which pretraining is not known to be
    correct."""
    for refused, flag in REQUEST_FLAGS.items():
        if distributed_type == refused or environ.get(flag, "false").lower() == "true":
            raise InputError(UNSUPPORTED_DISTRIBUTED_TYPES[refused])


def check_mixed_precision(mixed_precision: str, device_type: str) -> None:
    """fp16 on a CPU would silently train in float32: Accelerate enables fp16 autocast only on GPU-like devices."""
    if mixed_precision == "fp16" and device_type == "cpu":
        raise InputError(
            "--mixed_precision fp16 has no effect on a CPU (Accelerate enables fp16 autocast only on GPUs and "
            "similar devices), so this run would be float32; use bf16 (CPU autocast) or no"
        )


def estimate_checkpoint_bytes(model: torch.nn.Module, save_total_limit: int) -> int:
    """Weights + AdamW moments per checkpoint, plus the final exports."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (param_bytes + 2 * trainable) * max(1, save_total_limit) + 2 * param_bytes


def pretrain(config: PretrainConfig) -> dict:
    """Run pretraining; returns a summary (steps done, last losses, output paths).

    Unset recipe options take the recipe's values; the resolved options are written to
    OUTPUT_DIR/pretrain_args.json, so a run records what it used.
    """
    args = resolve_recipe(config)
    if args.clips_per_video < 1:
        raise InputError(f"--clips_per_video must be at least 1, got {args.clips_per_video}")
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        # Without it, processes launched on a machine with no accelerator each train alone (DistributedType.NO).
        cpu=not torch.accelerator.is_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=_available_trackers(),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    check_distributed_type(accelerator.distributed_type)
    check_mixed_precision(accelerator.mixed_precision, accelerator.device.type)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise InputError(
            f"{launched} processes were launched but Accelerate sees {accelerator.num_processes}; "
            "check the accelerate config (distributed type, machine count)"
        )
    set_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)

    config = load_model_config(args.preset, args.config)
    config.dino_center_momentum = args.center_momentum
    if args.init_from:
        if model_type_of(args.init_from) != "discovr":
            raise InputError(f"--init_from {args.init_from} does not hold a DISCOVR model")
        model = DiscovrForPreTraining.from_pretrained(args.init_from, config=config)
    else:
        model = DiscovrForPreTraining(config)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if accelerator.is_main_process:
        check_output_dir(output_dir, estimate_checkpoint_bytes(model, args.save_total_limit))
        (output_dir / "pretrain_args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2, sort_keys=True))
    accelerator.wait_for_everyone()
    check_output_dir_shared(output_dir)

    processor = DiscovrVideoProcessor(
        num_frames=config.num_frames, frame_stride=args.frame_stride,
        size={"height": config.image_size, "width": config.image_size},
    )
    videos = load_pretraining_videos(args.data_format, args.data_root, args.manifest, args.split, args.pediatric_view)
    dataset = PretrainingClips(
        videos, processor, seed=args.seed, multi_scale_crop=args.multi_scale_crop,
        clips_per_video=args.clips_per_video,
    )
    loader = DataLoader(
        dataset, batch_size=args.per_device_batch_size, shuffle=True, drop_last=True,
        num_workers=args.num_workers, collate_fn=PretrainingCollator(model.mask_generator),
    )
    if len(loader) == 0:
        raise InputError(
            f"{len(videos)} videos x {args.clips_per_video} clips give no full batch of "
            f"{args.per_device_batch_size} per process"
        )

    health_pixels = None
    if accelerator.is_main_process and args.health_clips > 0:
        health_videos, source = videos, "training"
        if args.data_format != "csv":
            try:
                health_videos = load_pretraining_videos(
                    args.data_format, args.data_root, None, "validation", args.pediatric_view
                )
                source = "validation"
            except (KeyError, ValueError):
                pass
        health_pixels = load_health_clips(processor, health_videos, args.health_clips)
        logger.info("Health metrics embed %d fixed %s clips", health_pixels.shape[0], source)

    global_batch = args.per_device_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    optimizer = build_optimizer(model, args.base_lr, args.weight_decay, accelerator.device)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # A last partial accumulation window still ends in an optimiser step (Accelerate syncs at the loader end).
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    schedules = PretrainSchedules(
        steps_per_epoch=steps_per_epoch, epochs=args.epochs, lr=args.base_lr * global_batch / 256,
        min_lr=args.min_lr, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        weight_decay_end=args.weight_decay_end,
        momentum_teacher=args.momentum_teacher, momentum_teacher_end=args.momentum_teacher_end, warmup_teacher_temperature=args.warmup_teacher_temperature,
        teacher_temperature=args.teacher_temperature,
        warmup_teacher_temperature_epochs=args.warmup_teacher_temperature_epochs,
    )
    total_steps = schedules.total_steps if args.max_steps is None else min(args.max_steps, schedules.total_steps)

    state = TrainingState(
        batch_layout=(accelerator.num_processes, args.per_device_batch_size, args.gradient_accumulation_steps)
    )
    accelerator.register_for_checkpointing(state)
    if args.resume_from_checkpoint:
        checkpoint = resume_checkpoint(output_dir, args.resume_from_checkpoint)
        if checkpoint is None:
            logger.warning("No checkpoint under %s/checkpoints: starting from scratch", output_dir)
        else:
            accelerator.load_state(str(checkpoint))
            if state.resumed_batch_layout not in (None, state.batch_layout):
                # Another layout would skip the wrong samples of the epoch and stretch or shrink the schedules.
                raise InputError(
                    "checkpoint {} was written by {} processes x batch {} x accumulation {}; resume it with the same "
                    "(this run has {} x {} x {}), or start a new run".format(
                        checkpoint, *state.resumed_batch_layout, *state.batch_layout)
                )
            logger.info("Resumed from %s at step %d (epoch %d)", checkpoint, state.global_step, state.epoch)

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        accelerator.init_trackers("discovr-pretrain", config={k: v for k, v in vars(args).items() if v is not None})
    jsonl = JsonlLogger(output_dir / "logs" / "pretrain_log.jsonl", accelerator.is_main_process, state.global_step)
    logger.info(
        "Pretraining %s on %d videos: %d processes x batch %d x accumulation %d = global batch %d, lr %.3g, "
        "%d optimiser steps per epoch, %d steps", args.preset or args.config, len(videos), accelerator.num_processes,
        args.per_device_batch_size, args.gradient_accumulation_steps, global_batch, schedules.lr, steps_per_epoch,
        total_steps,
    )

    monitor = CollapseMonitor(config.dino_out_dim, warmup_steps=schedules.warmup_steps)
    progress = tqdm(total=total_steps, initial=state.global_step, desc="pretrain", unit="step",
                    disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    last_losses: dict[str, float] = {}
    window_start, window_clips = time.perf_counter(), 0
    while state.global_step < total_steps:
        dataset.set_epoch(state.epoch)
        loader.set_epoch(state.epoch)
        epoch_loader = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        center_sums: list[torch.Tensor] = []
        for batch in epoch_loader:
            step_values = schedules.at(state.global_step)
            with accelerator.accumulate(model):
                unwrapped.normalize_prototypes()
                # Only the last micro-batch of a logged optimiser step is reported.
                logging_step = accelerator.sync_gradients and is_logging_step(
                    state.global_step + 1, args.logging_steps, total_steps
                )
                outputs = model(
                    pixel_values=batch["pixel_values"], masks=batch["masks"],
                    teacher_temperature=step_values["teacher_temperature"],
                    # The swapped SCD direction is only reported: its second Sinkhorn runs on logged micro-batches.
                    return_scd_swapped_loss=logging_step,
                )
                _check_finite(outputs, state.global_step)
                if logging_step:
                    health = step_health(outputs, config.num_prototypes)
                accelerator.backward(outputs.loss)
                center_sums.append(torch.stack((outputs.video_teacher_mean, outputs.image_teacher_mean)).detach())
                if accelerator.sync_gradients:
                    for group in optimizer.param_groups:
                        group["lr"] = step_values["lr"]
                        if group.get("apply_weight_decay", True):
                            group["weight_decay"] = step_values["weight_decay"]
                    if args.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            window_clips += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            # After the optimiser step: EMA teachers and DINO centres (docs/pretraining.md, departure 2).
            video_mean, image_mean = torch.stack(center_sums).mean(0)
            center_sums.clear()
            unwrapped.update_teachers(step_values["teacher_momentum"])
            unwrapped.update_centers(video_mean, image_mean)
            state.global_step += 1
            progress.update(1)

            if logging_step:
                last_losses = loss_terms(outputs)
                if health_pixels is not None:
                    health["video_teacher_rankme"] = encoder_rankme(unwrapped.video_teacher, health_pixels)
                clips_per_second = window_clips / max(time.perf_counter() - window_start, 1e-9)
                record = {"step": state.global_step, "epoch": state.epoch, **last_losses, **health, **step_values,
                          "clips_per_second": clips_per_second}
                accelerator.log(record, step=state.global_step)
                jsonl.log(record)
                monitor.update(state.global_step, {
                    "video": last_losses["loss_video_dino"], "image": last_losses["loss_image_dino"],
                })
                progress.set_postfix(loss=f"{last_losses['loss']:.3f}", lr=f"{step_values['lr']:.1e}",
                                     H_v=f"{health['video_teacher_entropy']:.2f}",
                                     H_i=f"{health['image_teacher_entropy']:.2f}",
                                     codes=health["scd_codes_used"], clips_s=f"{clips_per_second:.1f}")
                window_start, window_clips = time.perf_counter(), 0
            if state.global_step % args.save_steps == 0 and state.global_step < total_steps:
                save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if state.global_step >= total_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    progress.close()

    accelerator.wait_for_everyone()
    paths = {}
    if accelerator.is_main_process:
        paths = export(unwrapped, processor, output_dir, args, len(videos), state, last_losses)
    accelerator.end_training()
    return {"global_step": state.global_step, "epoch": state.epoch, "losses": last_losses, **paths}


def is_logging_step(step: int, logging_steps: int, total_steps: int) -> bool:
    """Whether optimiser step `step` (counted from 1) is logged."""
    return step % logging_steps == 0 or step == total_steps


def loss_terms(outputs) -> dict[str, float]:
    """The loss and each of its terms as floats, under their log keys."""
    return {
        key: float(getattr(outputs, field).detach()) for field, key in LOSS_FIELDS.items() if getattr(outputs, field) is not None
    }


def _check_finite(outputs, step: int) -> None:
    loss = outputs.loss.detach()
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"Loss is {float(loss)} at optimiser step {step} (terms: {loss_terms(outputs)}); stopping before the update. "
            "Lower the learning rate, enable --max_grad_norm, or use bf16 instead of fp16."
        )


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: TrainingState, keep: int) -> Path:
    """`accelerator.save_state` (model, teachers, centres, optimiser, RNG states, counters), oldest pruned."""
    checkpoint = output_dir / "checkpoints" / f"step_{state.global_step}"
    accelerator.save_state(str(checkpoint))
    # `save_state` returns on each process once its own files are written: the marker waits for all of them
    # (every process's RNG state), or a machine killed meanwhile would leave a "complete" checkpoint without its part.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The state file marks a complete checkpoint (`latest_checkpoint` skips folders without one), so it is
        # written last and renamed into place: a run killed while writing it leaves no truncated marker.
        partial_state = checkpoint / "training_state.json.partial"
        partial_state.write_text(json.dumps(state.state_dict()))
        os.replace(partial_state, checkpoint / "training_state.json")
        existing = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in existing[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return checkpoint


def export(model: DiscovrForPreTraining, processor: DiscovrVideoProcessor, output_dir: Path,
           args: PretrainConfig, num_videos: int, state: TrainingState, losses: dict[str, float]) -> dict[str, str]:
    """Write OUTPUT_DIR/pretrained (full model) and OUTPUT_DIR/encoder (a DiscovrModel), each with the processor."""
    pretrained_dir, encoder_dir = output_dir / "pretrained", output_dir / "encoder"
    model.save_pretrained(pretrained_dir)
    processor.save_pretrained(pretrained_dir)
    encoder = model.video_teacher if args.export_encoder == "teacher" else model.discovr
    encoder.save_pretrained(encoder_dir)
    processor.save_pretrained(encoder_dir)
    recipe = f"the `{args.preset}` preset and recipe" if args.preset else "a config file"
    final_losses = ", ".join(f"{name} {value:.4g}" for name, value in losses.items())
    training = (f"Pretrained with `discovr-pretrain` ({recipe}) on the `{args.split}` split, {num_videos} videos, for "
                f"{state.global_step} optimiser steps ({state.epoch} full epochs) with batch "
                f"{args.per_device_batch_size} per device. Final losses: {final_losses}.")
    for directory, title, module in ((pretrained_dir, "DISCOVR pretraining checkpoint", model),
                                     (encoder_dir, f"DISCOVR video encoder (the {args.export_encoder})", encoder)):
        write_model_card(directory, title=title, size=describe_size(module.config, module.num_parameters()),
                         dataset=dataset_name(args.data_root), dataset_type=args.data_format,
                         training=training)
    logger.info("Saved %s and %s", pretrained_dir, encoder_dir)
    return {"pretrained_dir": str(pretrained_dir), "encoder_dir": str(encoder_dir)}


def _available_trackers() -> list[str]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def run() -> int:
        try:
            summary = pretrain(config)
        except TrainingDivergedError as error:
            logger.error("%s", error)
            return 3
        logger.info("Done: %s", json.dumps({k: v for k, v in summary.items() if k != "losses"}))
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
