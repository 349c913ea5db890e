"""Which video encoder of a `DiscovrForPreTraining` folder a downstream run uses: the EMA teacher or the student."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..cli import InputError
from ..modeling_discovr import DiscovrForPreTraining, DiscovrModel

# The teacher is what `discovr-pretrain` exports as `encoder/` and what DINO evaluates; the student is the
# online network the optimiser trained.
ENCODERS = ("teacher", "student")


def is_pretraining_folder(model_dir: str | os.PathLike) -> bool:
    """Whether `model_dir` holds a saved `DiscovrForPreTraining` (both video encoders, heads, decoder)."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        return False
    return "DiscovrForPreTraining" in (json.loads(config_file.read_text()).get("architectures") or [])


def pretraining_encoder(model_dir: str | os.PathLike, encoder: str = "teacher") -> DiscovrModel:
    """The video `encoder` ("teacher" or "student") of the `DiscovrForPreTraining` saved in `model_dir`."""
    if encoder not in ENCODERS:
        raise InputError(f"--encoder must be one of {ENCODERS}, got {encoder!r}")
    model = DiscovrForPreTraining.from_pretrained(model_dir)
    return model.video_teacher if encoder == "teacher" else model.discovr


__all__ = ["ENCODERS", "is_pretraining_folder", "pretraining_encoder"]
