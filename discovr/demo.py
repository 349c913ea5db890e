"""`make demo`: the whole DISCOVR workflow on built-in synthetic echo data, on a CPU, in about ten minutes.

1. make a synthetic EchoNet-Dynamic folder (reused when it is already there);
2. pretrain DISCOVR (tiny preset and its recipe) with `discovr-pretrain`;
3. score what pretraining buys: a frozen ridge probe of LVEF (`discovr-eval`) and LVEF fine-tuning
   (`discovr-finetune`, Trainer), each from the DISCOVR encoder and from a randomly initialised one;
4. predict EF with `pipeline("video-classification")` from the model fine-tuned from DISCOVR;
5. draw the plots: training curves, LVEF scatter, Bland-Altman, ROC and cluster maps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cli import DiscovrArgumentParser, argument

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


def run_pretraining(data_dir: Path, output_dir: Path, epochs: int, seed: int) -> dict:
    """`discovr-pretrain --preset tiny --epochs N`: every other setting is the tiny recipe's."""
    from .training.pretrain import pretrain
    from .training.pretrain_config import PretrainConfig

    return pretrain(PretrainConfig(
        data_root=str(data_dir), preset="tiny", output_dir=str(output_dir), epochs=epochs, num_workers=2,
        logging_steps=25, save_steps=1_000_000, seed=seed,
    ))


def save_random_encoder(output_dir: Path, seed: int) -> Path:
    """A randomly initialised tiny encoder: what fine-tuning and the probe would start from without pretraining."""
    from .training.presets import load_model_config
    from .training.presets import save_random_encoder as save

    return save(load_model_config("tiny"), output_dir, seed=seed)


def run_ridge_probe(data_dir: Path, encoder_dir: Path, output_dir: Path) -> dict:
    """Frozen ridge probe of LVEF: pooling and regularisation chosen on validation, scored on test."""
    from .training.evaluate_representations import EvalConfig, evaluate_representations

    return evaluate_representations(EvalConfig(
        model_name_or_path=str(encoder_dir), data_root=str(data_dir), output_dir=str(output_dir),
        protocols=("ridge",), clips="uniform:4", num_workers=2, disable_tqdm=True,
    ))["ridge"]


def run_finetuning(data_dir: Path, encoder_dir: Path, output_dir: Path, epochs: float, seed: int):
    from .training.finetune import FinetuneConfig, finetune

    return finetune(FinetuneConfig(
        output_dir=str(output_dir), data_root=str(data_dir), model_name_or_path=str(encoder_dir), task="lvef",
        mode="full", num_train_epochs=epochs, per_device_train_batch_size=8, learning_rate=5e-4,
        clips="uniform:4", num_workers=2, logging_steps=5, seed=seed, disable_tqdm=True,
    ))


def run_pipeline(model_dir: Path, videos: list[str]) -> list[dict]:
    """EF of each video with the Transformers pipeline, loaded from the fine-tuned directory as any user would."""
    from transformers import pipeline

    classifier = pipeline("video-classification", model=str(model_dir))
    return [result[0] for result in classifier(videos, clips="uniform:4")]


def draw_plots(pretrain_dir: Path, finetune_dir: Path, video: str, plots_dir: Path) -> list[Path]:
    from . import plotting
    from .inference.cluster_maps import write_cluster_maps
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


@dataclass
class DemoArguments:
    """The `python -m discovr.demo` options."""

    output_dir: str = argument("demo_output", help="Where everything is written.")
    num_videos: int = argument(600, help="Synthetic videos to generate.")
    pretrain_epochs: int = argument(
        10, help="Pretraining epochs of the tiny recipe (each draws 4 clips of every training video)."
    )
    finetune_epochs: float = argument(8.0, help="LVEF fine-tuning epochs.")
    seed: int = argument(0, help="Seed of the data and of every run.")


