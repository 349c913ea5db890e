"""The converter reproduces the published video encoder exactly (sizes read from the fixture)."""

import fractions
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from discovr import DiscovrModel
from discovr.convert_discovr_original_to_hf import CheckpointConversionError, convert_checkpoint, main

ATOL = 1e-5


def convert(reference, encoder="teacher", source="checkpoint"):
    if source == "checkpoint":
        return convert_checkpoint(reference.checkpoint, reference_config=reference.config_path, encoder=encoder)
    # The training-state variant converts from its own `args` plus the head count, which no shape reveals.
    return convert_checkpoint(
        reference.training_state, encoder=encoder, num_attention_heads=reference.config["encoder_num_heads"]
    )


def test_config_sizes_come_from_the_checkpoint(reference):
    model, _ = convert(reference)
    cfg = reference.config
    assert model.config.hidden_size == cfg["encoder_embed_dim"]
    assert model.config.num_hidden_layers == cfg["encoder_depth"]
    assert model.config.num_attention_heads == cfg["encoder_num_heads"]
    assert model.config.image_size == cfg["img_size"] and model.config.num_frames == cfg["num_frames"]
    assert model.config.tubelet_size == cfg["tubelet_size"] and model.config.patch_size == cfg["patch_size"]
    assert model.config.layer_norm_eps == cfg["layer_norm_eps_video"]


@pytest.mark.parametrize("source", ["checkpoint", "training_state"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_encoder_parity(reference, source, attn_implementation):
    student, _ = convert(reference, "student", source)
    teacher, _ = convert(reference, "teacher", source)
    mask = reference.inputs["global_mask"]
    with torch.no_grad():
        for model in (student, teacher):
            model.set_attn_implementation(attn_implementation)
        full = student(reference.pixel_values).last_hidden_state
        masked = student(reference.pixel_values, bool_masked_pos=mask).last_hidden_state
        teacher_full = teacher(reference.pixel_values).last_hidden_state
    torch.testing.assert_close(full, reference.expected["video_encoder_full"], atol=ATOL, rtol=0)
    torch.testing.assert_close(masked, reference.expected["video_encoder_masked"], atol=ATOL, rtol=0)
    torch.testing.assert_close(teacher_full, reference.expected["video_teacher_full"], atol=ATOL, rtol=0)


def test_student_and_teacher_differ(reference):
    student, _ = convert(reference, "student")
    teacher, _ = convert(reference, "teacher")
    with torch.no_grad():
        assert not torch.allclose(student(reference.pixel_values)[0], teacher(reference.pixel_values)[0], atol=1e-3)


def test_cli_writes_a_loadable_model(reference, tmp_path):
    out = tmp_path / "converted"
    assert main([
        "--checkpoint_path", str(reference.checkpoint), "--output_dir", str(out),
        "--reference_config", str(reference.config_path), "--encoder", "teacher",
    ]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model, loading_info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert isinstance(model, DiscovrModel)
    assert all(not v for v in loading_info.values()), loading_info
    with torch.no_grad():
        output = model.eval()(reference.pixel_values).last_hidden_state
    torch.testing.assert_close(output, reference.expected["video_teacher_full"], atol=ATOL, rtol=0)


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "discovr.convert_discovr_original_to_hf", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in ("--checkpoint_path", "--output_dir", "--reference_config", "--encoder", "--num_attention_heads"):
        assert flag in result.stdout


def test_head_count_is_never_guessed(reference):
    with pytest.raises(CheckpointConversionError, match="--num_attention_heads"):
        convert_checkpoint(reference.training_state)


def test_truncated_checkpoint(reference, tmp_path):
    truncated = tmp_path / "truncated.pth"
    data = reference.checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointConversionError, match="truncated.pth"):
        convert_checkpoint(truncated, reference_config=reference.config_path)


def test_not_a_checkpoint(tmp_path, reference):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointConversionError, match="notes.txt"):
        convert_checkpoint(text, reference_config=reference.config_path)
    with pytest.raises(CheckpointConversionError, match="does not exist"):
        convert_checkpoint(tmp_path / "missing.pth", reference_config=reference.config_path)


def test_arbitrary_pickles_are_refused(tmp_path, reference):
    path = tmp_path / "pickled.pth"
    # Fraction is importable, so an unsafe load would succeed: only the weights_only allow-list stops it.
    torch.save({"model": {}, "args": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointConversionError, match="pickled.pth") as caught:
        convert_checkpoint(path, reference_config=reference.config_path)
    message = str(caught.value)
    assert "fractions.Fraction" in message
    # torch's advice to retry an untrusted file with weights_only=False must not reach the user.
    assert "weights_only" not in message and "trust" not in message


def _edited_checkpoint(reference, tmp_path, edit) -> Path:
    state = torch.load(reference.checkpoint, weights_only=True)
    edit(state["model"])
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def test_unknown_keys_are_listed(reference, tmp_path):
    def add_unknown(sd):
        sd["encoder.blocks.0.attn.rel_pos_bias"] = torch.zeros(3)
        sd["ema_model.something"] = torch.zeros(1)

    path = _edited_checkpoint(reference, tmp_path, add_unknown)
    with pytest.raises(CheckpointConversionError, match="ema_model.something"):
        convert_checkpoint(path, reference_config=reference.config_path)

    path = _edited_checkpoint(reference, tmp_path, lambda sd: sd.__setitem__("encoder.extra", torch.zeros(1)))
    with pytest.raises(CheckpointConversionError, match="encoder.extra"):
        convert_checkpoint(path, reference_config=reference.config_path, encoder="student")


def test_missing_and_misshaped_keys_are_listed(reference, tmp_path):
    last = reference.config["encoder_depth"] - 1
    missing_key = f"video_teacher.blocks.{last}.mlp.fc2.bias"
    path = _edited_checkpoint(reference, tmp_path, lambda sd: sd.pop(missing_key))
    with pytest.raises(CheckpointConversionError, match=rf"encoder\.layer\.{last}\.mlp\.fc2\.bias"):
        convert_checkpoint(path, reference_config=reference.config_path)

    def reshape(sd):
        sd["video_teacher.norm.weight"] = torch.zeros(sd["video_teacher.norm.weight"].shape[0] + 1)

    path = _edited_checkpoint(reference, tmp_path, reshape)
    with pytest.raises(CheckpointConversionError, match="mis-shaped.*layernorm.weight"):
        convert_checkpoint(path, reference_config=reference.config_path)


def test_learned_position_table_is_refused(reference, tmp_path):
    def perturb(sd):
        sd["video_teacher.pos_embed"] = sd["video_teacher.pos_embed"] + 0.1

    path = _edited_checkpoint(reference, tmp_path, perturb)
    with pytest.raises(CheckpointConversionError, match="sin-cos"):
        convert_checkpoint(path, reference_config=reference.config_path)
