"""Pretraining step speed: `DiscovrForPreTraining` forward + backward + AdamW step + teacher EMA + centre update.

Two workloads run interleaved in one process, on the same model, batch and masks:

- `port`: `DiscovrForPreTraining.forward` as shipped: the global view and the V local video views in ONE
  student-encoder batch (B * (1 + V) sequences, patch embedding computed once per clip), the image-student
  views in one batch, the image teacher run once per step, no host sync in forward when the model draws the
  masks itself.
- `published_control_flow`: a RE-ENACTMENT of the published training forward's control flow built from this
  port's own modules (it is not the published code, which is not on this machine): the teachers' EMA at the
  start of forward, one student-encoder call for the global view and then a Python loop of V encoder calls for
  the local views, image DINO over frame chunks of 1024 (teacher and student per chunk), and a second image
  teacher pass over every frame for the SCD targets. The image-student views of a chunk stay batched, so
  the re-enactment is, if anything, favourable to the published flow.

Both compute the same kinds of loss terms, so the ratio isolates the control flow. Peak memory is the
process's maximum RSS on CPU (one figure for the whole run, as RSS never shrinks back) and
`torch.cuda.max_memory_allocated` per workload on GPU.
"""

from __future__ import annotations

import argparse
import logging
import math
import resource
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import add_common_args, apply_common_args, machine_info, ratio_summary, time_interleaved
from benchmarks.flops import CUSTOM_FLOP_FORMULAS
from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrMasks
from discovr.losses_discovr import dino_cross_entropy, dino_teacher_targets, sinkhorn

logger = logging.getLogger("benchmarks.pretrain_step")

# The published code's image-DINO chunk and its loss factor (256 / chunk size).
PUBLISHED_IMAGE_CHUNK = 1024
# Side of the reference matmul for the FLOP limit: large enough to run near the machine's peak GEMM rate.
MATMUL_SIZE = 2048


