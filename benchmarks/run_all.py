"""Run every DISCOVR benchmark and write the results table, `docs/benchmarks.md` (`make bench`).

Benchmarks: encoder inference against VideoMAE (`benchmarks.encoder_vs_videomae`), hardware efficiency
(`benchmarks.flops`), and, when their modules import, the pretraining step (`benchmarks.pretrain_step`), data
loading (`benchmarks.data_loading`) and DICOM conversion (`benchmarks.dicom_prepare`). Each is called in this process through its `main(argv) -> dict`.
A benchmark that fails is reported in the document (and the exit status is 1); the others still run.

`--quick` runs every benchmark at toy size for one iteration and must be given `--output`, so a smoke run
never overwrites the committed results.

`--device cuda` runs the GPU plan (`gpu_specs`): the model benchmarks on the GPU in fp32 and bf16 autocast with
SDPA (PyTorch picks flash or memory-efficient kernels there), `torch.compile` for the encoder, larger matmul
references and more timed rounds; data loading and DICOM conversion are CPU work and stay out of it. Its sections
(`<NAME>_cuda`) and a GPU note naming the device sit beside the CPU ones. `--device cuda --dry-run` runs that
same plan at toy size on the CPU, without `torch.compile`, to check it end to end on a machine with no GPU; it
needs `--output`, and its sections say that they hold no GPU figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.common import machine_info, replace_section, setup_logging

logger = logging.getLogger("benchmarks.run_all")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"


@dataclass
class Spec:
    """One benchmark module and the argument lists to call its `main` with (their results are merged)."""

    name: str
    module: str
    argvs: list[list[str]]
    quick_argvs: list[list[str]]
    title: str
    # Suffix of the document section: "" for the CPU plan, "_cuda" for the GPU plan.
    section_suffix: str = ""

    @property
    def section(self) -> str:
        return self.name + self.section_suffix


def gpu_specs(device: str = "cuda") -> list[Spec]:
    """The GPU plan: every model benchmark on `device` in fp32 and bf16, more rounds (a GPU run is cheap)."""
    on_device = ["--device", device]
    return [
        Spec("encoder_vs_videomae", "benchmarks.encoder_vs_videomae",
             [["--shapes", "small", "vit-b", "--precisions", "fp32", "bf16", "--warmup", "5", "--repeats", "30",
               "--compile", *on_device]],
             [["--quick", "--precisions", "fp32", "bf16", *on_device]],
             "Encoder inference on a GPU: DiscovrModel vs VideoMAEModel", "_cuda"),
        Spec("flops", "benchmarks.flops",
             [["--shape", "vit-b", "--precisions", "fp32", "bf16", "--matmul-size", "8192", "--warmup", "3",
               "--repeats", "20", "--profile", *on_device]],
             [["--quick", "--precisions", "fp32", "bf16", "--profile", *on_device]],
             "Hardware efficiency on a GPU: ViT-B encoder forward vs a large matmul", "_cuda"),
        Spec("pretrain_step", "benchmarks.pretrain_step",
             [["--shapes", "small", "vit-b", "--precisions", "fp32", "bf16", "--warmup", "3", "--repeats", "20",
               "--profile", "--compile", *on_device]],
             [["--quick", "--precisions", "fp32", "bf16", "--profile", *on_device]],
             "Pretraining step on a GPU", "_cuda"),
    ]


def dry_run_specs(plan: list[Spec]) -> list[Spec]:
    """`plan` at toy size on the CPU: each quick argument list with `--device cpu` and without `--compile`."""
    def on_cpu(argv: list[str]) -> list[str]:
        argv = [arg for arg in argv if arg != "--compile"]
        if "--device" in argv:
            argv[argv.index("--device") + 1] = "cpu"
        return argv

    return [Spec(spec.name, spec.module, [on_cpu(argv) for argv in spec.quick_argvs],
                 [on_cpu(argv) for argv in spec.quick_argvs], f"{spec.title} (DRY RUN on the CPU: no GPU figures)",
                 spec.section_suffix) for spec in plan]


def specs(compile_model: bool) -> list[Spec]:
    # Small encoder runs take ~0.05 s, so many interleaved rounds are cheap; ViT-B fp32 takes seconds each.
    compile_flag = ["--compile"] if compile_model else []
    return [
        Spec(
            "encoder_vs_videomae", "benchmarks.encoder_vs_videomae",
            # torch.compile is timed at the small size only: at ViT-B its compile time and 3 more forwards per
            # round would not fit the 15-minute budget of `make bench` on 2 cores.
            [["--shapes", "small", "--warmup", "3", "--repeats", "30", *compile_flag],
             ["--shapes", "vit-b", "--warmup", "1", "--repeats", "6"]],
            [["--quick"]],
            "Encoder inference: DiscovrModel vs VideoMAEModel",
        ),
        Spec(
            "flops", "benchmarks.flops",
            [["--shape", "vit-b", "--warmup", "1", "--repeats", "6", "--profile"]],
            [["--quick", "--profile"]],
            "Hardware efficiency: ViT-B encoder forward vs a large matmul",
        ),
        Spec("pretrain_step", "benchmarks.pretrain_step", [["--precisions", "fp32", "bf16", "--profile"]],
             [["--quick", "--profile"]], "Pretraining step"),
        Spec("data_loading", "benchmarks.data_loading", [[]], [["--quick"]], "Data loading"),
        Spec("dicom_prepare", "benchmarks.dicom_prepare", [[]], [["--quick"]], "DICOM to AVI: discovr-prepare"),
    ]


@dataclass
class Outcome:
    spec: Spec
    result: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    load_before: list[float] = field(default_factory=list)


def merge_results(parts: list[dict]) -> dict:
    """Several `main` calls of one benchmark: keep the first dict, concatenate list-valued `results`."""
    merged = dict(parts[0])
    if all(isinstance(part.get("results"), list) for part in parts):
        merged["results"] = [row for part in parts for row in part["results"]]
    return merged


def run_spec(spec: Spec, quick: bool) -> Outcome:
    import os

    outcome = Outcome(spec, load_before=[round(x, 2) for x in os.getloadavg()])
    start = time.perf_counter()
    try:
        module = importlib.import_module(spec.module)
        parts = [module.main(argv) for argv in (spec.quick_argvs if quick else spec.argvs)]
        outcome.result = merge_results(parts)
    except Exception as error:  # noqa: BLE001 - one broken benchmark must not lose the others' results
        logger.error("%s failed:\n%s", spec.name, traceback.format_exc())
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - start
    return outcome


# ---------------------------------------------------------------------------------------------- rendering


def fmt_s(seconds: float) -> str:
    """Seconds with 3 significant digits, in ms below one second."""
    if not math.isfinite(seconds):
        return str(seconds)
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def fmt_stats(stats: dict) -> str:
    return f"{fmt_s(stats['median'])} ({fmt_s(stats['min'])}–{fmt_s(stats['max'])})"


def fmt_ratio(summary: dict) -> str:
    return (f"**{summary['ratio_of_medians']:.3f}** (paired {summary['paired_median']:.3f}; "
            f"{summary['paired_min']:.2f}–{summary['paired_max']:.2f})")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def render_machine(machine: dict, outcomes: list[Outcome], total_seconds: float, command: str) -> list[str]:
    rows = [
        ("Date", machine["date"]),
        ("Command", f"`{command}` ({total_seconds / 60:.1f} min)"),
        ("Machine", machine["platform"]),
        ("CPU model", f"{machine['cpu_model']} ({machine['logical_cpus']} logical CPUs, "
                      f"torch CPU capability {machine['cpu_capability']}, native bf16: "
                      f"{'yes' if machine['cpu_bf16_native'] else 'no'})"),
        ("GPU", machine.get("gpu", "none")),
        ("torch / transformers / Python", f"{machine['torch']} / {machine['transformers']} / {machine['python']}"),
        ("torch threads", machine["torch_threads"]),
        ("Load average at start (1/5/15 min)", " / ".join(map(str, machine["load_average_1_5_15min"]))),
    ]
    rows += [(f"Load average before `{o.spec.name}`", " / ".join(map(str, o.load_before))) for o in outcomes]
    return table(("", ""), rows)


def render_encoder(result: dict) -> list[str]:
    lines = [
        f"VideoMAE is built as `{result['videomae_config']}`: with `use_mean_pooling=False` `VideoMAEModel` "
        "applies a final LayerNorm to every token, as `DiscovrModel` does, and `qv_bias=True` gives it the same "
        "learnable query/value biases and bias-free key. Both run in eval mode under `torch.inference_mode` with "
        "SDPA, on the same input; DISCOVR encodes one more token (its CLS). bf16 is CPU autocast with fp32 "
        "weights. Times: median (min–max) over interleaved runs. Ratio: DISCOVR / VideoMAE as the ratio of "
        "medians, then the median of the per-round ratios (each round ran both back to back) and their range.",
        "",
    ]
    for shape_name, shape in result["shapes"].items():
        row = next(r for r in result["results"] if r["shape"] == shape_name)
        lines.append(f"- **{shape_name}**: {row['config']}.")
    lines.append("")
    rows = []
    for row in result["results"]:
        ratio = row["ratio_discovr_over_videomae"]
        verdict = "met" if ratio["ratio_of_medians"] <= 1.0 else f"missed by {100 * (ratio['ratio_of_medians'] - 1):.1f}%"
        rows.append((
            row["shape"], row["precision"], fmt_stats(row["timings"]["discovr"]),
            fmt_stats(row["timings"]["videomae"]), fmt_ratio(ratio), verdict,
            f"{row['clips_per_s']['discovr']:.3g}",
        ))
    lines += table(("Size", "Precision", "DISCOVR", "VideoMAE", "DISCOVR / VideoMAE", "Target ≤ 1.0",
                    "DISCOVR clips/s"), rows)
    variants = [r for r in result["results"] if "ratio_compiled_over_eager" in r]
    if variants:
        lines += ["", "`torch.compile(DiscovrModel)` timed in the same rounds (ratio < 1: compiled is faster):", ""]
        rows = [(row["shape"], row["precision"], "`torch.compile` / eager", fmt_stats(row["timings"]["discovr_compiled"]),
                 fmt_ratio(row["ratio_compiled_over_eager"])) for row in variants]
        lines += table(("Size", "Precision", "Comparison", "Variant time", "Ratio"), rows)
    compiled = [r["ratio_compiled_over_eager"]["paired_median"] for r in result["results"]
                if "ratio_compiled_over_eager" in r]
    if compiled:
        # "Helps" needs a clear, consistent gain from a clean run: on this shared machine one contended run
        # can move a ratio by tens of percent, which shows as a wide per-round range.
        spans = [r["ratio_compiled_over_eager"]["paired_max"] / r["ratio_compiled_over_eager"]["paired_min"]
                 for r in result["results"] if "ratio_compiled_over_eager" in r]
        listed = ", ".join(f"{ratio:.2f}" for ratio in compiled)
        if max(spans) > 2.0:
            verdict = (f"this run is too noisy to decide (paired compiled/eager {listed}, with per-round ratios "
                       f"spanning up to {max(spans):.0f}x); see the findings below for the verdict across runs.")
        elif all(ratio < 0.95 for ratio in compiled):
            verdict = f"it helps at every precision measured (paired compiled/eager {listed})."
        else:
            verdict = f"it does not help consistently (paired compiled/eager {listed})."
        lines += ["", "**torch.compile in this run:** " + verdict]
    lines += [f"- {note}" for note in result.get("notes", [])]
    return lines


def render_flops(result: dict) -> list[str]:
    per_op = ", ".join(f"`{op}` {count / 1e9:.4g}" for op, count in result["flops_per_op"].items())
    lines = [
        f"Encoder: {result['config']}. One forward is **{result['flops'] / 1e9:.4g} GFLOP** counted by "
        f"`FlopCounterMode` (analytic count: {result['flops_analytic'] / 1e9:.4g} GFLOP; per op: {per_op}). "
        "The reference is an N×N `torch.matmul` in the same dtype, timed interleaved with the forward. "
        "Efficiency = forward GFLOP/s ÷ matmul GFLOP/s, from the medians, then the median of per-round "
        "ratios, then from the best (min) times.",
        "",
    ]
    rows = []
    for row in result["results"]:
        eff = row["efficiency_of_medians"]
        verdict = "met" if eff >= 0.5 else f"missed ({100 * eff:.0f}% < 50%)"
        if row["precision"] != "fp32":
            verdict += " (target is for fp32)"
        rows.append((
            row["precision"], fmt_stats(row["timings"]["forward"]),
            f"{row['forward_gflops']:.3g} (best {row['forward_gflops_best']:.3g})",
            f"{row['matmul_size']}²: {row['matmul_gflops']:.3g} (best {row['matmul_gflops_best']:.3g})",
            f"**{100 * eff:.0f}%** (paired {100 * row['efficiency_paired_median']:.0f}%, "
            f"best {100 * row['efficiency_best']:.0f}%)", verdict,
        ))
    lines += table(("Precision", "Forward", "Forward GFLOP/s", "Matmul GFLOP/s", "Efficiency",
                    "Target ≥ 50% (fp32)"), rows)
    for precision, ops in result.get("profiles", {}).items():
        lines += ["", f"Top aten ops by self CPU time, one `{result['shape']}` forward, {precision} (torch.profiler):",
                  ""]
        lines += table(("Op", "Self time", "Share", "Calls"), [
            (f"`{op['op']}`", fmt_s(op["self_ms"] / 1e3), f"{100 * op['share']:.1f}%", op["calls"]) for op in ops
        ])
    lines += [f"- {note}" for note in result.get("notes", [])]
    return lines


def render_pretrain_step(result: dict) -> list[str]:
    lines = [f"Device: {result.get('device', 'cpu')}. Times: median (min–max) per optimiser step; ratio port / "
             "published control flow (< 1: the port is faster). FLOPs: one port step's forward and backward, counted "
             "by `FlopCounterMode`; FLOP limit: the port's GFLOP/s over the GFLOP/s of an N x N matmul in the step's "
             "compute dtype (fp32, or bf16 under autocast), timed interleaved.", ""]
    rows, compiled = [], []
    for row in result["results"]:
        memory = ", ".join(f"{k} {v:.0f} MiB" for k, v in row.get("peak_memory_mib", {}).items())
        rows.append((
            row["shape"], row["description"], row.get("precision", "fp32"),
            "; ".join(f"{name} {fmt_stats(s)}" for name, s in row["timings"].items()),
            "; ".join(f"{name} {v:.3g}" for name, v in row["clips_per_s"].items()),
            fmt_ratio(row["port_over_published"]),
            f"{row['gflop_per_step']:.1f} GFLOP; {row['port_gflops']:.1f} GFLOP/s; "
            f"**{row['flop_limit_fraction']:.0%}** of a {row['matmul_size']}² matmul's {row['matmul_gflops']:.1f}",
            memory,
        ))
        if "compiled_over_eager" in row:
            compiled.append(f"- {row['shape']} {row.get('precision', 'fp32')}: `torch.compile` / eager "
                            f"{fmt_ratio(row['compiled_over_eager'])}, after {row['compile_seconds']:.0f} s of "
                            "compilation.")
    lines += table(("Size", "Configuration", "Precision", "Step time", "Clips/s", "Port / published",
                    "FLOPs and FLOP limit", "Peak memory"), rows)
    if compiled:
        lines += ["", "The port step with its model compiled (ratio < 1: compiled is faster):", "", *compiled]
    for row in result["results"]:
        profile = row.get("profile")
        if not profile:
            continue
        lines += ["", f"Profile of the port step, {row['shape']} {row.get('precision', 'fp32')} (torch.profiler, "
                  f"{profile['profiled_ms_per_step']:.0f} ms of op self time per step). The matrix multiplies carry "
                  f"{profile['gemm_flop_share']:.0%} of the counted FLOPs and run at {profile['gemm_gflops']:.0f} "
                  f"GFLOP/s on their own, **{profile['gemm_fraction_of_matmul']:.0%}** of the reference matmul:", ""]
        lines += table(("Kind of op", "Share of time"), [
            (group, f"{share:.1%}") for group, share in profile["group_shares"].items()
        ])
        lines += ["", "Costliest ops:", ""]
        lines += table(("Op", "Self time per step", "Share", "Calls per step"), [
            (f"`{op['op']}`", fmt_s(op["self_ms"] / 1e3), f"{op['share']:.1%}", f"{op['calls']:.0f}")
            for op in profile["top_ops"]
        ])
    return lines + [f"- {note}" for note in result.get("notes", [])]


def render_data_loading(result: dict) -> list[str]:
    setup = result["setup"]
    lines = [f"{setup['videos']} synthetic videos (mean {setup['frames_per_video_mean']:.0f} frames), "
             f"clip: {setup['clip']}, batch {setup['batch_size']}, {setup['timed_runs']} timed passes. "
             "Time per pass over every video: median (min–max).", ""]
    lines += table(("Workload", "Pass time", "Clips/s (median)"), [
        (f"`{name}`", fmt_stats(r), f"{r['clips_per_s_median']:.3g}") for name, r in result["results"].items()
    ])
    lines += ["", "Speed-up over EchoNet-style OpenCV loading (OpenCV time / ours):", ""]
    lines += table(("Comparison", "Speed-up"), [
        (name, fmt_ratio(summary)) for name, summary in result["speedup_vs_opencv"].items()
    ])
    return lines


def render_dicom_prepare(result: dict) -> list[str]:
    setup = result["setup"]
    lines = [f"{setup['files']} synthetic DICOMs of {setup['frames_per_file']} frames at {setup['frame_size']} "
             f"({setup['encoding']}) to {setup['output']}, {setup['timed_runs']} timed runs. `prepare_workersN`: "
             "`discovr.data.prepare.prepare` with N worker processes (0: in process), sector found from the pixels; "
             "`echonet_style`: pydicom `pixel_array`, then per frame an OpenCV crop to a given box, resize and MJPG "
             "write. Time per run over every file: median (min–max).", ""]
    lines += table(("Workload", "Run time", "Frames/s (median)"), [
        (f"`{name}`", fmt_stats(r), f"{r['frames_per_s_median']:.3g}") for name, r in result["results"].items()
    ])
    lines += ["", "Speed-up over the EchoNet-style loop (its time / ours; target ≥ 1 single-process), and scaling "
              "with worker processes (0 workers' time / N workers'):", ""]
    rows = [(f"{name} vs echonet_style", fmt_ratio(summary)) for name, summary in result["speedup_vs_echonet_style"].items()]
    rows += [(f"{name} vs workers0", fmt_ratio(summary)) for name, summary in result["scaling_vs_workers0"].items()]
    lines += table(("Comparison", "Ratio"), rows)
    return lines


def render_generic(result: dict) -> list[str]:
    """Fallback for a result layout this script does not know: the raw JSON, so nothing is lost."""
    slim = {k: v for k, v in result.items() if k != "machine"}
    return ["```json", json.dumps(slim, indent=2, default=str), "```"]


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "encoder_vs_videomae": render_encoder,
    "flops": render_flops,
    "pretrain_step": render_pretrain_step,
    "data_loading": render_data_loading,
    "dicom_prepare": render_dicom_prepare,
}


def render_section(outcome: Outcome, date: str) -> list[str]:
    argvs = outcome.spec.argvs
    command = f"python -m {outcome.spec.module}" + (f" {' '.join(argvs[0])}" if len(argvs) == 1 and argvs[0] else "")
    lines = [f"## {outcome.spec.title}", "", f"`{command}`, {date} — "]
    if outcome.error:
        return lines[:-1] + [f"**Failed** on {date}: `{outcome.error}` (see the `make bench` log).", ""]
    lines[-1] += f"{outcome.seconds:.0f} s in this run."
    lines.append("")
    try:
        lines += RENDERERS.get(outcome.spec.name, render_generic)(outcome.result)
    except (KeyError, TypeError, ValueError, StopIteration) as error:
        # The benchmark's result layout changed: keep its numbers rather than failing the whole document.
        logger.warning("could not render %s as a table (%s); writing its raw JSON", outcome.spec.name, error)
        lines += render_generic(outcome.result)
    return lines + [""]


def render_gpu(machine: dict, outcomes: list[Outcome], dry_run: bool) -> list[str]:
    """The note of a `--device cuda` run: which device, and which sections hold its figures."""
    sections = ", ".join(f"`{o.spec.section}`" for o in outcomes)
    if dry_run:
        return ["## GPU", "", f"**Dry run** ({machine['date']}): `python -m benchmarks.run_all --device cuda --dry-run` "
                f"ran the GPU plan at toy size on the CPU ({sections}) to check it end to end. These are **not GPU "
                "figures**; no GPU was measured.", ""]
    return ["## GPU", "", f"Measured on **{machine.get('gpu', 'an unnamed CUDA device')}** ({machine['date']}) by "
            f"`python -m benchmarks.run_all --device cuda`: sections {sections}.", ""]


HEADER = """\
# Benchmarks

