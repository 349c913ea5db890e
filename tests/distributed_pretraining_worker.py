"""Worker of `test_distributed_pretraining.py`, launched with `torchrun --nproc_per_node 2`.

Each process loads the same saved model and takes its share of the saved batch (contiguous rows, by rank), runs
one training-mode forward and backward and one centre update, and writes its Sinkhorn codes, centres, DINO losses
and the process-averaged gradient of a DINO head's first layer (what DDP applies) to `<dir>/rank<r>.safetensors`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from discovr import DiscovrForPreTraining, DiscovrMasks


def main(directory: str) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    root = Path(directory)
    model = DiscovrForPreTraining.from_pretrained(root / "model").train()
    batch = load_file(root / "batch.safetensors")
    share = batch["pixel_values"].shape[0] // world_size
    rows = slice(rank * share, (rank + 1) * share)
    masks = DiscovrMasks(batch["global_view"][rows], batch["local_views"][rows], batch["image_views"][rows])
    output = model(batch["pixel_values"][rows], masks=masks)
    output.loss.backward()
    model.update_centers(output.video_teacher_mean.detach(), output.image_teacher_mean.detach())
    head_gradient = model.video_student_head.mlp[0].weight.grad.clone()
    dist.all_reduce(head_gradient)
    save_file(
        {
            "scd_codes": output.scd_codes.contiguous(),
            "video_center": model.video_center.contiguous(),
            "image_center": model.image_center.contiguous(),
            "dino_losses": torch.stack((output.video_dino_loss, output.image_dino_loss)).detach(),
            "head_gradient": head_gradient / world_size,
        },
        root / f"rank{rank}.safetensors",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