@dataclass(frozen=True)
class PretrainShape:
    """One benchmarked pretraining configuration (video, image branch and decoder sizes) and batch."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    decoder_hidden_size: int
    decoder_num_hidden_layers: int
    decoder_num_attention_heads: int
    dino_hidden_size: int
    dino_bottleneck_size: int
    dino_out_dim: int
    num_prototypes: int
    num_frames: int
    image_size: int
    batch_size: int
    num_local_views: int = 4

    def config(self) -> DiscovrConfig:
        return DiscovrConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=4 * self.hidden_size,
            decoder_hidden_size=self.decoder_hidden_size, decoder_num_hidden_layers=self.decoder_num_hidden_layers,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            decoder_intermediate_size=4 * self.decoder_hidden_size,
            dino_hidden_size=self.dino_hidden_size, dino_bottleneck_size=self.dino_bottleneck_size,
            dino_out_dim=self.dino_out_dim, num_prototypes=self.num_prototypes, num_frames=self.num_frames,
            image_size=self.image_size, num_local_views=self.num_local_views, attn_implementation="sdpa",
        )

    def describe(self) -> str:
        return (
            f"video and image ViTs width {self.hidden_size} x {self.num_hidden_layers} layers, decoder "
            f"{self.decoder_hidden_size} x {self.decoder_num_hidden_layers}, DINO heads {self.dino_hidden_size}/"
            f"{self.dino_bottleneck_size}/{self.dino_out_dim}, K={self.num_prototypes}, V={self.num_local_views}, "
            f"{self.num_frames}x{self.image_size}² clips, batch {self.batch_size}"
        )


SHAPES = {
    "toy": PretrainShape("toy", 32, 1, 2, 16, 1, 2, 32, 8, 64, 16, 4, 32, 2, num_local_views=2),
    "small": PretrainShape("small", 192, 4, 3, 96, 2, 3, 512, 64, 4096, 3000, 16, 112, 2),
    "vit-b": PretrainShape("vit-b", 768, 12, 12, 384, 4, 6, 2048, 256, 16384, 3000, 16, 112, 2),
}


def published_control_flow_loss(
    model: DiscovrForPreTraining, pixel_values: torch.Tensor, masks: DiscovrMasks, teacher_temperature: float
) -> torch.Tensor:
    """Re-enactment of the published forward's control flow with this port's modules (see the module docstring)."""
    config = model.config
    batch_size = pixel_values.shape[0]
    model.update_teachers(0.99)  # the published code updates the teachers here, before the loss

    student = model.discovr(pixel_values, bool_masked_pos=masks.global_view).last_hidden_state
    positions = (~masks.global_view).nonzero()[:, 1].view(batch_size, -1)
    predictions = model.decode(student[:, 1:], positions)
    with torch.no_grad():
        video_teacher = model.video_teacher_head(model.video_teacher(pixel_values).last_hidden_state[:, 0])
    video_dino = 0.0
    for view in range(masks.local_views.shape[1]):
        local = model.discovr(pixel_values, bool_masked_pos=masks.local_views[:, view]).last_hidden_state[:, 0]
        video_dino = video_dino + dino_cross_entropy(
            model.video_student_head(local).unsqueeze(1),
            dino_teacher_targets(video_teacher, teacher_temperature, center=model.video_center),
            config.dino_student_temperature,
        ) / masks.local_views.shape[1]

    frames = pixel_values.flatten(0, 1)
    image_masks = masks.image_views.flatten(0, 1)
    num_image_visible = int((~image_masks[0, 0]).sum())
    for start in range(0, frames.shape[0], PUBLISHED_IMAGE_CHUNK):
        chunk = slice(start, start + PUBLISHED_IMAGE_CHUNK)
        with torch.no_grad():
            teacher = model.image_teacher_head(model.image_teacher(frames[chunk])[:, 0])
        chunk_positions = (~image_masks[chunk]).nonzero()[:, -1].view(*image_masks[chunk].shape[:2], num_image_visible)
        student_cls = model.image_student(frames[chunk], chunk_positions)[:, 0]
        logits = model.image_student_head(student_cls).view(teacher.shape[0], -1, config.dino_out_dim)
        # The published code keeps only the last chunk's loss, scaled by 256 / chunk size.
        image_dino = dino_cross_entropy(
            logits, dino_teacher_targets(teacher, teacher_temperature, center=model.image_center),
            config.dino_student_temperature,
        ) * (256 / PUBLISHED_IMAGE_CHUNK)

    with torch.no_grad():  # the second image-teacher pass, for the SCD targets
        teacher_patches = model.image_teacher(frames)[:, 1:]
        scores = model.prototype_scores(model.scd_targets(teacher_patches, batch_size)).float()
        codes = sinkhorn(scores.flatten(0, 1), config.sinkhorn_epsilon, config.sinkhorn_iterations).argmax(-1)
    logits = model.prototype_scores(predictions).float() / config.scd_temperature
    scd = F.cross_entropy(logits.flatten(0, 1), codes)
    return scd + video_dino + image_dino


def make_step(
    model: DiscovrForPreTraining,
    optimizer: torch.optim.Optimizer,
    pixel_values: torch.Tensor,
    masks: DiscovrMasks,
    published: bool,
) -> Callable[[], object]:
    teacher_temperature = model.config.dino_teacher_temperature

    def step() -> None:
        if published:
            loss = published_control_flow_loss(model, pixel_values, masks, teacher_temperature)
        else:
            # As `discovr-pretrain` between logging steps: the reported swapped SCD direction is not computed.
            output = model(
                pixel_values, masks=masks, teacher_temperature=teacher_temperature, return_scd_swapped_loss=False
            )
            loss = output.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not published:
            model.update_teachers(0.996)
            model.update_centers(output.video_teacher_mean, output.image_teacher_mean)
        model.normalize_prototypes()

    return step


def counted_step_flops(model: DiscovrForPreTraining, pixel_values: torch.Tensor, masks: DiscovrMasks) -> int:
    """FLOPs of one port step's forward and backward, counted by `FlopCounterMode` (the optimiser, EMA and
    centre updates are elementwise and not counted); the gradients it leaves are cleared."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOP_FORMULAS)
    with counter:
        model(pixel_values, masks=masks, return_scd_swapped_loss=False).loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench_shape(shape: PretrainShape, device: torch.device, warmup: int, repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    config = shape.config()
    model = DiscovrForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05
    )
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(
        shape.batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size,
        generator=generator,
    ).to(device)
    masks = model.mask_generator(shape.batch_size, generator).to(device)
    logger.info("pretrain_step %s: %s", shape.name, shape.describe())

    peak_memory: dict[str, float] = {}
    steps = {
        name: make_step(model, optimizer, pixel_values, masks, published=name == "published_control_flow")
        for name in ("port", "published_control_flow")
    }
    if device.type == "cuda":
        for name, step in steps.items():
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            peak_memory[name] = torch.cuda.max_memory_allocated(device) / 2**20
    step_flops = counted_step_flops(model, pixel_values, masks)
    # The reference rate: a large matmul in the same process, timed interleaved with the steps (as
    # benchmarks.flops does for the encoder), so a busy machine slows both alike.
    matmul_size = 256 if shape.name == "toy" else MATMUL_SIZE
    a, b = (torch.randn(matmul_size, matmul_size, device=device) for _ in range(2))
    steps["matmul"] = lambda: torch.matmul(a, b)
    stats, times = time_interleaved(steps, warmup=warmup, repeats=repeats, device=device)
    matmul_stats = stats.pop("matmul")
    matmul_gflops = 2 * matmul_size**3 / matmul_stats.median / 1e9
    times.pop("matmul")
    if device.type != "cuda":
        peak_memory["process_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tokens = shape.batch_size * config.num_patches
    results: dict[str, object] = {
        "shape": shape.name,
        "description": shape.describe(),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "all_parameters": sum(p.numel() for p in model.parameters()),
        "timings": {name: s.to_dict() for name, s in stats.items()},
        "clips_per_s": {name: shape.batch_size / s.median for name, s in stats.items()},
        "video_tokens_per_s": {name: tokens / s.median for name, s in stats.items()},
        "peak_memory_mib": peak_memory,
        "port_over_published": ratio_summary(times["port"], times["published_control_flow"]),
        "gflop_per_step": step_flops / 1e9,
        "port_gflops": step_flops / stats["port"].median / 1e9,
        "matmul_gflops": matmul_gflops,
        "matmul_size": matmul_size,
        "flop_limit_fraction": step_flops / stats["port"].median / 1e9 / matmul_gflops,
    }
    for name, timing in results["timings"].items():
        if not math.isfinite(timing["median"]):
            raise RuntimeError(f"non-finite timing for {name} in {shape.name}")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pretrain_step",
        description=__doc__.split("\n\n")[0] + " Ratios below 1.0 mean the port is faster.",
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=sorted(SHAPES), default=["small"],
        help="sizes to run (default: small; --quick uses toy). " + "; ".join(
            f"{name}: {shape.describe()}" for name, shape in SHAPES.items()
        ),
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_common_args(parser, warmup=1, repeats=5)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the benchmark; return {"benchmark", "machine", "results": [one row per shape]}."""
    args = build_parser().parse_args(argv)
    apply_common_args(args)
    shapes = ["toy"] if args.quick else args.shapes
    device = torch.device(args.device)
    return {
        "benchmark": "pretrain_step",
        "machine": machine_info(),
        "device": str(device),
        "shapes": {name: asdict(SHAPES[name]) for name in shapes},
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": [bench_shape(SHAPES[name], device, args.warmup, args.repeats) for name in shapes],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
