"""Cluster maps of a pretrained model: assignments on the token grid, and the PNG / GIF written by the entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrVideoProcessor
from discovr.inference.cluster_maps import compute_cluster_assignments, main
from discovr.video_processing_discovr import read_video
from discovr_testing import tiny_config_kwargs


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    model.save_pretrained(directory)
    size = model.config.image_size
    DiscovrVideoProcessor(num_frames=model.config.num_frames, size={"height": size, "width": size}).save_pretrained(
        directory
    )
    return directory


@pytest.fixture(scope="module")
def video(synthetic_echonet) -> Path:
    name = pd.read_csv(synthetic_echonet / "FileList.csv")["FileName"][0]
    return synthetic_echonet / "Videos" / f"{name}.avi"


def test_assignments_are_on_the_token_grid_of_the_centred_clip(pretrained_dir, video):
    model = DiscovrForPreTraining.from_pretrained(pretrained_dir)
    processor = DiscovrVideoProcessor.from_pretrained(pretrained_dir)
    first = compute_cluster_assignments(model, processor, video, seed=0)

    config = model.config
    side = config.image_size // config.patch_size
    assert first.teacher.shape == first.predicted.shape == (config.num_frames // config.tubelet_size, side, side)
    for assignment in (first.teacher, first.predicted):
        assert assignment.min() >= 0 and assignment.max() < config.num_prototypes

    all_frames, _ = read_video(video)
    span = (config.num_frames - 1) * processor.frame_stride + 1
    assert first.start == (len(all_frames) - span) // 2
    clip = all_frames[first.start : first.start + span : processor.frame_stride].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(first.frames, clip)

    # The masks come from the seed, so the maps are reproducible; the model is left in its training mode.
    model.train()
    again = compute_cluster_assignments(model, processor, video, seed=0)
    assert model.training
    np.testing.assert_array_equal(first.teacher, again.teacher)
    np.testing.assert_array_equal(first.predicted, again.predicted)


def test_entry_point_writes_png_svg_and_gif(pretrained_dir, video, tmp_path):
    output_dir = tmp_path / "maps"
    assert main([str(pretrained_dir), str(video), "--output_dir", str(output_dir), "--formats", "png", "svg"]) == 0

    stem = output_dir / f"{video.stem}_cluster_maps"
    assert sorted(path.name for path in output_dir.iterdir()) == sorted(
        f"{stem.name}.{suffix}" for suffix in ("png", "svg", "gif")
    )
    with Image.open(stem.with_suffix(".png")) as png:
        png.verify()
        assert png.format == "PNG" and min(png.size) > 100
    with Image.open(stem.with_suffix(".gif")) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == DiscovrConfig(**tiny_config_kwargs()).num_frames
    assert stem.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
