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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    add_common_args,
    apply_common_args,
    autocast,
    bf16_supported,
    machine_info,
    profile_ops,
    ratio_summary,
    reference_matmul,
    time_interleaved,
)
from benchmarks.flops import CUSTOM_FLOP_FORMULAS
from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrMasks
from discovr.losses_discovr import dino_cross_entropy, dino_teacher_targets, sinkhorn
from discovr.training.pretrain import build_optimizer

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
    precision: str = "fp32",
) -> Callable[[], object]:
    """One optimiser step; under bf16 the forward and backward run in autocast, as `discovr-pretrain` runs them."""
    teacher_temperature = model.config.dino_teacher_temperature

    def step() -> None:
        with autocast(pixel_values.device, precision):
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


def step_flop_counts(model: DiscovrForPreTraining, pixel_values: torch.Tensor, masks: DiscovrMasks,
                     precision: str = "fp32") -> dict[str, int]:
    """FLOPs per aten op of one port step's forward and backward, counted by `FlopCounterMode` (the optimiser,
    EMA and centre updates are elementwise and not counted); the gradients it leaves are cleared."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOP_FORMULAS)
    with counter, autocast(pixel_values.device, precision):
        model(pixel_values, masks=masks, return_scd_swapped_loss=False).loss.backward()
    model.zero_grad(set_to_none=True)
    return {str(op): int(count) for op, count in counter.get_flop_counts()["Global"].items()}


def counted_step_flops(model: DiscovrForPreTraining, pixel_values: torch.Tensor, masks: DiscovrMasks,
                       precision: str = "fp32") -> int:
    """Total FLOPs of one port step's forward and backward (`step_flop_counts` summed)."""
    return sum(step_flop_counts(model, pixel_values, masks, precision).values())


# Profiler op names -> the kind of work the time-share table reports.
OP_GROUPS = {
    "matrix multiplies (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (SDPA forward and backward)": ("scaled_dot_product",),
    "patch embedding (convolution forward and backward)": ("convolution",),
    "optimiser (fused AdamW)": ("adamw", "Optimizer.step"),
}
OTHER_GROUP = "everything else (elementwise, softmax, norms, reductions, copies)"
GEMM_FLOP_OPS = ("aten.mm", "aten.addmm", "aten.bmm")


def op_group(name: str) -> str:
    for group, patterns in OP_GROUPS.items():
        if any(pattern in name for pattern in patterns):
            return group
    return OTHER_GROUP


def profile_step(step: Callable[[], object], flops_per_op: dict[str, int], matmul_gflops: float,
                 device: torch.device, steps: int = 3, top: int = 12) -> dict[str, object]:
    """Where a step's time goes (torch.profiler self time, grouped and by op), and how fast its matrix multiplies
    run on their own: their counted FLOPs over their profiled time, as a fraction of the reference matmul's rate."""
    def run_steps() -> None:
        for _ in range(steps):
            step()

    events, self_time = profile_ops(run_steps, device)
    events = [e for e in events if self_time(e) > 0]
    total = sum(self_time(e) for e in events)
    groups: dict[str, float] = dict.fromkeys([*OP_GROUPS, OTHER_GROUP], 0.0)
    for event in events:
        groups[op_group(event.key)] += self_time(event) / total
    gemm_seconds = sum(self_time(e) for e in events if e.key in OP_GROUPS["matrix multiplies (mm, addmm, bmm)"])
    gemm_seconds = gemm_seconds / 1e6 / steps
    gemm_flops = sum(count for op, count in flops_per_op.items() if op in GEMM_FLOP_OPS)
    gemm_gflops = gemm_flops / gemm_seconds / 1e9 if gemm_seconds else float("nan")
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    return {
        "profiled_ms_per_step": total / 1e3 / steps,
        "group_shares": groups,
        "top_ops": [{"op": e.key, "self_ms": self_time(e) / 1e3 / steps, "share": self_time(e) / total,
                     "calls": e.count / steps} for e in ranked],
        "gemm_flop_share": gemm_flops / max(sum(flops_per_op.values()), 1),
        "gemm_gflops": gemm_gflops,
        "gemm_fraction_of_matmul": gemm_gflops / matmul_gflops,
    }