The sections between `<!-- section:NAME -->` markers are written by the benchmarks: `make bench`
(`python -m benchmarks.run_all`, which rewrites only the sections of the benchmarks it ran) and `make bench-ssl`
(`representation_quality`). Everything else here is written by hand. Every ratio compares workloads timed
interleaved in the same process run. This is a shared 2-core virtual machine: other jobs' load (listed with each
run) slows runs unpredictably, so absolute times vary between runs and the paired ratios are the figures to read.
"""


def render_sections(machine: dict, outcomes: list[Outcome], total_seconds: float, command: str,
                    device: str = "cpu", dry_run: bool = False) -> list[tuple[str, list[str]]]:
    """`(section name, markdown lines)` for the run's machine and each benchmark that ran; a GPU run (or its dry
    run) also writes its own machine section and the GPU note, and leaves the CPU sections alone."""
    if device == "cpu":
        where = ("where_and_how", "## Where and how (the latest `make bench` run)")
    else:
        where = ("where_and_how_cuda", "## Where and how (the latest GPU run" + (", a dry run on the CPU)" if dry_run else ")"))
    sections = [(where[0], [where[1], "", *render_machine(machine, outcomes, total_seconds, command), ""])]
    sections += [(outcome.spec.section, render_section(outcome, machine["date"])) for outcome in outcomes]
    if device != "cpu":
        sections.append(("gpu", render_gpu(machine, outcomes, dry_run)))
    return sections


def write_document(output: Path, sections: list[tuple[str, list[str]]]) -> None:
    """Replace each section in `output` (a new file starts with the header); other sections and prose are kept."""
    if not output.is_file():
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(HEADER, encoding="utf-8")
    for name, lines in sections:
        replace_section(output, name, [line.rstrip() for line in lines])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="Run every DISCOVR benchmark in one process and write the markdown results table "
        f"(default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)}). Takes about 10 minutes on a 2-core CPU.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="toy sizes, one iteration each (smoke test); requires --output")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown file to write (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--json", type=Path, default=None, help="also write every benchmark's raw result dict here")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these benchmarks: " + ", ".join(s.name for s in specs(False)))
    parser.add_argument("--no-compile", dest="compile_model", action="store_false",
                        help="skip timing torch.compile(DiscovrModel) (small encoder size) against eager")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu (default): the CPU plan; cuda: the GPU plan, written to its own *_cuda sections")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --device cuda: run the GPU plan at toy size on the CPU (no GPU needed); "
                        "requires --output")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at DEBUG level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks, write the document; return the exit status (1 if any benchmark failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.quick and args.output is None:
        parser.error("--quick needs --output: a smoke run must not overwrite docs/benchmarks.md")
    if args.dry_run and (args.device != "cuda" or args.output is None):
        parser.error("--dry-run checks the GPU plan: give it with --device cuda and --output")
    if args.device == "cuda" and not args.dry_run and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --dry-run to check the GPU plan on a CPU)")
    output = args.output or DEFAULT_OUTPUT
    command = "python -m benchmarks.run_all" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    machine = machine_info()
    plan = specs(args.compile_model) if args.device == "cpu" else gpu_specs()
    if args.dry_run:
        plan = dry_run_specs(plan)
    selected = [s for s in plan if args.only is None or s.name in args.only]
    start = time.perf_counter()
    outcomes = []
    for spec in selected:
        logger.info("=== %s", spec.name)
        outcomes.append(run_spec(spec, args.quick))
    total = time.perf_counter() - start
    write_document(output, render_sections(machine, outcomes, total, command.strip(), args.device, args.dry_run))
    logger.info("wrote %s (%.1f min)", output, total / 60)
    if args.json:
        args.json.write_text(json.dumps({o.spec.name: o.result or o.error for o in outcomes},
                                        indent=2, default=str))
    failed = [o.spec.name for o in outcomes if o.error]
    if failed:
        logger.error("failed: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
