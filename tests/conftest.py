"""Shared test fixtures: the offline environment and the published-implementation reference fixture."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def tiny_config_kwargs(**overrides) -> dict:
    """A DiscovrConfig small enough for fast CPU tests (4 frames of 32x32, width 32)."""
    kwargs = dict(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32, num_prototypes=8, image_hidden_size=32,
        image_num_hidden_layers=1, image_num_attention_heads=4, image_intermediate_size=64, dino_hidden_size=24,
        dino_bottleneck_size=8, dino_out_dim=16, num_local_views=2, mask_ratio=0.75, image_mask_ratio=0.75,
    )
    kwargs.update(overrides)
    return kwargs
