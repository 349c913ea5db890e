"""Two gloo processes compute the same Sinkhorn codes, DINO centres, losses and head gradients (with the DINO
heads' global-batch BatchNorm) as one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from discovr_testing import tiny_config_kwargs
from safetensors.torch import load_file, save_file

from discovr import DiscovrConfig, DiscovrForPreTraining

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    torch.manual_seed(0)
    model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs(), dino_head_batch_norm=True))
    config = model.config
    with torch.no_grad():
        # Non-zero centres, so the update's momentum term is exercised too.
        model.video_center.normal_()
        model.image_center.normal_()
    model.save_pretrained(tmp_path / "model")
    batch_size = 2 * WORLD_SIZE
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(
        batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size, generator=generator
    )
    masks = model.mask_generator(batch_size, generator)
    tensors = {
        "pixel_values": pixel_values,
        **{name: getattr(masks, name).contiguous() for name in ("global_view", "local_views", "image_views")},
    }
    save_file(tensors, tmp_path / "batch.safetensors")

    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
        str(Path(__file__).with_name("distributed_pretraining_worker.py")), str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    model.train()
    output = model(pixel_values, masks=masks)
    output.loss.backward()
    model.update_centers(output.video_teacher_mean.detach(), output.image_teacher_mean.detach())
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(WORLD_SIZE)]
    codes = torch.cat([r["scd_codes"] for r in ranks])
    assert torch.equal(codes, output.scd_codes)
    # Equal shares: the global-batch mean of each DINO loss is the mean over processes.
    expected_losses = torch.stack((output.video_dino_loss, output.image_dino_loss)).detach()
    torch.testing.assert_close(torch.stack([r["dino_losses"] for r in ranks]).mean(0), expected_losses, atol=1e-5, rtol=0)
    # float32 BatchNorm here against float64 statistics there: measured ~2e-6 of the largest gradient apart.
    gradient = model.video_student_head.mlp[0].weight.grad
    for r in ranks:
        torch.testing.assert_close(r["head_gradient"], gradient, atol=5e-5 * gradient.abs().max().item(), rtol=1e-3)
    # Without the all-reduce, each share is balanced on its own and the codes differ: the test can fail.
    share = batch_size // WORLD_SIZE
    with torch.no_grad():
        model.eval()  # the local shares are balanced on their own whatever BatchNorm does
        local_codes = torch.cat([
            model(pixel_values[i : i + share], masks=masks[i : i + share]).scd_codes
            for i in range(0, batch_size, share)
        ])
    assert not torch.equal(local_codes, output.scd_codes)
    for r in ranks:
        torch.testing.assert_close(r["video_center"], model.video_center, atol=1e-6, rtol=0)
        torch.testing.assert_close(r["image_center"], model.image_center, atol=1e-6, rtol=0)
