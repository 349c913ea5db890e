"""Which video encoder of a `DiscovrForPreTraining` folder a downstream run uses: the EMA teacher or the student."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import transformers

from ..cli import InputError
from ..modeling_discovr import DiscovrForPreTraining, DiscovrModel

# The teacher is what `discovr-pretrain` exports as `encoder/` and what DINO evaluates; the student is the
# online network the optimiser trained.
Encoder = Literal["teacher", "student"]
ENCODERS = get_args(Encoder)


def load_complete(
    model_class: Any, model_dir: str | os.PathLike, what: str, may_be_new: tuple[str, ...] = (), **kwargs
) -> tuple[torch.nn.Module, dict]:
    """`model_class.from_pretrained(model_dir, **kwargs)` and its loading info, refusing a folder that lacks weights.

    Transformers would initialise a missing weight at random and print a table of every skipped one; here a weight
    the model needs (other than those starting with `may_be_new`, such as a new head) that is missing or of the
    wrong shape raises `InputError`: "`model_dir` does not hold `what`".
    """
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    mismatched = [str(entry[0] if isinstance(entry, tuple) else entry) for entry in info["mismatched_keys"]]
    lacking = sorted(name for name in set(info["missing_keys"]) | set(mismatched) if not name.startswith(may_be_new))
    if lacking:
        raise InputError(
            f"{model_dir} does not hold {what}: {len(lacking)} weights are missing or of the wrong shape "
            f"(e.g. {', '.join(lacking[:5])})"
        )
    return model, info


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


def pretraining_encoder_under_head(
    model_class: type, model_dir: str | os.PathLike, encoder: str, config_updates: dict[str, Any]
) -> torch.nn.Module:
    """A new `model_class` (a DISCOVR head model) on the video `encoder` of the `DiscovrForPreTraining` in
    `model_dir`: the encoder's config with `config_updates`, its weights, and a new head. Loading the folder as the
    head model directly would give the student (`base_model_prefix`)."""
    source = pretraining_encoder(model_dir, encoder)
    config = copy.deepcopy(source.config)
    config.update(config_updates)
    model = model_class(config)
    model.discovr.load_state_dict(source.state_dict())
    return model


__all__ = [
    "ENCODERS", "is_pretraining_folder", "load_complete", "pretraining_encoder", "pretraining_encoder_under_head",
]
