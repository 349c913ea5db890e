"""Pretraining health metrics (`discovr.training.health`) and the collapse warning."""

import logging
import math

import pytest
import torch

from discovr import DiscovrConfig
from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training.health import (
    CollapseMonitor,
    code_usage,
    encoder_rankme,
    feature_std,
    rankme,
    step_health,
    teacher_entropy_fraction,
)

from discovr_testing import tiny_config_kwargs


def test_teacher_entropy_is_one_for_uniform_and_zero_for_one_hot_targets():
    assert teacher_entropy_fraction(torch.full((5, 64), 1 / 64)) == pytest.approx(1.0)
    assert teacher_entropy_fraction(torch.eye(64)[:5]) == pytest.approx(0.0, abs=1e-6)
    # Half the mass on each of two outputs: ln 2 / ln 64 = 1/6.
    two_hot = torch.zeros(3, 64)
    two_hot[:, :2] = 0.5
    assert teacher_entropy_fraction(two_hot) == pytest.approx(1 / 6)


def test_code_usage_counts_prototypes_and_their_perplexity():
    codes = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]])
    assert code_usage(codes, num_prototypes=10) == (4, pytest.approx(4.0))
    used, perplexity = code_usage(torch.tensor([5, 5, 5, 5, 5, 5, 5, 9]), num_prototypes=10)
    assert used == 2
    expected = math.exp(-(7 / 8 * math.log(7 / 8) + 1 / 8 * math.log(1 / 8)))
    assert perplexity == pytest.approx(expected)


def test_feature_std_is_zero_for_identical_rows_and_scale_free():
    row = torch.randn(1, 32)
    assert feature_std(row.repeat(8, 1)) == pytest.approx(0.0, abs=1e-7)
    features = torch.randn(16, 32)
    assert feature_std(features) > 0.1
    assert feature_std(features * 1000) == pytest.approx(feature_std(features))
    assert math.isnan(feature_std(features[:1]))


def test_rankme_counts_the_effective_dimensions():
    assert rankme(torch.eye(8) * 3) == pytest.approx(8.0, rel=1e-3)
    line = torch.randn(20, 1) @ torch.randn(1, 16)
    assert rankme(line) == pytest.approx(1.0, abs=1e-3)
    assert 1.0 < rankme(torch.randn(64, 16)) < 16.0


def test_step_health_from_a_real_forward():
    torch.manual_seed(0)
    config = DiscovrConfig(**tiny_config_kwargs())
    model = DiscovrForPreTraining(config).eval()
    pixel_values = torch.randn(3, config.num_frames, 3, config.image_size, config.image_size)
    with torch.no_grad():
        outputs = model(pixel_values, generator=torch.Generator().manual_seed(0))
    health = step_health(outputs, config.num_prototypes)
    assert set(health) == {
        "video_teacher_entropy", "image_teacher_entropy", "scd_codes_used", "scd_code_perplexity",
        "video_student_cls_std", "video_teacher_cls_std",
    }
    for key in ("video_teacher_entropy", "image_teacher_entropy"):
        assert 0.0 <= health[key] <= 1.0 + 1e-6
    num_tokens = outputs.scd_codes.numel()
    assert 1 <= health["scd_codes_used"] <= min(config.num_prototypes, num_tokens)
    assert 1.0 <= health["scd_code_perplexity"] <= health["scd_codes_used"] + 1e-4
    assert health["video_teacher_cls_std"] > 0

    rank = encoder_rankme(model.video_teacher, pixel_values, batch_size=2)
    assert 1.0 <= rank <= 3.0
    assert not model.video_teacher.training or model.training  # the encoder's mode is restored


def monitor_losses(value):
    return {"video": value, "image": value}


def test_collapse_warning_names_the_branch_once_after_warmup(caplog):
    plateau = math.log(512)
    monitor = CollapseMonitor(dino_out_dim=512, warmup_steps=100, patience=3)
    with caplog.at_level(logging.WARNING, logger="discovr.training.health"):
        # During warm-up a plateau is expected and never warned about.
        for step in (20, 40, 60, 80):
            assert monitor.update(step, monitor_losses(plateau)) == []
        # After warm-up: a learning image branch, a collapsed video branch.
        warned = []
        for step in (120, 140, 160, 180, 200):
            warned += monitor.update(step, {"video": plateau * 1.004, "image": plateau * 0.9})
    assert warned == ["video"]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "video DINO loss" in messages[0] and "ln(dino_out_dim) = 6.238" in messages[0]
    assert "since step 120" in messages[0]


def test_collapse_warning_needs_consecutive_plateau_steps(caplog):
    plateau = math.log(64)
    monitor = CollapseMonitor(dino_out_dim=64, warmup_steps=0, patience=3)
    with caplog.at_level(logging.WARNING, logger="discovr.training.health"):
        for step, loss in enumerate([plateau, plateau, 3.0, plateau, plateau, 3.0, plateau]):
            assert monitor.update(step, {"image": loss}) == []
    assert not caplog.records
    assert monitor.update(7, {"image": plateau}) == []
    assert monitor.update(8, {"image": plateau}) == ["image"]
    assert monitor.update(9, {"image": plateau}) == []  # once per branch


def test_collapse_warning_names_only_real_remedies(caplog):
    """Every flag and config field the warning suggests exists (an earlier text named a flag that did not)."""
    import re

    from discovr.training.pretrain import build_parser

    monitor = CollapseMonitor(dino_out_dim=64, warmup_steps=0, patience=1)
    with caplog.at_level(logging.WARNING, logger="discovr.training.health"):
        monitor.update(1, {"video": math.log(64)})
    message = caplog.records[0].getMessage()
    flags = re.findall(r"--[a-z_]+", message)
    fields = re.findall(r"\(([a-z]+_[a-z_]+)\)", message)
    assert flags and fields
    parser_flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert set(flags) <= parser_flags
    config = DiscovrConfig()
    assert all(hasattr(config, name) for name in fields)
