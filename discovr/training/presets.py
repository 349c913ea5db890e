"""Named model sizes for pretraining and fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..configuration_discovr import DiscovrConfig

# `tiny` runs the demo and the tests on a laptop CPU; `small` is ViT-S; `base` is the published ViT-B.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size=64, num_frames=16, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=384, decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=256, num_prototypes=64, image_hidden_size=96, image_num_hidden_layers=2,
        image_num_attention_heads=4, image_intermediate_size=384, dino_hidden_size=256, dino_bottleneck_size=64,
        dino_out_dim=512, num_local_views=2,
    ),
    "small": dict(
        hidden_size=384, num_attention_heads=6, intermediate_size=1536, decoder_hidden_size=192,
        decoder_num_attention_heads=3, decoder_intermediate_size=768, image_hidden_size=384,
        image_num_attention_heads=6, image_intermediate_size=1536,
    ),
    "base": {},
}


def load_model_config(preset: str | None = None, config_file: str | Path | None = None, **overrides) -> DiscovrConfig:
    """A `DiscovrConfig` from a named preset or a JSON file (a saved `config.json` works), plus overrides."""
    if (preset is None) == (config_file is None):
        raise ValueError("Give exactly one of a preset name or a config file")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        kwargs = dict(PRESETS[preset])
    else:
        path = Path(config_file)
        try:
            kwargs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read model config {path}: {error}") from None
        for key in ("architectures", "auto_map", "transformers_version", "model_type"):
            kwargs.pop(key, None)
    kwargs.update(overrides)
    return DiscovrConfig(**kwargs)
