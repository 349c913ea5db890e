"""Learning check: the tiny preset, fine-tuned in full on 150 synthetic videos, must really learn EF.

A broken pipeline (labels misaligned with videos, clips without motion, a frozen model) predicts about the
training mean, so the test MAE must be at most 70% of that baseline's. Takes several minutes on 2 CPU cores.

Known gap (recorded in docs/finetuning.md and docs/benchmarks.md): a randomly initialised tiny ViT does not yet
learn EF from ~100 videos in a few CPU minutes. At 160 optimiser steps it stays at the mean (ratio ~1.00); at
600 steps it fits the training set (train MAE ~7.9) but reaches only ~0.92 on validation. Learning rates of
1e-3 and above collapse it to a constant output. The data are not at fault: ridge regression on simple motion
features of the same clips reaches ratio ~0.43. The test is kept, strict, so that it fails loudly once the
model learns and the marker must be removed.
"""

import pytest

from discovr.data import make_synthetic_echonet
from discovr.training.finetune import FinetuneConfig, finetune


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="tiny ViT from scratch does not reach 70% of the mean-baseline MAE yet")
def test_tiny_preset_learns_lvef(tmp_path):
    data = tmp_path / "synthetic"
    make_synthetic_echonet(data, num_videos=150, seed=0, progress=False)
    result = finetune(FinetuneConfig(
        output_dir=str(tmp_path / "run"), data_root=str(data), preset="tiny", mode="full",
        num_train_epochs=12, per_device_train_batch_size=8, learning_rate=3e-4, eval_clips="uniform:4",
        num_workers=2, logging_steps=5, disable_tqdm=True,
    ))
    test = result.metrics["test"]
    mae = test["clip_average"]["mae"]
    baseline = test["train_mean_baseline"]["mae"]
    print(
        f"\nLearning check ({test['videos']} test videos): test MAE {mae:.2f} (one clip {test['one_clip']['mae']:.2f}), "
        f"train-mean baseline MAE {baseline:.2f}, ratio {mae / baseline:.2f} (must be <= 0.70)"
    )
    assert mae <= 0.7 * baseline
