"""`make demo`: the whole DISCOVR workflow on built-in synthetic echo data, on a CPU, in a few minutes.

1. make a synthetic EchoNet-Dynamic folder (reused when it is already there);
2. pretrain DISCOVR (tiny preset) with `discovr-pretrain`;
3. fine-tune the encoder for LVEF with `discovr-finetune` (Trainer);
4. predict EF with `pipeline("video-classification")`;
5. draw the plots: training curves, LVEF scatter, Bland-Altman, ROC and cluster maps.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

logger = logging.getLogger("discovr.demo")


def ensure_data(data_dir: Path, num_videos: int, seed: int) -> Path:
    """Generate the synthetic dataset unless a complete one with the same size is already there."""
    from .data import make_synthetic_echonet

    file_list = data_dir / "FileList.csv"
    if file_list.is_file():
        table = pd.read_csv(file_list)
        if len(table) == num_videos and all((data_dir / "Videos" / f"{name}.avi").is_file() for name in table.FileName):
            logger.info("Reusing %d synthetic videos in %s", num_videos, data_dir)
            return data_dir
    make_synthetic_echonet(data_dir, num_videos=num_videos, seed=seed)
    return data_dir


def run_pretraining(data_dir: Path, output_dir: Path, steps: int, seed: int) -> dict:
    from .training.pretrain import build_parser, pretrain

    batch_size = 8
    num_train = int((pd.read_csv(data_dir / "FileList.csv")["Split"].str.upper() == "TRAIN").sum())
    # The schedules span exactly the requested steps, so the warmup and the decay both show in the curves.
    epochs = math.ceil(steps / max(1, num_train // batch_size))
    args = build_parser().parse_args([
        "--data_root", str(data_dir), "--preset", "tiny", "--output_dir", str(output_dir),
        "--epochs", str(epochs), "--warmup_epochs", str(epochs / 4),
        "--warmup_teacher_temperature_epochs", str(epochs / 2), "--max_steps", str(steps),
        "--per_device_batch_size", str(batch_size), "--base_lr", "1.5e-2",
        "--num_workers", "2", "--logging_steps", "1", "--save_steps", str(steps), "--seed", str(seed),
    ])
    return pretrain(args)


def run_finetuning(data_dir: Path, encoder_dir: Path, output_dir: Path, epochs: float, seed: int):
    from .training.finetune import FinetuneConfig, finetune

    return finetune(FinetuneConfig(
        output_dir=str(output_dir), data_root=str(data_dir), model_name_or_path=str(encoder_dir), task="lvef",
        mode="full", num_train_epochs=epochs, per_device_train_batch_size=8, learning_rate=5e-4,
        eval_clips="uniform:4", num_workers=2, logging_steps=5, seed=seed,
    ))


def run_pipeline(model_dir: Path, videos: list[str]) -> list[dict]:
    """EF of each video with the Transformers pipeline, loaded from the fine-tuned directory as any user would."""
    from transformers import pipeline

    classifier = pipeline("video-classification", model=str(model_dir))
    return [result[0] for result in classifier(videos, num_clips=4)]


def draw_plots(pretrain_dir: Path, finetune_dir: Path, video: str, plots_dir: Path) -> list[Path]:
    from . import plotting
    from .cluster_maps import write_cluster_maps
    from .modeling_discovr import DiscovrForPreTraining
    from .video_processing_discovr import DiscovrVideoProcessor

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = plotting.plot_training_curves(pretrain_dir / "logs" / "pretrain_log.jsonl",
                                            plots_dir / "pretraining_curves.png")
    written += sorted(finetune_dir.glob("*.png"))
    model = DiscovrForPreTraining.from_pretrained(pretrain_dir / "pretrained").eval()
    processor = DiscovrVideoProcessor.from_pretrained(pretrain_dir / "pretrained")
    written += write_cluster_maps(model, processor, video, plots_dir)
    return written


def timed(name: str, timings: dict[str, float], function: Callable, *args):
    logger.info("=== %s ===", name)
    start = time.perf_counter()
    result = function(*args)
    timings[name] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discovr.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output", help="Where everything is written.")
    parser.add_argument("--num_videos", type=int, default=120, help="Synthetic videos to generate.")
    parser.add_argument("--pretrain_steps", type=int, default=50, help="Pretraining optimiser steps.")
    parser.add_argument("--finetune_epochs", type=float, default=60, help="LVEF fine-tuning epochs.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data and of both runs.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    out = Path(args.output_dir).resolve()
    data_dir, pretrain_dir, finetune_dir, plots_dir = out / "data", out / "pretrain", out / "finetune", out / "plots"
    timings: dict[str, float] = {}
    start = time.perf_counter()
    timed("1. synthetic data", timings, ensure_data, data_dir, args.num_videos, args.seed)
    timed("2. pretraining", timings, run_pretraining, data_dir, pretrain_dir, args.pretrain_steps, args.seed)
    result = timed("3. LVEF fine-tuning", timings, run_finetuning, data_dir, pretrain_dir / "encoder", finetune_dir,
                   args.finetune_epochs, args.seed)
    test_table = result.predictions
    videos = [str(data_dir / "Videos" / f"{name}.avi") for name in test_table.FileName[:4]]
    predictions = timed("4. pipeline", timings, run_pipeline, finetune_dir, videos)
    plots = timed("5. plots", timings, draw_plots, pretrain_dir, finetune_dir, videos[0], plots_dir)
    total = time.perf_counter() - start

    test = result.metrics["test"]
    mae, baseline = test["clip_average"]["mae"], test["train_mean_baseline"]["mae"]
    summary = {
        "test videos": test["videos"], "test MAE (EF %)": round(mae, 2), "mean-baseline MAE": round(baseline, 2),
        "MAE / baseline": round(mae / baseline, 2), "time (s)": round(total, 1),
    }
    (out / "summary.json").write_text(json.dumps({**summary, "timings_s": timings}, indent=2))

    lines = ["", "DISCOVR demo: done", f"outputs in {out}"]
    lines += [f"  {label:<28} {path}" for label, path in (
        ("synthetic data", data_dir), ("pretrained model", pretrain_dir / "pretrained"),
        ("pretrained encoder", pretrain_dir / "encoder"), ("fine-tuned LVEF model", finetune_dir),
        ("test predictions", finetune_dir / "predictions.csv"),
    )]
    lines += [f"  plot: {path}" for path in plots]
    lines += ["", "pipeline('video-classification') on test videos:"]
    truth = dict(zip(test_table.FileName, test_table.EF))
    for video, prediction in zip(videos, predictions):
        name = Path(video).stem
        lines.append(f"  {name}: predicted {prediction['score']:.1f}%  (true {truth[name]:.1f}%)")
    lines += ["", f"{'stage':<22} {'seconds':>8}"] + [f"{name:<22} {seconds:>8.1f}" for name, seconds in timings.items()]
    lines += ["", f"{'summary':<22} {'value':>8}"] + [f"{key:<22} {value:>8}" for key, value in summary.items()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
