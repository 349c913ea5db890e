"""Smoke test of the benchmarks: each runs at toy size for one iteration (`--quick`).

Only the code paths and the result layout are checked (expected keys, positive finite timings); no timing is
asserted, since speed on a shared machine is not a test outcome. The benchmarks themselves run via `make bench`.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.utils.flop_counter

from benchmarks import run_all
from benchmarks.common import TimingStats, ratio_summary, time_interleaved

TIMING_KEYS = {"median", "min", "max", "runs"}
RATIO_KEYS = {"ratio_of_medians", "paired_median", "paired_min", "paired_max"}


def run_quick(module_name: str, *extra: str) -> dict:
    return importlib.import_module(f"benchmarks.{module_name}").main(["--quick", *extra])


def assert_timing(stats: dict) -> None:
    assert TIMING_KEYS <= stats.keys()
    for key in ("median", "min", "max"):
        assert math.isfinite(stats[key]) and stats[key] > 0, stats
    assert stats["min"] <= stats["median"] <= stats["max"]


def assert_ratio(summary: dict) -> None:
    assert RATIO_KEYS <= summary.keys()
    assert all(math.isfinite(v) and v > 0 for v in summary.values()), summary


@pytest.fixture(scope="module")
def quick_results() -> dict[str, dict]:
    """Results of every benchmark of `make bench`, run once and shared by the layout and rendering tests."""
    extra = {"flops": ("--profile",), "pretrain_step": ("--profile",)}
    return {spec.name: run_quick(spec.name, *extra.get(spec.name, ())) for spec in run_all.specs(compile_model=False)}


def test_common_helpers() -> None:
    stats, times = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, warmup=1, repeats=3)
    assert set(stats) == {"a", "b"} and all(len(t) == 3 for t in times.values())
    assert_timing(stats["a"].to_dict())
    assert_ratio(ratio_summary(times["a"], times["b"]))
    with pytest.raises(ValueError):
        TimingStats.from_times([])


def test_encoder_vs_videomae(quick_results) -> None:
    result = quick_results["encoder_vs_videomae"]
    assert {"machine", "results", "shapes", "videomae_config"} <= result.keys()
    assert {row["precision"] for row in result["results"]} >= {"fp32"}
    for row in result["results"]:
        for name in ("discovr", "videomae"):
            assert_timing(row["timings"][name])
        assert_ratio(row["ratio_discovr_over_videomae"])


def test_flops(quick_results) -> None:
    result = quick_results["flops"]
    # The counter (with its CPU-SDPA formula) must agree with the analytic ViT count exactly.
    assert result["flops"] == result["flops_analytic"] > 0
    assert any("scaled_dot_product" in op for op in result["flops_per_op"])
    for row in result["results"]:
        assert_timing(row["timings"]["forward"])
        assert_timing(row["timings"]["matmul"])
        for key in ("forward_gflops", "matmul_gflops", "efficiency_of_medians", "efficiency_paired_median"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert result["profiles"] and all(ops for ops in result["profiles"].values())


def test_pretrain_step(quick_results) -> None:
    result = quick_results["pretrain_step"]
    assert {"machine", "results"} <= result.keys()
    for row in result["results"]:
        for stats in row["timings"].values():
            assert_timing(stats)
        assert_ratio(row["port_over_published"])
        assert set(row["timings"]) == {"port", "published_control_flow"}  # the reference matmul is not a step
        assert row["gflop_per_step"] > 0 and row["matmul_gflops"] > 0
        assert row["flop_limit_fraction"] == pytest.approx(row["port_gflops"] / row["matmul_gflops"])
        profile = row["profile"]
        assert sum(profile["group_shares"].values()) == pytest.approx(1.0)
        assert profile["group_shares"]["matrix multiplies (mm, addmm, bmm)"] > 0
        assert 0 < profile["gemm_flop_share"] <= 1 and profile["gemm_gflops"] > 0
        assert profile["top_ops"] and all(op["self_ms"] > 0 for op in profile["top_ops"])


@pytest.mark.slow
def test_pretrain_step_compiled_variant() -> None:
    """The GPU plan times the compiled step too; inductor compiles the toy model in about a minute here."""
    row = run_quick("pretrain_step", "--compile")["results"][0]
    assert set(row["timings"]) == {"port", "published_control_flow", "port_compiled"}
    assert_ratio(row["compiled_over_eager"])
    assert row["compile_seconds"] > 0


def test_flop_count_of_a_step_includes_attention_backward() -> None:
    """The CPU SDPA backward has no built-in FLOP formula; without ours a step would undercount its attention."""
    from benchmarks import flops, pretrain_step

    shape = pretrain_step.SHAPES["toy"]
    torch.manual_seed(0)
    model = pretrain_step.DiscovrForPreTraining(shape.config()).train()
    config = model.config
    pixel_values = torch.randn(shape.batch_size, config.num_frames, 3, config.image_size, config.image_size)
    masks = model.mask_generator(shape.batch_size, torch.Generator().manual_seed(0))
    with_backward = pretrain_step.counted_step_flops(model, pixel_values, masks)
    forward_only = dict(flops.CUSTOM_FLOP_FORMULAS)
    forward_only.pop(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
    counter = torch.utils.flop_counter.FlopCounterMode(display=False, custom_mapping=forward_only)
    with counter:
        model(pixel_values, masks=masks, return_scd_swapped_loss=False).loss.backward()
    model.zero_grad(set_to_none=True)
    assert with_backward > counter.get_total_flops() > 0


def test_data_loading(quick_results) -> None:
    result = quick_results["data_loading"]
    assert {"machine", "results", "speedup_vs_opencv"} <= result.keys()
    for stats in result["results"].values():
        assert_timing(stats)
    for summary in result["speedup_vs_opencv"].values():
        assert_ratio(summary)


def test_dicom_prepare(quick_results) -> None:
    result = quick_results["dicom_prepare"]
    assert {"machine", "results", "setup", "speedup_vs_echonet_style", "scaling_vs_workers0"} <= result.keys()
    assert set(result["results"]) == {"prepare_workers0", "prepare_workers1", "prepare_workers2", "echonet_style"}
    for stats in result["results"].values():
        assert_timing(stats)
        assert math.isfinite(stats["frames_per_s_median"]) and stats["frames_per_s_median"] > 0
    for summary in [*result["speedup_vs_echonet_style"].values(), *result["scaling_vs_workers0"].values()]:
        assert_ratio(summary)


def test_run_all_renders_every_result(quick_results, tmp_path) -> None:
    """The document renders every result (no fallback to raw JSON) without re-running the benchmarks, and a
    partial run rewrites only its own sections, keeping the hand-written text and the other sections."""
    outcomes = [
        run_all.Outcome(spec, result=quick_results[spec.name], seconds=1.0, load_before=[0.0, 0.0, 0.0])
        for spec in run_all.specs(compile_model=False)
    ]
    machine = run_all.machine_info()
    output = tmp_path / "benchmarks.md"
    run_all.write_document(output, run_all.render_sections(machine, outcomes, 1.0, "python -m benchmarks.run_all"))
    text = output.read_text()
    assert text.startswith("# Benchmarks") and "```json" not in text
    assert "torch threads" in text
    assert "## GPU" not in text  # a CPU run leaves the GPU note to GPU runs
    for outcome in outcomes:
        assert f"## {outcome.spec.title}" in text and f"<!-- section:{outcome.spec.name} -->" in text

    output.write_text(text + "\n## Findings\n\nWritten by hand.\n")
    failed = run_all.Outcome(outcomes[0].spec, error="RuntimeError: boom", load_before=[0.0, 0.0, 0.0])
    run_all.write_document(output, run_all.render_sections(machine, [failed], 1.0, "python -m benchmarks.run_all"))
    rewritten = output.read_text()
    assert "Written by hand." in rewritten and "**Failed**" in rewritten
    for outcome in outcomes[1:]:
        assert f"## {outcome.spec.title}" in rewritten


def test_run_all_quick_requires_output() -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--quick"])


def test_gpu_plan_puts_every_model_benchmark_on_the_gpu_in_fp32_and_bf16() -> None:
    plan = {spec.name: spec for spec in run_all.gpu_specs()}
    assert set(plan) == {"encoder_vs_videomae", "flops", "pretrain_step"}
    for spec in plan.values():
        assert spec.section == f"{spec.name}_cuda"
        for argv in spec.argvs + spec.quick_argvs:
            assert argv[argv.index("--device") + 1] == "cuda"
            assert argv[argv.index("--precisions") + 1 : argv.index("--precisions") + 3] == ["fp32", "bf16"]
    assert "--compile" in plan["encoder_vs_videomae"].argvs[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_plan_without_a_gpu_needs_the_dry_run(tmp_path) -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--device", "cuda", "--output", str(tmp_path / "b.md")])
    with pytest.raises(SystemExit):
        run_all.main(["--dry-run", "--output", str(tmp_path / "b.md")])  # a dry run is of the GPU plan


def test_gpu_plan_dry_run_runs_on_the_cpu_and_keeps_the_cpu_sections(tmp_path) -> None:
    output, raw = tmp_path / "benchmarks.md", tmp_path / "results.json"
    output.write_text(run_all.HEADER + "\n<!-- section:pretrain_step -->\nCPU figures.\n<!-- /section:pretrain_step -->\n")
    assert run_all.main(["--device", "cuda", "--dry-run", "--output", str(output), "--json", str(raw)]) == 0
    text = output.read_text()
    assert "CPU figures." in text and "```json" not in text
    assert "## GPU" in text and "not GPU figures" in text and "## Where and how (the latest GPU run, a dry run" in text
    results = json.loads(raw.read_text())
    for name in ("encoder_vs_videomae", "flops", "pretrain_step"):
        assert f"<!-- section:{name}_cuda -->" in text and "DRY RUN" in text
        assert results[name]["device"] == "cpu"
    # bf16 ran in the step benchmark (the encoder FLOP benchmark skips it where the CPU lacks native bf16).
    assert {row["precision"] for row in results["pretrain_step"]["results"]} == {"fp32", "bf16"}
    assert {row["precision"] for row in results["encoder_vs_videomae"]["results"]} == {"fp32", "bf16"}


@pytest.fixture(scope="module")
def representation_quick(tmp_path_factory) -> tuple[dict, Path]:
    """One `--quick` representation benchmark, whose encoders the segmentation probe reads too."""
    output_dir = tmp_path_factory.mktemp("representation")
    return run_quick("representation_quality", "--output_dir", str(output_dir), "--docs", "-"), output_dir


def test_representation_quality_quick(representation_quick) -> None:
    """Every method (random init, DISCOVR and its ablations, VideoMAE) pretrains, is probed and fine-tuned."""
    from benchmarks import representation_quality

    result, tmp_path = representation_quick
    assert set(result["summary"]) == set(representation_quality.METHODS)
    for method, entry in result["summary"].items():
        for key in ("ridge_mae", "ridge_r2", "knn_macro_f1", "anomaly_auroc"):
            mean, std = entry[key]
            assert math.isfinite(mean) and std == 0.0  # one seed in --quick
        if method in representation_quality.FINETUNED:
            assert math.isfinite(entry["finetune_1_mae"][0])
    assert all(result["flops_per_step"][m] > 0 for m in representation_quality.METHODS if m != "random")
    assert (tmp_path / "results.json").is_file()

    # A second invocation with the same settings reuses every finished run instead of redoing it.
    record_file = tmp_path / "runs" / "discovr" / "seed0" / "record.json"
    stamp = record_file.stat().st_mtime_ns
    again = run_quick("representation_quality", "--output_dir", str(tmp_path), "--docs", "-", "--methods", "discovr")
    assert record_file.stat().st_mtime_ns == stamp
    assert again["records"]["discovr"] == json.loads(json.dumps(result["records"]["discovr"], default=str))

    # --report_only runs nothing: it reports the finished runs, and refuses a folder that has none.
    report = run_quick("representation_quality", "--output_dir", str(tmp_path), "--docs", "-", "--report_only")
    assert set(report["summary"]) == set(representation_quality.METHODS) and report["missing"] == []
    assert record_file.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="no finished runs"):
        run_quick("representation_quality", "--output_dir", str(tmp_path / "empty"), "--docs", "-", "--report_only")


def test_representation_quality_verdict_and_report(tmp_path) -> None:
    """The verdict checks the issue's targets on the numbers, both ways; the report renders a row per method."""
    from types import SimpleNamespace

    from benchmarks.representation_quality import render, verdict

    def entry(ridge, ridge_std, f1, auroc=0.7):
        return {"ridge_mae": (ridge, ridge_std), "ridge_r2": (0.3, 0.01), "knn_macro_f1": (f1, 0.01),
                "anomaly_auroc": (auroc, 0.01), "baseline_mae": (14.0, 0.0), "pretrain_seconds": (60.0, 1.0),
                "finetune_1_mae": (8.0, 0.5), "seeds": 3}

    summary = {"random": entry(14.0, 0.2, 0.50), "discovr": entry(11.0, 0.3, 0.60, 0.75), "videomae": entry(13.0, 0.2, 0.55)}
    lines = verdict(summary)
    assert "met" in lines[0] and "missed" not in lines[0]
    assert "higher" in lines[1] and "not higher" not in lines[1]
    assert "ridge MAE, kNN F1, anomaly AUROC" in lines[2]
    summary["discovr"] = entry(12.5, 0.9, 0.45)  # 11% better, and a gap smaller than two seed stds
    lines = verdict(summary)
    assert "missed" in lines[0] and "not higher" in lines[1]

    args = SimpleNamespace(num_videos=600, data_seed=3, preset="tiny", steps=1040, batch_size=16, seeds=[0, 1, 2],
                           ablation_seeds=[0], clips="uniform:4", label_fractions=[1.0])
    machine = {"date": "today", "cpu_model": "cpu", "logical_cpus": 2, "torch": "2"}
    text = "\n".join(render(args, summary, {"discovr": 2e9, "videomae": 1e9}, machine, None))
    assert text.count("\n| ") >= 4 and "| DISCOVR | 3 | 12.50 ± 0.90" in text
    summary["discovr"]["seeds"] = 1  # one seed: no spread is shown rather than a made-up "± 0.00"
    text = "\n".join(render(args, summary, {}, machine, None))
    assert "| DISCOVR | 1 | 12.50 | 0.30 | 0.450 |" in text and "Not run" not in text
    text = "\n".join(render(args, summary, {}, machine, None, ["VideoMAE seed 2"]))
    assert "Not run for this report (`--report_only` over the finished runs): VideoMAE seed 2." in text