def bench_shape(shape: PretrainShape, device: torch.device, precision: str, warmup: int,
                repeats: int, profile: bool = False, compile_model: bool = False) -> dict[str, object]:
    torch.manual_seed(0)
    config = shape.config()
    model = DiscovrForPreTraining(config).to(device).train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, device=device)  # as discovr-pretrain builds it
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(
        shape.batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size,
        generator=generator,
    ).to(device)
    masks = model.mask_generator(shape.batch_size, generator).to(device)
    logger.info("pretrain_step %s, %s on %s: %s", shape.name, precision, device, shape.describe())

    peak_memory: dict[str, float] = {}
    steps = {
        name: make_step(model, optimizer, pixel_values, masks, published=name == "published_control_flow",
                        precision=precision)
        for name in ("port", "published_control_flow")
    }
    compile_seconds = None
    if compile_model:
        # The same model and optimiser, its forward and backward compiled by inductor; compiled outside the timing.
        logger.info("pretrain_step %s, %s: compiling the model with torch.compile", shape.name, precision)
        steps["port_compiled"] = make_step(torch.compile(model), optimizer, pixel_values, masks, published=False,
                                           precision=precision)
        start = time.perf_counter()
        steps["port_compiled"]()
        compile_seconds = time.perf_counter() - start
    if device.type == "cuda":
        for name, step in steps.items():
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            peak_memory[name] = torch.cuda.max_memory_allocated(device) / 2**20
    flops_per_op = step_flop_counts(model, pixel_values, masks, precision)
    step_flops = sum(flops_per_op.values())
    # The reference rate: a large matmul in the step's compute dtype, in the same process, timed interleaved with
    # the steps (as benchmarks.flops does for the encoder), so a busy machine slows both alike.
    matmul_size = 256 if shape.name == "toy" else MATMUL_SIZE
    steps["matmul"], matmul_flops = reference_matmul(matmul_size, precision, device)
    stats, times = time_interleaved(steps, warmup=warmup, repeats=repeats, device=device)
    matmul_stats = stats.pop("matmul")
    matmul_gflops = matmul_flops / matmul_stats.median / 1e9
    times.pop("matmul")
    if device.type != "cuda":
        peak_memory["process_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tokens = shape.batch_size * config.num_patches
    port_gflops = step_flops / stats["port"].median / 1e9
    results: dict[str, object] = {
        "shape": shape.name,
        "precision": precision,
        "description": shape.describe(),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "all_parameters": sum(p.numel() for p in model.parameters()),
        "timings": {name: s.to_dict() for name, s in stats.items()},
        "clips_per_s": {name: shape.batch_size / s.median for name, s in stats.items()},
        "video_tokens_per_s": {name: tokens / s.median for name, s in stats.items()},
        "peak_memory_mib": peak_memory,
        "port_over_published": ratio_summary(times["port"], times["published_control_flow"]),
        "gflop_per_step": step_flops / 1e9,
        "port_gflops": port_gflops,
        "matmul_gflops": matmul_gflops,
        "matmul_size": matmul_size,
        "flop_limit_fraction": port_gflops / matmul_gflops,
    }
    if compile_model:
        results["compile_seconds"] = compile_seconds
        results["compiled_over_eager"] = ratio_summary(times["port_compiled"], times["port"])
    if profile:
        results["profile"] = profile_step(steps["port"], flops_per_op, matmul_gflops, device)
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
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
        help="fp32 (default), and bf16 autocast of forward and backward (FLOP limit against a bf16 matmul)",
    )
    parser.add_argument("--compile", dest="compile_model", action="store_true",
                        help="also time the port step with torch.compile(model) (inductor), compiled once first")
    parser.add_argument("--profile", action="store_true",
                        help="also profile 3 port steps: time share per kind of op, the costliest ops, and the "
                        "matrix multiplies' own FLOP rate against the reference matmul")
    add_common_args(parser, warmup=1, repeats=5)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the benchmark; return {"benchmark", "machine", "results": [one row per shape]}."""
    args = build_parser().parse_args(argv)
    apply_common_args(args)
    shapes = ["toy"] if args.quick else args.shapes
    notes = []
    if "bf16" in args.precisions and not bf16_supported(args.device):
        notes.append(f"{args.device} has no native bf16 (no AVX512-BF16/AMX on a CPU): bf16 runs emulated kernels.")
    return {
        "benchmark": "pretrain_step",
        "machine": machine_info(),
        "device": str(args.device),
        "shapes": {name: asdict(SHAPES[name]) for name in shapes},
        "warmup": args.warmup,
        "repeats": args.repeats,
        "notes": notes,
        "results": [bench_shape(SHAPES[name], args.device, precision, args.warmup, args.repeats, args.profile,
                                args.compile_model)
                    for name in shapes for precision in args.precisions],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