def main(argv: list[str] | None = None) -> int:
    parser = DiscovrArgumentParser(DemoArguments, prog="python -m discovr.demo", description=__doc__, raw_epilog=True)
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    out = Path(args.output_dir).resolve()
    data_dir, pretrain_dir, plots_dir = out / "data", out / "pretrain", out / "plots"
    encoders = {"DISCOVR": pretrain_dir / "encoder", "random init": out / "random_encoder"}
    finetune_dirs = {"DISCOVR": out / "finetune", "random init": out / "finetune_random_init"}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    timed("1. synthetic data", timings, ensure_data, data_dir, args.num_videos, args.seed)
    timed("2. pretraining", timings, run_pretraining, data_dir, pretrain_dir, args.pretrain_epochs, args.seed)
    save_random_encoder(encoders["random init"], args.seed)
    probes, finetuned = {}, {}
    for name, encoder_dir in encoders.items():
        slug = name.replace(" ", "_")
        probes[name] = timed(f"3. ridge probe, {name}", timings, run_ridge_probe, data_dir, encoder_dir,
                             out / f"eval_{slug}")
        finetuned[name] = timed(f"3. fine-tuning, {name}", timings, run_finetuning, data_dir, encoder_dir,
                                finetune_dirs[name], args.finetune_epochs, args.seed)
    finetune_dir = finetune_dirs["DISCOVR"]
    test_table = finetuned["DISCOVR"].predictions
    videos = [str(data_dir / "Videos" / f"{name}.avi") for name in test_table.FileName[:4]]
    predictions = timed("4. pipeline", timings, run_pipeline, finetune_dir, videos)
    plots = timed("5. plots", timings, draw_plots, pretrain_dir, finetune_dir, videos[0], plots_dir)
    total = time.perf_counter() - start

    baseline = finetuned["DISCOVR"].metrics["test"]["train_mean_baseline"]["mae"]
    comparison = {
        name: {
            "frozen ridge MAE": round(probes[name]["mae"], 2),
            "fine-tuned MAE": round(finetuned[name].metrics["test"]["clip_average"]["mae"], 2),
        }
        for name in encoders
    }
    summary = {
        "test videos": finetuned["DISCOVR"].metrics["test"]["videos"], "mean-baseline MAE": round(baseline, 2),
        "time (s)": round(total, 1),
    }
    (out / "summary.json").write_text(json.dumps({**summary, "lvef_test_mae": comparison, "timings_s": timings},
                                                 indent=2))

    lines = ["", "DISCOVR demo: done", f"outputs in {out}"]
    lines += [f"  {label:<28} {path}" for label, path in (
        ("synthetic data", data_dir), ("pretrained model", pretrain_dir / "pretrained"),
        ("pretrained encoder", encoders["DISCOVR"]), ("fine-tuned LVEF model", finetune_dir),
        ("test predictions", finetune_dir / "predictions.csv"),
    )]
    lines += [f"  plot: {path}" for path in plots]
    lines += ["", "pipeline('video-classification') on test videos:"]
    truth = dict(zip(test_table.FileName, test_table.EF))
    for video, prediction in zip(videos, predictions):
        name = Path(video).stem
        lines.append(f"  {name}: predicted {prediction['score']:.1f}%  (true {truth[name]:.1f}%)")
    lines += ["", f"What pretraining buys: LVEF test MAE (EF points; predicting the training mean gives {baseline:.2f})",
              f"  {'encoder':<14} {'frozen ridge':>13} {'fine-tuned':>11}"]
    lines += [f"  {name:<14} {row['frozen ridge MAE']:>13.2f} {row['fine-tuned MAE']:>11.2f}"
              for name, row in comparison.items()]
    lines += ["", f"{'stage':<28} {'seconds':>8}"] + [f"{name:<28} {seconds:>8.1f}" for name, seconds in timings.items()]
    lines += ["", f"{'summary':<22} {'value':>8}"] + [f"{key:<22} {value:>8}" for key, value in summary.items()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