def test_segmentation_probe_quick(representation_quick, tmp_path) -> None:
    """The probe reads the representation benchmark's encoders and data, trains both heads and scores every method."""
    from benchmarks import segmentation_probe

    with pytest.raises(SystemExit, match="No pretrained encoders"):
        segmentation_probe.main(["--quick", "--representation_dir", str(tmp_path / "none"), "--docs", "-"])
    result = segmentation_probe.main([
        "--quick", "--representation_dir", str(representation_quick[1]), "--output_dir", str(tmp_path / "probe"),
        "--docs", "-",
    ])
    keys = {f"{method}/{head}" for method in segmentation_probe.METHODS for head in segmentation_probe.HEADS}
    assert set(result["summary"]) == keys
    for entry in result["summary"].values():
        for structure in segmentation_probe.STRUCTURES:
            dice, _ = entry[f"dice_all_frames_{structure}"]
            assert 0.0 <= dice <= 1.0
    # The heads train: their loss falls on the cached tokens.
    for losses in result["training_losses"].values():
        assert losses[-1] < losses[0]
    assert (tmp_path / "probe" / "results.json").is_file()
    lines = segmentation_probe.render(segmentation_probe.build_parser().parse_args([]), result, result["machine"])
    assert sum(line.startswith("| ") for line in lines) == 1 + len(keys)  # the header and a row per head


def test_pretrain_memory_measures_a_step_in_its_own_process() -> None:
    from benchmarks import pretrain_memory

    peak = pretrain_memory.measure("tiny", batch=2, checkpointing=True)
    assert peak["peak_rss_bytes"] > 100 * 2**20 and peak["parameters"] > 0
    # 80 GiB budget, 20 GiB fixed, 3 GiB per clip: 20 clips fit, the 21st would not.
    assert pretrain_memory.largest_batch(20 * 2**30, 3 * 2**30, 80 * 2**30) == 20
    assert pretrain_memory.largest_batch(90 * 2**30, 3 * 2**30, 80 * 2**30) == 0
