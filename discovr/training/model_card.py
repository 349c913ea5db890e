"""README.md model cards for the models that DISCOVR training scripts save."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


INTENDED_USE = (
    "Research on self-supervised representation learning for echocardiography. This model is **not** a medical "
    "device: it has not been validated clinically and must not be used for diagnosis, treatment or any other "
    "clinical decision. Models trained on the synthetic echo generator have never seen a real heart."
)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"{value[0]:.4g} – {value[1]:.4g}"
    return str(value)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            rows += _flatten(value, prefix=f"{key} / ")
        else:
            rows.append((key, value))
    return rows


def render_model_card(
    *, title: str, data: str, preset: str, metrics: Mapping[str, Any] | None, extra: str = ""
) -> str:
    """The model card as Markdown (see [`write_model_card`])."""
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- discovr",
        "- echocardiography",
        "- video-classification",
        "---",
        "",
        f"# {title}",
        "",
        "## Model",
        "",
        f"DISCOVR video encoder (`DiscovrConfig`, model type `discovr`). Size: {preset}.",
        "Load it after `import discovr`, or with `trust_remote_code=True`.",
        "",
        "## Training data",
        "",
        data,
        "",
        "## Evaluation",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_format_value(value)} |" for name, value in _flatten(metrics)]
    else:
        lines.append("No evaluation results were recorded for this model.")
    lines += ["", "## Intended use", "", INTENDED_USE, ""]
    if extra:
        lines += [extra.strip(), ""]
    return "\n".join(lines)


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    title: str,
    data: str,
    preset: str,
    metrics: Mapping[str, Any] | None,
    extra: str = "",
) -> Path:
    """
    Write `output_dir/README.md`: model, training data, evaluation table and intended use (research only).

    Args:
        output_dir: the `save_pretrained` directory.
        title: heading of the card.
        data: a sentence or two on the training data (name, location, splits, size).
        preset: the model size (a preset name or a description of the config).
        metrics: results to tabulate; nested mappings become `outer / inner` rows. `None` for none.
        extra: Markdown appended at the end (e.g. how the model was trained).
    """
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(title=title, data=data, preset=preset, metrics=metrics, extra=extra))
    return path


__all__ = ["INTENDED_USE", "render_model_card", "write_model_card"]
