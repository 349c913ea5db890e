"""Peak memory of one pretraining step, with and without gradient checkpointing, and the largest batch it allows.

Each measurement runs in a fresh process (a process's peak resident memory only grows): build the model of a
preset, take one AdamW step (forward, backward, optimiser, teacher EMA) at batch B, report the peak RSS. Two
batch sizes give the memory per clip (activations and their gradients) and the fixed part (weights, gradients,
AdamW moments, the interpreter). The largest batch for a memory budget follows from them. On CPU this is host
memory: a GPU adds its context and allocator slack, so the GPU figure is an estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.common import machine_info, setup_logging

logger = logging.getLogger("benchmarks.pretrain_memory")

GIB = 2**30
STEP_SCRIPT = """
import json, resource, torch
from discovr import DiscovrForPreTraining
from discovr.training.presets import load_model_config
torch.manual_seed(0)
config = load_model_config(preset={preset!r})
model = DiscovrForPreTraining(config).train()
if {checkpointing}:
    model.activation_checkpointing_enable()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
pixel_values = torch.randn({batch}, config.num_frames, config.num_channels, config.image_size, config.image_size)
output = model(pixel_values, generator=torch.Generator().manual_seed(0), return_scd_swapped_loss=False)
output.loss.backward()
optimizer.step()
model.update_teachers(0.996)
print(json.dumps({{"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "parameters": sum(p.numel() for p in model.parameters())}}))
"""


def measure(preset: str, batch: int, checkpointing: bool) -> dict:
    """One step in a fresh process; its peak resident memory."""
    script = STEP_SCRIPT.format(preset=preset, batch=batch, checkpointing=checkpointing)
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_batch(fixed_bytes: float, per_clip_bytes: float, budget_bytes: float) -> int:
    """Clips that fit `budget_bytes` given the fixed part and the memory per clip."""
    return max(0, int((budget_bytes - fixed_bytes) // per_clip_bytes)) if per_clip_bytes > 0 else 0


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrain_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", help="Model size (base: the published ViT-B, 64x112² clips).")
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 2], help="The two batch sizes measured.")
    parser.add_argument("--budget_gib", type=float, default=80.0, help="Memory per device for the batch estimate.")
    parser.add_argument("--quick", action="store_true", help="The tiny preset: a smoke test of the code path.")
    args = parser.parse_args(argv)
    setup_logging()
    if args.quick:
        # The tiny preset's DINO heads use batch norm, which needs two clips per batch.
        args.preset, args.batches = "tiny", [2, 3]
    small, large = args.batches
    results = {}
    for checkpointing in (False, True):
        peaks = {}
        for batch in (small, large):
            logger.info("%s, batch %d, checkpointing %s", args.preset, batch, checkpointing)
            peaks[batch] = measure(args.preset, batch, checkpointing)
        per_clip = (peaks[large]["peak_rss_bytes"] - peaks[small]["peak_rss_bytes"]) / (large - small)
        fixed = peaks[small]["peak_rss_bytes"] - small * per_clip
        results["checkpointing" if checkpointing else "no_checkpointing"] = {
            "peak_gib": {str(batch): peak["peak_rss_bytes"] / GIB for batch, peak in peaks.items()},
            "per_clip_gib": per_clip / GIB,
            "fixed_gib": fixed / GIB,
            "largest_batch_in_budget": largest_batch(fixed, per_clip, args.budget_gib * GIB),
        }
    result = {"preset": args.preset, "budget_gib": args.budget_gib, "parameters": peaks[small]["parameters"],
              "results": results, "machine": machine_info()}
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
