"""Mixed precision keeps DISCOVR's teachers and centres in float32, so their slow EMA still moves; DeepSpeed and FSDP,
which would break that or are untested, are refused.

bf16 runs through Accelerate, as `discovr-pretrain` runs it. Accelerate enables fp16 only on GPU-like devices (on CPU
its fp16 is plain float32), so fp16 runs what Accelerate runs on a GPU: `torch.autocast(float16)` and a GradScaler.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrMasks
from discovr.cli import InputError
from discovr.convert_discovr_original_to_hf import convert_checkpoint
from discovr.training.pretrain import UNSUPPORTED_DISTRIBUTED_TYPES, check_distributed_type, check_mixed_precision

from discovr_testing import tiny_config_kwargs

# Published late-training teacher momentum: each step moves a teacher by 0.04% of its gap to the student.
MOMENTUM = 0.9996
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Tolerance of each loss term against float32 on the fixture model. bf16 keeps 8 significant bits, fp16 11; the
# losses are soft-max cross-entropies computed from half-precision matmuls.
LOSS_RTOL = {"bf16": 2e-2, "fp16": 5e-3}


def fixture_masks(reference, config: DiscovrConfig) -> DiscovrMasks:
    global_mask = reference.inputs["global_mask"]
    batch_size = global_mask.shape[0]
    return DiscovrMasks(
        global_view=global_mask,
        local_views=global_mask.unsqueeze(1).repeat(1, config.num_local_views, 1),
        image_views=reference.inputs["image_frames_mask"].view(batch_size, config.num_frames, 1, -1),
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_losses_agree_with_fp32_on_the_fixture_model(reference, precision):
    model, _ = convert_checkpoint(reference.checkpoint, reference_config=reference.config_path, model="pretraining")
    masks = fixture_masks(reference, model.config)
    with torch.no_grad():
        full = model(reference.pixel_values, masks=masks, teacher_temperature=0.05)
        with torch.autocast("cpu", dtype=HALF_DTYPES[precision]):
            half = model(reference.pixel_values, masks=masks, teacher_temperature=0.05)
    for name in ("loss", "scd_loss", "video_dino_loss", "image_dino_loss"):
        torch.testing.assert_close(getattr(half, name).float(), getattr(full, name), rtol=LOSS_RTOL[precision], atol=0)
        assert getattr(half, name) != getattr(full, name)  # autocast really changed the arithmetic
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state, fixed by the first `Accelerator`; this test needs its own precision.
    Accelerate's own test cases reset it the same way."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def half_precision_training_step(config: DiscovrConfig, precision: str) -> tuple[DiscovrForPreTraining, object]:
    """One optimiser step of a fresh model under `precision`, set up as the pretraining script's step is."""
    torch.manual_seed(0)
    pixel_values = torch.randn(2, config.num_frames, config.num_channels, config.image_size, config.image_size)
    model = DiscovrForPreTraining(config)
    masks = model.mask_generator(2, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    matmul_dtypes = []
    hook = model.discovr.encoder.layer[0].attention.query.register_forward_hook(
        lambda module, inputs, output: matmul_dtypes.append(output.dtype)
    )
    if precision == "bf16":
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        prepared, optimizer = accelerator.prepare(model, optimizer)
        outputs = prepared(pixel_values=pixel_values, masks=masks, teacher_temperature=0.04)
        accelerator.backward(outputs.loss)
        optimizer.step()
    else:
        # At initialisation some gradients reach ~4e3 unscaled, so any larger scale overflows float16 and the
        # GradScaler would skip this one step (as it skips the first steps of a real run); checked below.
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
        with torch.autocast("cpu", dtype=torch.float16):
            outputs = model(pixel_values=pixel_values, masks=masks, teacher_temperature=0.04)
        scaler.scale(outputs.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        assert scaler.get_scale() == 1.0, "the GradScaler skipped the step"
    hook.remove()
    assert set(matmul_dtypes) == {HALF_DTYPES[precision]}  # the step really ran under autocast
    return model, outputs


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_teachers_and_centres_stay_float32_and_move_under_half_precision_training(fresh_accelerator_state, precision):
    unwrapped, outputs = half_precision_training_step(DiscovrConfig(**tiny_config_kwargs()), precision)

    pairs = list(unwrapped.teacher_student_pairs())
    teachers = [p.detach().clone() for teacher, _ in pairs for p in teacher.parameters()]
    students = [p.detach().clone() for _, student in pairs for p in student.parameters()]
    unwrapped.update_teachers(MOMENTUM)
    unwrapped.update_centers(outputs.video_teacher_mean, outputs.image_teacher_mean)

    updated = [p for teacher, _ in pairs for p in teacher.parameters()]
    assert all(p.dtype == torch.float32 for p in updated)
    assert unwrapped.video_center.dtype == unwrapped.image_center.dtype == torch.float32
    gaps, moves = [], []
    for before, student, after in zip(teachers, students, updated, strict=True):
        # The EMA in float32, to float32 rounding: teacher <- m * teacher + (1 - m) * student.
        torch.testing.assert_close(after, before * MOMENTUM + student * (1 - MOMENTUM), rtol=0, atol=1e-7)
        gaps.append((student - before).flatten())
        moves.append((after - before).flatten())
    gap, move = torch.cat(gaps), torch.cat(moves)
    # Every teacher weight whose student moved by the step moved by (1 - m) of the gap, none rounded away.
    stepped = gap.abs() > 1e-4
    assert stepped.sum() > 0.5 * gap.numel()
    torch.testing.assert_close(move[stepped] / gap[stepped], torch.full_like(move[stepped], 1 - MOMENTUM), rtol=2e-2, atol=0)


@pytest.mark.parametrize("distributed_type", sorted(UNSUPPORTED_DISTRIBUTED_TYPES, key=str))
def test_deepspeed_and_fsdp_are_refused_with_the_reason(distributed_type):
    with pytest.raises(InputError, match="refused: .*docs/scaling.md"):
        check_distributed_type(distributed_type)


def test_supported_distributed_types_pass():
    for distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        check_distributed_type(distributed_type, environ={})


@pytest.mark.parametrize("flag, refused", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_requested_fsdp_or_deepspeed_is_refused_where_accelerate_would_run_ddp(flag, refused):
    # Without a GPU Accelerate ignores these launch flags and runs MULTI_CPU: the run would not be what was asked.
    with pytest.raises(InputError, match=f"^{refused} is refused"):
        check_distributed_type(DistributedType.MULTI_CPU, environ={flag: "true"})


def test_fp16_on_a_cpu_is_refused_rather_than_run_as_float32():
    with pytest.raises(InputError, match="fp16 has no effect on a CPU"):
        check_mixed_precision("fp16", "cpu")
    for precision, device in (("bf16", "cpu"), ("no", "cpu"), ("fp16", "cuda")):
        check_mixed_precision(precision, device)


@pytest.mark.parametrize("case", ["fp16", "fsdp"])
def test_the_script_stops_with_one_line(case, fresh_accelerator_state, synthetic_echonet, tiny_config_file, tmp_path,
                                        monkeypatch, capsys):
    from discovr.training.pretrain import main

    extra = ["--mixed_precision", "fp16"] if case == "fp16" else []
    if case == "fsdp":
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    argv = ["--data_root", str(synthetic_echonet), "--config", str(tiny_config_file), "--output_dir",
            str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("discovr-pretrain: error: ")
    assert ("fp16 has no effect on a CPU" if case == "fp16" else "FSDP is refused") in error[0]
    assert not (tmp_path / "out").exists()
