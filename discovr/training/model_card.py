"""README.md model cards for the models that DISCOVR training scripts save.

A card carries the metadata the Hub renders (tags, `base_model` when it is a Hub id, and the results as
`model-index`), the model's size, its training data by name, a short results table, and the intended use. It
never carries a local path: a card travels with the model, the training machine's disk layout does not.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from ..configuration_discovr import DiscovrConfig

INTENDED_USE = (
    "Research on self-supervised representation learning for echocardiography. This model is **not** a medical "
    "device: it has not been validated clinically and must not be used for diagnosis, treatment or any other "
    "clinical decision. Models trained on the synthetic echo generator have never seen a real heart."
)
TAGS = ["discovr", "echocardiography", "video-classification"]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class CardResult:
    """One test-split result: the Hub's metric type, its readable name, the value, its 95% interval, and the
    validation value."""

    metric_type: str
    name: str
    test: float
    interval: tuple[float, float] | None = None
    validation: float | None = None


def describe_size(config: DiscovrConfig, num_parameters: int) -> str:
    """The encoder's shape and parameter count, in words."""
    return (
        f"ViT of width {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads "
        f"and MLP width {config.intermediate_size}, on clips of {config.num_frames} frames of {config.image_size}² "
        f"pixels in tubelets of {config.tubelet_size}×{config.patch_size}²; {num_parameters / 1e6:.2f} M parameters"
    )


def dataset_name(data_root: str | os.PathLike) -> str:
    """A data set's name: its folder's name, not where it sat on the training machine."""
    return Path(os.path.abspath(data_root)).name or str(data_root)


def model_reference(name_or_path: str | os.PathLike) -> str:
    """A Hub id as given; a local model folder by its last two path components (e.g. `pretrain/encoder`)."""
    text = os.fspath(name_or_path)
    if HUB_ID.match(text) and not os.path.isdir(text):
        return text
    return "/".join(Path(os.path.abspath(text)).parts[-2:])


def _number(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def render_model_card(
    *,
    title: str,
    size: str,
    dataset: str,
    dataset_type: str,
    task: str | None = None,
    results: Sequence[CardResult] = (),
    base_model: str | None = None,
    training: str = "",
    task_type: str = "video-classification",
) -> str:
    """The model card as Markdown with YAML metadata (see [`write_model_card`])."""
    eval_results = [
        EvalResult(task_type=task_type, task_name=task, dataset_type=dataset_type, dataset_name=dataset,
                   dataset_split="test", metric_type=result.metric_type, metric_value=round(result.test, 6),
                   metric_name=result.name)
        for result in results if not math.isnan(result.test)
    ]
    metadata = ModelCardData(
        library_name="transformers", tags=TAGS, model_name=title if eval_results else None,
        base_model=base_model if base_model and HUB_ID.match(base_model) else None, eval_results=eval_results or None,
    )
    lines = ["---", metadata.to_yaml(), "---", "", f"# {title}", "", "## Model", "",
             f"DISCOVR video encoder (`DiscovrConfig`, model type `discovr`): {size}.",
             "Load it after `import discovr`, or with `trust_remote_code=True`."]
    if base_model:
        lines.append(f"Fine-tuned from `{base_model}`.")
    lines += ["", "## Training data", "", f"`{dataset}` ({dataset_type} layout).", "", "## Evaluation", ""]
    if results:
        lines += [f"{task}, test split; validation for comparison. 95% intervals: bootstrap over test videos.", "",
                  "| metric | validation | test | test 95% interval |", "|---|---|---|---|"]
        for result in results:
            interval = "–" if result.interval is None else f"{_number(result.interval[0])} – {_number(result.interval[1])}"
            lines.append(f"| {result.name} | {_number(result.validation)} | {_number(result.test)} | {interval} |")
    else:
        lines.append("No evaluation results were recorded for this model.")
    lines += ["", "## Intended use", "", INTENDED_USE, ""]
    if training:
        lines += ["## Training", "", training.strip(), ""]
    return "\n".join(lines)


def write_model_card(output_dir: str | os.PathLike, **card) -> Path:
    """Write `output_dir/README.md`; the keyword arguments are those of [`render_model_card`]."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(**card))
    return path


__all__ = [
    "INTENDED_USE", "CardResult", "dataset_name", "describe_size", "model_reference", "render_model_card",
    "write_model_card",
]
