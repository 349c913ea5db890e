"""Pretraining check: the tiny recipe, run as a user runs it, must give an encoder clearly better than random init.

`discovr-pretrain --preset tiny --epochs 20` on 600 synthetic videos drawn with a seed that no recipe setting was
chosen on (docs/pretraining.md, "Recipes"), then the frozen ridge probe of `discovr-eval` (every setting chosen on
validation, scored on test) for the exported encoder and for three random initialisations. About 14 minutes on
2 CPU cores, hence `slow`.
"""

import json
import logging
import math
import statistics

import pytest

from discovr.data import make_synthetic_echonet
from discovr.training.evaluate_representations import EvalConfig, evaluate_representations
from discovr.training.presets import load_model_config, save_random_encoder
from discovr.training.pretrain import build_parser, pretrain

logger = logging.getLogger(__name__)


def ridge_mae(encoder_dir, data, output_dir) -> float:
    metrics = evaluate_representations(EvalConfig(
        model_name_or_path=str(encoder_dir), data_root=str(data), output_dir=str(output_dir),
        protocols=("ridge",), clips="uniform:4", num_workers=2, disable_tqdm=True,
    ))
    return metrics["ridge"]["mae"]


@pytest.mark.slow
def test_tiny_recipe_beats_random_init_on_the_frozen_ridge_probe(tmp_path):
    data = tmp_path / "synthetic"
    make_synthetic_echonet(data, num_videos=600, seed=23, progress=False)
    run = tmp_path / "pretrain"
    pretrain(build_parser().parse([
        "--preset", "tiny", "--data_root", str(data), "--output_dir", str(run), "--epochs", "20",
        "--num_workers", "2", "--logging_steps", "50", "--save_steps", "1000000",
    ]))

    # Neither DINO branch ends at the uniform-teacher plateau ln(dino_out_dim).
    plateau = math.log(load_model_config("tiny").dino_out_dim)
    last = [json.loads(line) for line in (run / "logs" / "pretrain_log.jsonl").read_text().splitlines()][-1]
    assert last["loss_video_dino"] < 0.97 * plateau and last["loss_image_dino"] < 0.97 * plateau

    pretrained = ridge_mae(run / "encoder", data, tmp_path / "eval_pretrained")
    random_init = statistics.fmean(
        ridge_mae(save_random_encoder(load_model_config("tiny"), tmp_path / f"random{seed}", seed=seed), data,
                  tmp_path / f"eval_random{seed}")
        for seed in range(3)
    )
    report = (f"ridge test MAE {pretrained:.2f} pretrained, {random_init:.2f} random init (mean of 3), "
              f"ratio {pretrained / random_init:.2f} (must be <= 0.90)")
    logger.info("Pretraining check: %s", report)
    assert pretrained <= 0.9 * random_init, report
