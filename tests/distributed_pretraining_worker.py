"""Worker of `test_distributed_pretraining.py`, launched with `torchrun --nproc_per_node 2`.

Each process loads the same saved model and takes its share of the saved batch (contiguous rows, by rank),
runs one forward and one centre update, and writes its Sinkhorn codes and centres to `<dir>/rank<r>.safetensors`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from discovr import DiscovrForPreTraining


def main(directory: str) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    root = Path(directory)
    model = DiscovrForPreTraining.from_pretrained(root / "model")
    batch = load_file(root / "batch.safetensors")
    share = batch["pixel_values"].shape[0] // world_size
    rows = slice(rank * share, (rank + 1) * share)
    masks = {name: batch[name][rows] for name in ("global", "local", "image")}
    with torch.no_grad():
        output = model(batch["pixel_values"][rows], masks=masks)
    model.update_centers(output.video_teacher_mean, output.image_teacher_mean)
    save_file(
        {
            "scd_codes": output.scd_codes.contiguous(),
            "video_center": model.video_center.contiguous(),
            "image_center": model.image_center.contiguous(),
        },
        root / f"rank{rank}.safetensors",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
