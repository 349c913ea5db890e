"""Hardware efficiency of the DISCOVR encoder forward: achieved GFLOP/s against a large `torch.matmul`.

The forward's FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` (matmuls, the tubelet
convolution and attention; element-wise ops are not counted, by the usual convention) and checked against
the analytic ViT count. The CPU SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) has no formula
in torch's registry, so one is supplied here: without it attention, a fifth of ViT-B's work, would be missed.

The reference rate is an N x N `torch.matmul` in the same dtype, timed interleaved with the forward in the
same process, so a busy or throttled machine slows both alike. Efficiency = forward GFLOP/s / matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    add_common_args,
    apply_common_args,
    autocast,
    bf16_supported,
    machine_info,
    profile_ops,
    reference_matmul,
    time_interleaved,
)
from benchmarks.encoder_vs_videomae import SHAPES, EncoderShape, discovr_config
from discovr import DiscovrModel

logger = logging.getLogger("benchmarks.flops")

_aten = torch.ops.aten


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q Kᵀ and P V: 2·B·H·Lq·Lk·(Dqk + Dv) FLOPs, as torch counts its GPU SDPA kernels."""
    batch, heads, q_len, qk_dim = query_shape
    kv_len, v_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * q_len * kv_len * (qk_dim + v_dim)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """dV = Pᵀ dO, dP = dO Vᵀ, dQ = dS K, dK = dSᵀ Q: twice the forward's matmuls, as torch counts its GPU kernels."""
    return 2 * _sdpa_cpu_flops(query_shape, key_shape, value_shape)


CUSTOM_FLOP_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
}


def analytic_forward_flops(shape: EncoderShape) -> int:
    """Matmul FLOPs of one unmasked forward: tubelet conv, q/k/v/proj, attention and MLP of every layer."""
    tokens = shape.num_patches + 1  # + CLS
    width, mlp = shape.hidden_size, shape.intermediate_size
    patch_inputs = 3 * shape.tubelet_size * shape.patch_size**2
    embed = 2 * shape.num_patches * width * patch_inputs
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width
    return shape.batch_size * (embed + shape.num_hidden_layers * per_layer)


def counted_forward_flops(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one forward as counted by FlopCounterMode, and the split per aten op."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOP_FORMULAS)
    with torch.inference_mode(), counter:
        model(pixel_values=pixel_values)
    per_op = {str(op): int(count) for op, count in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), per_op


def profile_top_ops(
    model: torch.nn.Module, pixel_values: torch.Tensor, precision: str, limit: int = 10
) -> list[dict[str, object]]:
    """torch.profiler self time of the `limit` costliest aten ops in one forward (the evidence of where the time
    goes): CPU time on a CPU, kernel time on a GPU."""

    def forward() -> None:
        with torch.inference_mode(), autocast(pixel_values.device, precision):
            model(pixel_values=pixel_values)

    events, self_time = profile_ops(forward, pixel_values.device)
    events = sorted(events, key=self_time, reverse=True)
    total = sum(self_time(e) for e in events) or 1.0
    return [
        {"op": e.key, "self_ms": self_time(e) / 1e3, "share": self_time(e) / total, "calls": e.count}
        for e in events[:limit]
    ]


def bench_precision(
    model: DiscovrModel,
    pixel_values: torch.Tensor,
    flops: int,
    precision: str,
    matmul_size: int,
    warmup: int,
    repeats: int,
) -> dict[str, object]:
    """Forward and reference matmul, interleaved; rates from medians and from paired rounds."""
    device = pixel_values.device
    matmul, matmul_flops = reference_matmul(matmul_size, precision, device)

    def forward() -> None:
        with torch.inference_mode(), autocast(pixel_values.device, precision):
            model(pixel_values=pixel_values)

    logger.info("[%s] timing forward and %d² matmul: %d warmup + %d interleaved runs",
                precision, matmul_size, warmup, repeats)
    stats, times = time_interleaved({"forward": forward, "matmul": matmul}, warmup=warmup, repeats=repeats,
                                    device=device)
    forward_rates = [flops / t / 1e9 for t in times["forward"]]
    matmul_rates = [matmul_flops / t / 1e9 for t in times["matmul"]]
    paired = [f / m for f, m in zip(forward_rates, matmul_rates)]
    row = {
        "precision": precision,
        "timings": {name: s.to_dict() for name, s in stats.items()},
        "forward_gflops": flops / stats["forward"].median / 1e9,
        "forward_gflops_best": flops / stats["forward"].min / 1e9,
        "matmul_gflops": matmul_flops / stats["matmul"].median / 1e9,
        "matmul_gflops_best": matmul_flops / stats["matmul"].min / 1e9,
        "matmul_size": matmul_size,
        "efficiency_of_medians": (flops / stats["forward"].median) / (matmul_flops / stats["matmul"].median),
        "efficiency_paired_median": statistics.median(paired),
        "efficiency_best": (flops / stats["forward"].min) / (matmul_flops / stats["matmul"].min),
    }
    logger.info("[%s] forward %.1f GFLOP/s, matmul %.1f GFLOP/s: %.0f%% (paired %.0f%%)", precision,
                row["forward_gflops"], row["matmul_gflops"], 100 * row["efficiency_of_medians"],
                100 * row["efficiency_paired_median"])
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flops",
        description=__doc__.split("\n\n")[0] + " The target is >= 50%% of the matmul rate for ViT-B in fp32.",
    )
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="vit-b",
        help="encoder size (default vit-b; --quick uses toy). " + "; ".join(
            f"{name}: {shape.describe()}" for name, shape in SHAPES.items()
        ),
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
        help="fp32, and bf16 autocast (against a bf16 matmul); bf16 is skipped where the device lacks native bf16",
    )
    parser.add_argument("--matmul-size", type=int, default=4096,
                        help="N of the N x N reference matmul (default 4096; 256 with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="also record one forward with torch.profiler and return its top aten ops")
    add_common_args(parser, warmup=1, repeats=6)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Count, time and compare; return {"benchmark", "machine", "flops", "results": [row per precision], ...}."""
    args = build_parser().parse_args(argv)
    apply_common_args(args)
    shape = SHAPES["toy" if args.quick else args.shape]
    matmul_size = 256 if args.quick else args.matmul_size
    notes: list[str] = []
    precisions = list(args.precisions)
    if "bf16" in precisions and not bf16_supported(args.device):
        precisions.remove("bf16")
        notes.append(f"bf16 skipped: {args.device} has no native bf16 matmul (AVX512-BF16/AMX on a CPU).")

    torch.manual_seed(0)
    model = DiscovrModel(discovr_config(shape)).eval().to(args.device)
    pixel_values = torch.randn(shape.batch_size, shape.num_frames, 3, shape.image_size, shape.image_size,
                               device=args.device)
    flops, per_op = counted_forward_flops(model, pixel_values)
    analytic = analytic_forward_flops(shape)
    logger.info("[%s] forward: %.1f GFLOP counted, %.1f GFLOP analytic", shape.name, flops / 1e9, analytic / 1e9)

    results = [
        bench_precision(model, pixel_values, flops, p, matmul_size, args.warmup, args.repeats) for p in precisions
    ]
    profiles = {p: profile_top_ops(model, pixel_values, p) for p in precisions} if args.profile else {}
    return {
        "benchmark": "flops",
        "machine": machine_info(),
        "device": str(args.device),
        "shape": shape.name,
        "config": shape.describe(),
        "flops": flops,
        "flops_analytic": analytic,
        "flops_per_op": per_op,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "notes": notes,
        "results": results,
        "profiles": profiles,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
