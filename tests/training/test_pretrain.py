"""`discovr-pretrain`: schedules, parameter groups, augmentation, end to end, NaN stop, kill and resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from discovr import DiscovrConfig
from discovr.cli import InputError
from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training import pretrain as pretrain_module
from discovr.training.pretrain import (
    TrainingDivergedError,
    build_optimizer,
    build_parser,
    latest_checkpoint,
    main,
    parameter_groups,
    pretrain,
)
from discovr.data.transforms import multi_scale_crop_box
from discovr.training.schedules import PretrainSchedules

from discovr_testing import tiny_config_kwargs
from pretrain_launch import pretrain_args, read_log

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schedules_follow_the_configured_length():
    schedules = PretrainSchedules(steps_per_epoch=10, epochs=20, lr=1e-3, min_lr=1e-6, warmup_epochs=2,
                                  warmup_teacher_temperature_epochs=5)
    assert schedules.total_steps == 200
    assert schedules.learning_rate(0) == 0.0
    assert schedules.learning_rate(10) == pytest.approx(0.5e-3)
    assert schedules.learning_rate(20) == pytest.approx(1e-3)
    assert schedules.learning_rate(110) == pytest.approx((1e-3 + 1e-6) / 2)
    assert schedules.learning_rate(200) == pytest.approx(1e-6)
    lrs = [schedules.learning_rate(s) for s in range(20, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert schedules.teacher_momentum(0) == pytest.approx(0.996)
    assert schedules.teacher_momentum(100) == pytest.approx(0.998)
    assert schedules.teacher_momentum(200) == pytest.approx(1.0)
    # Teacher temperature: 0.04 -> 0.07 over 5 of the configured epochs (not a hard-coded 400-epoch run).
    assert schedules.teacher_temp(0) == pytest.approx(0.04)
    assert schedules.teacher_temp(25) == pytest.approx(0.055)
    assert schedules.teacher_temp(50) == schedules.teacher_temp(199) == pytest.approx(0.07)


def test_parameter_groups_exclude_teachers_and_decay_only_weights():
    model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    decay, no_decay = parameter_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable and not decay_names & no_decay_names
    assert not any(n.startswith(("video_teacher.", "image_teacher.")) for n in trainable)
    for name in ("prototypes", "mask_token", "discovr.embeddings.cls_token"):
        assert name in no_decay_names
    assert not any(n.endswith(".bias") or "norm" in n for n in decay_names)
    assert "discovr.encoder.layer.0.attention.query.weight" in decay_names


def test_fused_optimizer_matches_the_per_tensor_adamw():
    """`build_optimizer` uses PyTorch's fused AdamW on the CPU; it must take the steps the default one takes, with
    the per-group learning rate and weight decay the training loop sets every step."""
    torch.manual_seed(0)
    fused_model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    looped_model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    looped_model.load_state_dict(fused_model.state_dict())
    initial = {name: param.detach().clone() for name, param in fused_model.named_parameters()}
    fused = build_optimizer(fused_model, lr=1e-3, weight_decay=0.05, device=torch.device("cpu"))
    looped = torch.optim.AdamW(parameter_groups(looped_model), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05,
                               foreach=False)
    assert fused.defaults["fused"] and not looped.defaults["fused"]
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        for optimizer in (fused, looped):
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * (step + 1) / 5
                if group["apply_weight_decay"]:
                    group["weight_decay"] = 0.05 + 0.01 * step
        gradients = [torch.randn(p.shape, generator=generator) for p in fused_model.parameters() if p.requires_grad]
        for model in (fused_model, looped_model):
            for param, gradient in zip((p for p in model.parameters() if p.requires_grad), gradients, strict=True):
                param.grad = gradient.clone()
        fused.step()
        looped.step()
    for (name, actual), expected in zip(fused_model.named_parameters(), looped_model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7, msg=name)
        if actual.requires_grad:  # five steps of about 1e-3 each: far above the tolerance
            assert not torch.allclose(actual, initial[name], rtol=0, atol=1e-4), name


def test_multi_scale_crop_stays_inside_the_frame():
    generator = torch.Generator().manual_seed(0)
    sides = set()
    for _ in range(200):
        top, left, crop_h, crop_w = multi_scale_crop_box(112, 112, 64, generator)
        assert 0 <= top and top + crop_h <= 112 and 0 <= left and left + crop_w <= 112
        sides.add((crop_h, crop_w))
    # Scales 1, .875, .75, .66 of 112, at most one step apart between height and width.
    assert sides <= {(h, w) for h in (112, 98, 84, 73) for w in (112, 98, 84, 73)}
    assert (112, 73) not in sides and len(sides) > 4


def test_clips_per_video_repeats_every_video_with_its_own_clip(synthetic_echonet, monkeypatch):
    from discovr import DiscovrVideoProcessor
    from discovr.training.pretrain_data import PretrainingClips, load_pretraining_videos

    videos = load_pretraining_videos("echonet_dynamic", synthetic_echonet)[:3]
    processor = DiscovrVideoProcessor(num_frames=4, frame_stride=2, size={"height": 32, "width": 32})
    once = PretrainingClips(videos, processor, seed=0)
    repeated = PretrainingClips(videos, processor, seed=0, clips_per_video=3)
    assert len(repeated) == 3 * len(once) == 9

    decoded = []
    original = type(processor).fetch_videos
    monkeypatch.setattr(type(processor), "fetch_videos", lambda self, path, *a, **k: (decoded.append(path),
                                                                                       original(self, path, *a, **k))[1])
    clips = [repeated[i]["pixel_values"] for i in (0, 3, 6)]
    assert decoded == [videos[0]] * 3
    # Each repeat has its own start and crop; the first is the clip an un-repeated epoch draws.
    assert not torch.equal(clips[0], clips[1]) and not torch.equal(clips[1], clips[2])
    assert torch.equal(clips[0], once[0]["pixel_values"])
    with pytest.raises(ValueError, match="clips_per_video"):
        PretrainingClips(videos, processor, clips_per_video=0)


def test_recipes_fill_unset_flags_and_flags_override_them():
    from discovr.training.pretrain_config import resolve_recipe
    from discovr.training.presets import RECIPES

    base = ["--data_root", "d", "--output_dir", "o"]
    tiny = resolve_recipe(build_parser().parse([*base, "--preset", "tiny"]))
    assert tiny.recipe == "tiny" and tiny.clips_per_video == RECIPES["tiny"].clips_per_video
    assert tiny.teacher_temperature == RECIPES["tiny"].teacher_temperature
    overridden = resolve_recipe(build_parser().parse([*base, "--preset", "tiny", "--clips_per_video", "1",
                                                      "--momentum_teacher", "0.996"]))
    assert overridden.clips_per_video == 1 and overridden.momentum_teacher == 0.996
    # A config file takes the published recipe unless one is named.
    published = resolve_recipe(build_parser().parse([*base, "--config", "c.json"]))
    assert published.recipe == "base" and published.base_lr == 1.5e-4 and published.clips_per_video == 1


def test_recipe_options_are_exactly_the_recipe_fields():
    """Every recipe field is an option that defaults to "the recipe's", and no other option does."""
    from discovr.training.presets import PretrainRecipe

    parser = build_parser()
    from_recipe = {action.dest for action in parser._actions if getattr(action, "default_help", None) == "the recipe's"}
    assert from_recipe == set(PretrainRecipe.field_names())


def test_model_is_given_exactly_once(capsys):
    for model in ([], ["--preset", "tiny", "--config", "c.json"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse(["--data_root", "d", "--output_dir", "o", *model])
        assert exit_info.value.code == 2
        assert "discovr-pretrain: error: give exactly one of --preset and --config" in capsys.readouterr().err


def test_help_is_complete():
    text = build_parser().format_help()
    for flag in ("--data_format", "--preset", "--config", "--mixed_precision", "--gradient_accumulation_steps",
                 "--max_grad_norm", "--gradient_checkpointing", "--save_steps", "--resume_from_checkpoint"):
        assert flag in text


def test_end_to_end_then_resume(synthetic_echonet, tiny_config_file, tmp_path):
    out = tmp_path / "run"
    args = build_parser().parse(pretrain_args(synthetic_echonet, tiny_config_file, out, "--save_steps", "3",
                                                   "--max_steps", "5"))
    summary = pretrain(args)
    assert summary["global_step"] == 5
    log = read_log(out)
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5]
    for row in log:
        for key in ("loss", "loss_scd", "loss_video_dino", "loss_image_dino", "loss_scd_swapped"):
            assert math.isfinite(row[key])
        # Training health at every logging step (the RankMe clips come from the validation split).
        assert 0 <= row["video_teacher_entropy"] <= 1 + 1e-6 and 0 <= row["image_teacher_entropy"] <= 1 + 1e-6
        assert row["scd_codes_used"] >= 1 and row["scd_code_perplexity"] >= 1
        assert row["video_student_cls_std"] > 0 and row["video_teacher_cls_std"] > 0
        assert row["video_teacher_rankme"] >= 1
    # Warmup: the lr and the teacher temperature rise, the teacher momentum starts its cosine at 0.996.
    assert log[0]["lr"] == 0.0 and log[-1]["lr"] > log[1]["lr"] > 0
    assert log[0]["teacher_temperature"] == pytest.approx(0.04) and log[-1]["teacher_temperature"] > 0.04
    assert log[0]["teacher_momentum"] == pytest.approx(0.996) and log[-1]["teacher_momentum"] > 0.996
    assert (out / "checkpoints" / "step_3" / "training_state.json").is_file()

    # The exports load through the Auto classes with their processor.
    from transformers import AutoModel, AutoModelForPreTraining, AutoVideoProcessor

    assert type(AutoModel.from_pretrained(out / "encoder")).__name__ == "DiscovrModel"
    assert type(AutoModelForPreTraining.from_pretrained(out / "pretrained")).__name__ == "DiscovrForPreTraining"
    assert AutoVideoProcessor.from_pretrained(out / "encoder").num_frames == tiny_config_kwargs()["num_frames"]
    card = (out / "encoder" / "README.md").read_text()
    assert "M parameters" in card and "the teacher" in card and str(tmp_path) not in card

    # Resume from the step-3 checkpoint: the counters continue, the schedules pick up where they were, and the
    # log holds every step once (the first run's steps 4 and 5 are replaced by the resumed run's).
    before = read_log(out)
    resumed = build_parser().parse(pretrain_args(
        synthetic_echonet, tiny_config_file, tmp_path / "run", "--max_steps", "6",
        "--resume_from_checkpoint", str(out / "checkpoints" / "step_3"),
    ))
    assert pretrain(resumed)["global_step"] == 6
    log = read_log(out)
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    # Another batch layout would mis-position the data: refused, naming both layouts.
    with pytest.raises(InputError, match="1 processes x batch 2 x accumulation 1.*this run has 1 x 3 x 1"):
        pretrain(build_parser().parse(pretrain_args(
            synthetic_echonet, tiny_config_file, out, "--per_device_batch_size", "3",
            "--resume_from_checkpoint", str(out / "checkpoints" / "step_3"),
        )))
    assert log[:3] == before[:3]
    assert log[3]["lr"] == pytest.approx(before[3]["lr"])


def test_losses_decrease_on_a_fixed_batch():
    """Repeated steps on one batch (fixed masks) with the same optimiser set-up as the script lower the loss."""
    torch.manual_seed(0)
    config = DiscovrConfig(**tiny_config_kwargs())
    model = DiscovrForPreTraining(config).train()
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    pixel_values = torch.randn(2, config.num_frames, 3, config.image_size, config.image_size)
    masks = model.mask_generator(2, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        model.normalize_prototypes()
        outputs = model(pixel_values, masks=masks, teacher_temperature=0.04)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_teachers(0.996)
        model.update_centers(outputs.video_teacher_mean, outputs.image_teacher_mean)
        losses.append(outputs.loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_accumulated_steps_report_the_swapped_loss_from_their_last_micro_batch_only(
    synthetic_echonet, tiny_config_file, tmp_path, monkeypatch
):
    flags = []
    original = DiscovrForPreTraining.forward

    def recording_forward(self, *args, **kwargs):
        flags.append(kwargs.get("return_scd_swapped_loss"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DiscovrForPreTraining, "forward", recording_forward)
    out = tmp_path / "accumulated"
    pretrain(build_parser().parse(pretrain_args(
        synthetic_echonet, tiny_config_file, out, "--gradient_accumulation_steps", "2", "--max_steps", "2",
        "--health_clips", "0",
    )))
    # Two optimiser steps of two micro-batches, both logged: the second Sinkhorn runs once per step.
    assert flags == [False, True, False, True]
    log = read_log(out)
    assert [row["step"] for row in log] == [1, 2]
    assert all(math.isfinite(row["loss_scd_swapped"]) for row in log)


def test_nan_loss_stops_with_the_step(synthetic_echonet, tiny_config_file, tmp_path, monkeypatch, caplog):
    original = pretrain_module.PretrainingClips.__getitem__

    def poisoned(self, index):
        item = original(self, index)
        item["pixel_values"] = torch.full_like(item["pixel_values"], float("nan"))
        return item

    monkeypatch.setattr(pretrain_module.PretrainingClips, "__getitem__", poisoned)
    args = build_parser().parse(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "nan"))
    with pytest.raises(TrainingDivergedError, match="optimiser step 0"):
        pretrain(args)
    assert main(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "nan2")) == 3
    assert "stopping before the update" in caplog.text
    assert not (tmp_path / "nan" / "pretrained").exists()


def test_unwritable_output_dir_fails_before_training(synthetic_echonet, tiny_config_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="not writable"):
        pretrain(build_parser().parse(pretrain_args(synthetic_echonet, tiny_config_file, blocker / "out")))


def test_full_disk_fails_before_training(synthetic_echonet, tiny_config_file, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=1024))
    with pytest.raises(InputError, match="GiB free"):
        pretrain(build_parser().parse(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "out")))


def _run_script(args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "discovr.training.pretrain", *args], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_run_resumes_to_the_same_weights(synthetic_echonet, tiny_config_file, tmp_path):
    common = ["--deterministic", "--max_steps", "12", "--save_steps", "3"]
    uninterrupted = _run_script(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "a", *common))
    _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-3000:]

    victim = _run_script(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "b", *common))
    first_checkpoint = tmp_path / "b" / "checkpoints" / "step_3" / "training_state.json"
    deadline = time.monotonic() + 600
    while not first_checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "b" / "pretrained").exists()

    # The checkpoint the resume will pick: the kill may land while a later one is still being written.
    latest = latest_checkpoint(tmp_path / "b")
    state = json.loads((latest / "training_state.json").read_text())
    assert state["batches_in_epoch"] > 0, "the kill should land mid-epoch"
    resumed = _run_script(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "b", *common,
                                        "--resume_from_checkpoint", "latest"))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]

    expected = load_file(tmp_path / "a" / "pretrained" / "model.safetensors")
    actual = load_file(tmp_path / "b" / "pretrained" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
