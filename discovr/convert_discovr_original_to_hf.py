"""Convert a published DISCOVR checkpoint into a Transformers model directory.

Usage:
    python -m discovr.convert_discovr_original_to_hf --checkpoint_path CKPT --output_dir DIR \
        [--reference_config JSON] [--model encoder|pretraining] [--encoder teacher|student] [--num_attention_heads N]

`--model encoder` (default) exports one video encoder as a `DiscovrModel`; `--model pretraining` loads every
tensor of the checkpoint into a `DiscovrForPreTraining` (both branches, heads, prototypes and centres).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .cli import DiscovrArgumentParser, InputError, argument, run_console_script
from .configuration_discovr import DiscovrConfig
from .modeling_discovr import DiscovrForPreTraining, DiscovrModel, sinusoid_position_table

logger = logging.getLogger(__name__)

# Reference checkpoint prefixes of the two video encoders.
VIDEO_ENCODER_PREFIXES = {"student": "encoder", "teacher": "video_teacher"}
# Reference prefix -> `DiscovrForPreTraining` prefix of its four ViTs and four DINO heads.
PRETRAINING_VIT_PREFIXES = {
    "encoder": "discovr", "video_teacher": "video_teacher", "image_student": "image_student",
    "image_teacher": "image_teacher",
}
PRETRAINING_HEAD_PREFIXES = {
    "video_dino_head": "video_student_head", "video_teacher_head": "video_teacher_head",
    "image_dino_head": "image_student_head", "image_teacher_head": "image_teacher_head",
}
# Reference tensors that keep their name: decoder norm/head, projection, mask token, prototypes, centres.
PRETRAINING_SAME_NAME = (
    "decoder.norm.weight", "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias",
    "encoder_to_decoder.weight", "mask_token", "prototypes", "image_center", "video_center",
)
# Every top-level group a published DISCOVR checkpoint holds; anything else is not a DISCOVR checkpoint.
REFERENCE_GROUPS = frozenset({
    "encoder", "video_teacher", "image_student", "image_teacher", "decoder", "encoder_to_decoder", "mask_token",
    "prototypes", "image_center", "video_center", "image_dino_head", "image_teacher_head", "video_dino_head",
    "video_teacher_head",
})


class CheckpointConversionError(InputError):
    """A reference checkpoint cannot be converted; the message lists every offending key or field."""


def load_reference_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a reference checkpoint safely and return its state dict and its training `args` (possibly empty).

    Accepts `{"model": state_dict}`, a full training state whose `args` is an `argparse.Namespace`, or a bare
    state dict. Only `argparse.Namespace` is allow-listed for unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointConversionError(f"Checkpoint {path} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message advises `weights_only=False`: exactly what must not be done with a downloaded file.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found or "Weights only load failed" in str(error):
            what = f"a Python object of type `{found.group(1)}`" if found else "Python objects"
            raise CheckpointConversionError(
                f"{path} is not a plain checkpoint: besides tensors, numbers, strings and containers it holds "
                f"{what}. A DISCOVR checkpoint holds none, so it is not converted."
            ) from None
        raise CheckpointConversionError(
            f"Cannot read {path} as a PyTorch checkpoint (truncated, corrupt, or not a checkpoint): {error}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointConversionError(
            f"Cannot read {path} as a PyTorch checkpoint (truncated, corrupt, or not a checkpoint): {first_line}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointConversionError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict")
    args = payload.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    state_dict = payload.get("model", payload)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointConversionError(
            f"{path} has no state dict of tensors under 'model' (top-level keys: {sorted(payload)[:10]})"
        )
    return state_dict, args


def vit_key_map(source_prefix: str, target_prefix: str, num_layers: int, has_qv_bias: bool) -> dict[str, str]:
    """Map the reference ViT keys (`{source}.blocks.i.attn.q_bias`, ...) to ours, except the fused qkv weight."""
    mapping = {
        f"{source_prefix}.cls_token": f"{target_prefix}.embeddings.cls_token",
        f"{source_prefix}.patch_embed.proj.weight": f"{target_prefix}.embeddings.patch_embeddings.projection.weight",
        f"{source_prefix}.patch_embed.proj.bias": f"{target_prefix}.embeddings.patch_embeddings.projection.bias",
        f"{source_prefix}.norm.weight": f"{target_prefix}.layernorm.weight",
        f"{source_prefix}.norm.bias": f"{target_prefix}.layernorm.bias",
    }
    mapping.update(block_key_map(f"{source_prefix}.blocks", f"{target_prefix}.encoder.layer", num_layers, has_qv_bias))
    return mapping


def block_key_map(source_prefix: str, target_prefix: str, num_layers: int, has_qv_bias: bool) -> dict[str, str]:
    """Map the keys of `num_layers` reference blocks to `DiscovrLayer` keys (qkv weight split separately)."""
    mapping = {}
    for i in range(num_layers):
        src, dst = f"{source_prefix}.{i}", f"{target_prefix}.{i}"
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            mapping[f"{src}.{name}"] = f"{dst}.{name}"
        mapping[f"{src}.attn.proj.weight"] = f"{dst}.attention.proj.weight"
        mapping[f"{src}.attn.proj.bias"] = f"{dst}.attention.proj.bias"
        if has_qv_bias:
            mapping[f"{src}.attn.q_bias"] = f"{dst}.attention.query.bias"
            mapping[f"{src}.attn.v_bias"] = f"{dst}.attention.value.bias"
    return mapping


def count_blocks(state_dict: dict[str, torch.Tensor], blocks_prefix: str) -> int:
    """Number of consecutive `{blocks_prefix}.i.` blocks present."""
    indices = {
        int(key[len(blocks_prefix) + 1:].split(".", 1)[0])
        for key in state_dict
        if key.startswith(blocks_prefix + ".") and key[len(blocks_prefix) + 1:].split(".", 1)[0].isdigit()
    }
    return max(indices) + 1 if indices else 0


def convert_blocks(
    state_dict: dict[str, torch.Tensor],
    source_prefix: str,
    target_prefix: str,
    mapping: dict[str, str],
    num_layers: int,
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Rename mapped keys and split each fused `attn.qkv.weight` into query/key/value; return (tensors, used keys)."""
    converted, used = {}, set()
    for source, target in mapping.items():
        if source in state_dict:
            converted[target] = state_dict[source]
            used.add(source)
    for i in range(num_layers):
        qkv_key = f"{source_prefix}.{i}.attn.qkv.weight"
        if qkv_key not in state_dict:
            continue
        query, key, value = state_dict[qkv_key].chunk(3, dim=0)
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            converted[f"{target_prefix}.{i}.attention.{name}.weight"] = tensor.contiguous()
        used.add(qkv_key)
    return converted, used


