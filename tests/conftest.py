"""Shared test fixtures: the offline environment and the published-implementation reference fixture."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from discovr import DiscovrConfig
from discovr_testing import FRAME_STRIDE, tiny_config_kwargs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE_FIXTURE = REPO_ROOT.parent / "shared" / "reference" / "tiny"


@dataclass
class ReferenceFixture:
    """One directory of reference numbers; every size is read from its `reference_config.json`."""

    root: Path
    config: dict
    inputs: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor]

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pth"

    @property
    def training_state(self) -> Path:
        return self.root / "checkpoint_training_state.pth"

    @property
    def config_path(self) -> Path:
        return self.root / "reference_config.json"

    @property
    def pixel_values(self) -> torch.Tensor:
        """The fixture clip in the Transformers layout (B, T, C, H, W)."""
        return self.inputs["pixel_values_bcthw"].transpose(1, 2).contiguous()


def load_reference_fixture() -> ReferenceFixture:
    root = Path(os.environ.get("DISCOVR_REFERENCE_FIXTURE", DEFAULT_REFERENCE_FIXTURE)).resolve()
    if not (root / "reference_config.json").is_file():
        pytest.skip(f"reference fixture not found at {root} (set DISCOVR_REFERENCE_FIXTURE)")
    return ReferenceFixture(
        root=root,
        config=json.loads((root / "reference_config.json").read_text()),
        inputs=load_file(root / "inputs.safetensors"),
        expected=load_file(root / "expected.safetensors"),
    )


@pytest.fixture(scope="session")
def reference() -> ReferenceFixture:
    return load_reference_fixture()


@pytest.fixture(scope="session")
def synthetic_echonet(tmp_path_factory) -> Path:
    """14 short synthetic videos (1.6-2 s at 50 fps) in the EchoNet-Dynamic layout, generated once per session.

    Seed 3 puts videos on both sides of EF 50% in every split (8 train, 3 validation, 3 test).
    """
    from discovr.data import make_synthetic_echonet

    root = tmp_path_factory.mktemp("synthetic_echonet")
    make_synthetic_echonet(
        root, num_videos=14, seed=3, min_seconds=1.6, max_seconds=2.0, split_fractions=(0.5, 0.25, 0.25),
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    """`tiny_config_kwargs` as a config JSON, for the command-line entry points."""
    path = tmp_path_factory.mktemp("configs") / "tiny_config.json"
    path.write_text(json.dumps(tiny_config_kwargs()))
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A seeded tiny `DiscovrModel` saved with a processor (stride `FRAME_STRIDE`), standing in for a pretrained one."""
    from discovr import DiscovrModel, DiscovrVideoProcessor

    directory = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    config = DiscovrConfig(**tiny_config_kwargs())
    DiscovrModel(config).save_pretrained(directory)
    DiscovrVideoProcessor(
        num_frames=config.num_frames, frame_stride=FRAME_STRIDE,
        size={"height": config.image_size, "width": config.image_size},
    ).save_pretrained(directory)
    return directory
