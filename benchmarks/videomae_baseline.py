"""Transformers' `VideoMAEForPreTraining` at a DISCOVR preset's size: the masked-pixel baseline of the benchmarks.

It pretrains on the same clips as `discovr-pretrain` (the same sampler, multi-scale crop and normalisation), with
the same 90% tube masks (the DISCOVR mask generator's global view), the same AdamW settings and the same
warm-up + cosine schedule, so that only the objective differs. The encoder is saved as a `VideoMAEModel` next to
the DISCOVR video processor, which `discovr-eval` and `discovr-finetune` load like any encoder directory.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import VideoMAEConfig, VideoMAEForPreTraining

from discovr import DiscovrConfig, DiscovrVideoProcessor
from discovr.masking_discovr import DiscovrMaskGenerator
from discovr.training.pretrain import parameter_groups
from discovr.training.pretrain_data import PretrainingClips, PretrainingCollator, load_pretraining_videos
from discovr.training.schedules import PretrainSchedules

logger = logging.getLogger(__name__)


def videomae_config(config: DiscovrConfig) -> VideoMAEConfig:
    """A VideoMAE config with DISCOVR's encoder and decoder sizes (mean pooling, normalised-pixel loss)."""
    return VideoMAEConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        num_frames=config.num_frames, tubelet_size=config.tubelet_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps, qv_bias=config.qkv_bias, use_mean_pooling=True,
        decoder_hidden_size=config.decoder_hidden_size, decoder_num_hidden_layers=config.decoder_num_hidden_layers,
        decoder_num_attention_heads=config.decoder_num_attention_heads,
        decoder_intermediate_size=config.decoder_intermediate_size, norm_pix_loss=True,
    )


def pretrain_videomae(
    data_root: str | Path,
    output_dir: str | Path,
    config: DiscovrConfig,
    processor: DiscovrVideoProcessor,
    steps: int,
    batch_size: int,
    base_lr: float,
    warmup_epochs: float,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    clips_per_video: int = 1,
) -> dict:
    """Pretrain VideoMAE for `steps` optimiser steps; saves the encoder to `output_dir`. Returns the losses and time.

    `base_lr` is per 256 clips, scaled linearly by `batch_size`, and `clips_per_video` clips of every video make
    an epoch, as in `discovr-pretrain`.
    """
    torch.manual_seed(seed)
    model = VideoMAEForPreTraining(videomae_config(config))
    videos = load_pretraining_videos("echonet_dynamic", data_root)
    dataset = PretrainingClips(videos, processor, seed=seed, clips_per_video=clips_per_video)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        collate_fn=PretrainingCollator(DiscovrMaskGenerator.from_config(config)),
        generator=torch.Generator().manual_seed(seed),
    )
    schedules = PretrainSchedules(
        steps_per_epoch=len(loader), epochs=math.ceil(steps / len(loader)), lr=base_lr * batch_size / 256,
        warmup_epochs=warmup_epochs,
    )
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=schedules.lr, betas=(0.9, 0.95), weight_decay=0.05)
    losses: list[float] = []
    step, epoch = 0, 0
    start = time.perf_counter()
    with tqdm(total=steps, desc="videomae", unit="step", disable=not progress) as bar:
        while step < steps:
            dataset.set_epoch(epoch)
            for batch in loader:
                values = schedules.at(step)
                for group in optimizer.param_groups:
                    group["lr"] = values["lr"]
                    if group.get("apply_weight_decay", True):
                        group["weight_decay"] = values["weight_decay"]
                loss = model(pixel_values=batch["pixel_values"], bool_masked_pos=batch["masks"].global_view).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                if step >= steps:
                    break
            epoch += 1
    seconds = time.perf_counter() - start
    model.videomae.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    window = max(1, min(20, len(losses) // 10))
    return {
        "steps": step, "seconds": seconds, "loss_start": sum(losses[:window]) / window,
        "loss_end": sum(losses[-window:]) / window,
    }


__all__ = ["pretrain_videomae", "videomae_config"]