def check_position_table(state_dict: dict[str, torch.Tensor], key: str, num_patches: int) -> None:
    """The reference stores its fixed sin-cos table; ours is recomputed, so the stored one must equal it."""
    if key not in state_dict:
        return
    stored = state_dict[key].reshape(-1, state_dict[key].shape[-1]).float()
    expected = torch.cat((torch.zeros(1, stored.shape[-1]), sinusoid_position_table(num_patches, stored.shape[-1])))
    if stored.shape != expected.shape:
        raise CheckpointConversionError(
            f"`{key}` has {stored.shape[0]} rows; the config implies 1 + {num_patches}: check the frame count, "
            "image size, patch size and tubelet size"
        )
    error = (stored - expected).abs().max().item()
    if error > 1e-5:
        raise CheckpointConversionError(
            f"`{key}` differs from the fixed sin-cos table by {error:.3g}: this checkpoint uses learned or "
            "different position embeddings, which DISCOVR does not support"
        )


def _reference_args(reference_config: str | Path | None, args: dict[str, Any]) -> dict[str, Any]:
    merged = dict(args)
    if reference_config is not None:
        path = Path(reference_config)
        try:
            merged.update(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointConversionError(f"Cannot read reference config {path}: {error}") from None
    return merged


def infer_config(
    state_dict: dict[str, torch.Tensor],
    reference_args: dict[str, Any],
    num_attention_heads: int | None = None,
    encoder_prefix: str = "encoder",
) -> DiscovrConfig:
    """Build a `DiscovrConfig` from tensor shapes, completed by the reference args (head counts, frames, ratios)."""
    required = [f"{encoder_prefix}.patch_embed.proj.weight", f"{encoder_prefix}.pos_embed"]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointConversionError(f"Checkpoint lacks {missing}: not a DISCOVR/VideoMAE video encoder")
    hidden_size, num_channels, tubelet_size, patch_size, _ = state_dict[f"{encoder_prefix}.patch_embed.proj.weight"].shape
    num_positions = state_dict[f"{encoder_prefix}.pos_embed"].shape[1] - 1
    num_layers = count_blocks(state_dict, f"{encoder_prefix}.blocks")
    intermediate_size = state_dict[f"{encoder_prefix}.blocks.0.mlp.fc1.weight"].shape[0]
    has_qv_bias = f"{encoder_prefix}.blocks.0.attn.q_bias" in state_dict

    heads = num_attention_heads or reference_args.get("encoder_num_heads") or reference_args.get("num_heads")
    if not heads:
        raise CheckpointConversionError(
            "The number of attention heads cannot be inferred from tensor shapes: pass --num_attention_heads "
            "(12 for the published ViT-B) or --reference_config with `encoder_num_heads`"
        )
    image_size = reference_args.get("img_size") or reference_args.get("input_size")
    num_frames = reference_args.get("num_frames")
    if image_size is None and num_frames is None:
        raise CheckpointConversionError(
            "Cannot tell frames from image size: pass --reference_config with `img_size` and `num_frames`"
        )
    if image_size is None:
        image_size = patch_size * math.isqrt(num_positions // (num_frames // tubelet_size))
    if num_frames is None:
        num_frames = tubelet_size * num_positions // (image_size // patch_size) ** 2

    fields: dict[str, Any] = dict(
        image_size=int(image_size), patch_size=int(patch_size), num_channels=int(num_channels),
        num_frames=int(num_frames), tubelet_size=int(tubelet_size), hidden_size=int(hidden_size),
        num_hidden_layers=num_layers, num_attention_heads=int(heads), intermediate_size=int(intermediate_size),
        qkv_bias=has_qv_bias,
        layer_norm_eps=float(reference_args.get("layer_norm_eps_video", 1e-6)),
    )
    if "decoder.blocks.0.mlp.fc1.weight" in state_dict:
        if "decoder_num_heads" in reference_args:
            fields.update(
                decoder_hidden_size=int(state_dict["encoder_to_decoder.weight"].shape[0]),
                decoder_num_hidden_layers=count_blocks(state_dict, "decoder.blocks"),
                decoder_intermediate_size=int(state_dict["decoder.blocks.0.mlp.fc1.weight"].shape[0]),
                decoder_num_attention_heads=int(reference_args["decoder_num_heads"]),
            )
        else:
            logger.warning(
                "The decoder head count is not in the checkpoint's args or --reference_config "
                "(`decoder_num_heads`): the decoder sizes are not recorded in the config"
            )
    # Without an image branch in the checkpoint, the config's image branch follows the video encoder.
    if "prototypes" in state_dict:
        fields["num_prototypes"] = int(state_dict["prototypes"].shape[0])
    if "image_teacher.blocks.0.mlp.fc1.weight" in state_dict:
        fields.update(
            image_hidden_size=int(state_dict["image_teacher.patch_embed.proj.weight"].shape[0]),
            image_num_hidden_layers=count_blocks(state_dict, "image_teacher.blocks"),
            image_num_attention_heads=int(heads),
            image_intermediate_size=int(state_dict["image_teacher.blocks.0.mlp.fc1.weight"].shape[0]),
            image_qkv_bias="image_teacher.blocks.0.attn.q_bias" in state_dict,
            image_layer_norm_eps=float(reference_args.get("layer_norm_eps_image", 1e-5)),
        )
    if "video_teacher_head.mlp.0.weight" in state_dict:
        fields.update(
            dino_hidden_size=int(state_dict["video_teacher_head.mlp.0.weight"].shape[0]),
            dino_bottleneck_size=int(state_dict["video_teacher_head.last_layer.weight_v"].shape[1]),
            dino_out_dim=int(state_dict["video_teacher_head.last_layer.weight_v"].shape[0]),
        )
    for source, target, cast in (
        ("eps", "sinkhorn_epsilon", float), ("sinkhorn_eps", "sinkhorn_epsilon", float),
        ("sinkhorn_iterations", "sinkhorn_iterations", int),
        ("mask_ratio", "mask_ratio", float), ("num_local_views", "num_local_views", int),
    ):
        if source in reference_args:
            fields[target] = cast(reference_args[source])
    return DiscovrConfig(**fields)


def convert_video_encoder(
    state_dict: dict[str, torch.Tensor], config: DiscovrConfig, encoder: str = "teacher"
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """State dict of a `DiscovrModel` from the reference student (`encoder.*`) or teacher (`video_teacher.*`)."""
    if encoder not in VIDEO_ENCODER_PREFIXES:
        raise CheckpointConversionError(f"--encoder must be one of {sorted(VIDEO_ENCODER_PREFIXES)}, got {encoder!r}")
    prefix = VIDEO_ENCODER_PREFIXES[encoder]
    mapping = vit_key_map(prefix, "", config.num_hidden_layers, config.qkv_bias)
    mapping = {source: target.lstrip(".") for source, target in mapping.items()}
    converted, used = convert_blocks(state_dict, f"{prefix}.blocks", "encoder.layer", mapping, config.num_hidden_layers)
    check_position_table(state_dict, f"{prefix}.pos_embed", config.num_patches)
    used.add(f"{prefix}.pos_embed")
    unknown = sorted(key for key in state_dict if key.startswith(prefix + ".") and key not in used)
    if unknown:
        raise CheckpointConversionError(f"Unknown keys under `{prefix}.`, not part of a DISCOVR encoder: {unknown}")
    return converted, used


def convert_pretraining(
    state_dict: dict[str, torch.Tensor], config: DiscovrConfig
) -> tuple[dict[str, torch.Tensor], set[str], list[str]]:
    """State dict of a `DiscovrForPreTraining` from a full reference checkpoint.

    Returns the converted tensors, the reference keys they came from, and the reference keys intentionally
    dropped: the four fixed position tables, each checked equal to the table the model recomputes.
    """
    converted, used, dropped = {}, set(), []
    for source, target in PRETRAINING_VIT_PREFIXES.items():
        is_video = source in VIDEO_ENCODER_PREFIXES.values()
        num_layers = config.num_hidden_layers if is_video else config.image_num_hidden_layers
        has_qv_bias = config.qkv_bias if is_video else config.image_qkv_bias
        mapping = vit_key_map(source, target, num_layers, has_qv_bias)
        tensors, keys = convert_blocks(state_dict, f"{source}.blocks", f"{target}.encoder.layer", mapping, num_layers)
        converted.update(tensors)
        used |= keys
        table = f"{source}.pos_embed"
        if table in state_dict:
            check_position_table(state_dict, table, config.num_patches if is_video else config.num_patches_per_frame)
            dropped.append(table)

    mapping = block_key_map("decoder.blocks", "decoder.layer", config.decoder_num_hidden_layers, config.qkv_bias)
    mapping.update({key: key for key in PRETRAINING_SAME_NAME})
    num_layers = config.decoder_num_hidden_layers
    tensors, keys = convert_blocks(state_dict, "decoder.blocks", "decoder.layer", mapping, num_layers)
    converted.update(tensors)
    used |= keys

    for key, tensor in state_dict.items():
        source, _, rest = key.partition(".")
        if source in PRETRAINING_HEAD_PREFIXES:
            converted[f"{PRETRAINING_HEAD_PREFIXES[source]}.{rest}"] = tensor
            used.add(key)
    return converted, used, dropped


def check_reference_groups(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse keys outside the published checkpoint's groups instead of silently ignoring them."""
    unknown = sorted(key for key in state_dict if key.split(".", 1)[0] not in REFERENCE_GROUPS)
    if unknown:
        raise CheckpointConversionError(
            f"Unknown keys, not part of a DISCOVR checkpoint: {unknown[:20]}"
            + (f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else "")
        )


def load_converted(model: torch.nn.Module, converted: dict[str, torch.Tensor]) -> None:
    """Load `converted` strictly: every model tensor filled, no extras, no shape mismatch; else list them all."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(converted)
        if converted[key].shape != expected[key].shape
    )
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"unexpected: {unexpected}")
    if mismatched:
        problems.append(f"mis-shaped: {mismatched}")
    if problems:
        raise CheckpointConversionError("Checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict(converted, strict=True)


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path | None = None,
    reference_config: str | Path | None = None,
    encoder: str = "teacher",
    num_attention_heads: int | None = None,
    model: str = "encoder",
) -> tuple[DiscovrModel | DiscovrForPreTraining, dict[str, Any]]:
    """Convert a reference checkpoint (saved to `output_dir` when given).

    `model="encoder"` exports the `encoder` video encoder as a `DiscovrModel`; `model="pretraining"` loads every
    reference tensor into a `DiscovrForPreTraining` and refuses any key it cannot account for.

    Returns the model and a report: the `model` kind, the `converted` reference keys, the `dropped` ones (fixed
    position tables, checked) and the ones `left` (in encoder mode: what only the pretraining model holds).
    """
    if model not in ("encoder", "pretraining"):
        raise CheckpointConversionError(f"--model must be 'encoder' or 'pretraining', got {model!r}")
    state_dict, args = load_reference_checkpoint(checkpoint_path)
    check_reference_groups(state_dict)
    config = infer_config(state_dict, _reference_args(reference_config, args), num_attention_heads)
    if model == "pretraining":
        converted, used, dropped = convert_pretraining(state_dict, config)
        left = sorted(set(state_dict) - used - set(dropped))
        if left:
            raise CheckpointConversionError(f"Reference keys the pretraining model has no place for: {left}")
        hf_model = DiscovrForPreTraining(config)
    else:
        converted, used = convert_video_encoder(state_dict, config, encoder)
        dropped = []
        hf_model = DiscovrModel(config)
    load_converted(hf_model, converted)
    hf_model.eval()
    if output_dir is not None:
        hf_model.save_pretrained(output_dir)
    report = {
        "model": model,
        "converted": sorted(used),
        "dropped": sorted(dropped),
        "left": sorted(set(state_dict) - used - set(dropped)),
    }
    return hf_model, report


def summarize(report: dict[str, Any]) -> str:
    """Human-readable summary: what was converted, what was dropped on purpose and which keys were left."""
    groups: dict[str, int] = {}
    for key in report["left"]:
        groups[key.split(".", 1)[0]] = groups.get(key.split(".", 1)[0], 0) + 1
    target = "the pretraining model" if report.get("model") == "pretraining" else "the video encoder"
    lines = [f"Converted {len(report['converted'])} reference tensors into {target}."]
    if report.get("dropped"):
        lines.append(
            f"Dropped {len(report['dropped'])} fixed position tables, each equal to the recomputed one: "
            + ", ".join(report["dropped"])
        )
    if groups:
        lines.append("Left for `--model pretraining` (decoder, image branch, heads, prototypes, centres):")
        lines.extend(f"  {name}: {count} tensors" for name, count in sorted(groups.items()))
    return "\n".join(lines)


@dataclass
class ConvertArguments:
    """The `discovr-convert` options."""

    checkpoint_path: str = argument(help="Reference .pth: {'model': ...} or a training state.")
    output_dir: str = argument(help="Directory to write the converted model to.")
    reference_config: str | None = argument(
        None,
        help="JSON with the reference model's keyword arguments (img_size, num_frames, encoder_num_heads, ...), as in "
        "shared/reference/tiny/reference_config.json. Overrides the checkpoint's own `args`.",
    )
    model: Literal["encoder", "pretraining"] = argument(
        "encoder",
        help="`encoder`: one video encoder as a DiscovrModel. `pretraining`: every tensor of the checkpoint in a "
        "DiscovrForPreTraining, to resume or inspect pretraining.",
    )
    encoder: Literal["teacher", "student"] = argument(
        "teacher",
        help="Which video encoder to export: the EMA teacher (the usual choice for downstream use) or the student.",
    )
    num_attention_heads: int | None = argument(
        None, help="Encoder head count (12 for ViT-B); not in tensor shapes."
    )


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        ConvertArguments,
        prog="discovr-convert",
        description="Convert a published DISCOVR checkpoint (e.g. DISCOVR_399_Adult_Pediatric) into a Transformers "
        "model directory loadable with AutoModel.from_pretrained.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> int:
        _, report = convert_checkpoint(
            args.checkpoint_path, args.output_dir, args.reference_config, args.encoder, args.num_attention_heads,
            args.model,
        )
        logger.info("%s\nSaved to %s", summarize(report), args.output_dir)
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
