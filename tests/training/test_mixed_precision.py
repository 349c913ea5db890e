"""Mixed precision keeps DISCOVR's teachers and centres in float32, so their slow EMA still moves; DeepSpeed and FSDP,
which would break that or are untested, are refused."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrMasks
from discovr.cli import InputError
from discovr.convert_discovr_original_to_hf import convert_checkpoint
from discovr.training.pretrain import UNSUPPORTED_DISTRIBUTED_TYPES, check_distributed_type

from discovr_testing import tiny_config_kwargs

# Published late-training teacher momentum: each step moves a teacher by 0.04% of its gap to the student.
MOMENTUM = 0.9996
# bf16 keeps 8 significant bits; the losses are soft-max cross-entropies computed from bf16 matmuls.
BF16_LOSS_RTOL = 2e-2


def fixture_masks(reference, config: DiscovrConfig) -> DiscovrMasks:
    global_mask = reference.inputs["global_mask"]
    batch_size = global_mask.shape[0]
    return DiscovrMasks(
        global_view=global_mask,
        local_views=global_mask.unsqueeze(1).repeat(1, config.num_local_views, 1),
        image_views=reference.inputs["image_frames_mask"].view(batch_size, config.num_frames, 1, -1),
    )


def test_bf16_autocast_losses_agree_with_fp32_on_the_fixture_model(reference):
    model, _ = convert_checkpoint(reference.checkpoint, reference_config=reference.config_path, model="pretraining")
    masks = fixture_masks(reference, model.config)
    with torch.no_grad():
        full = model(reference.pixel_values, masks=masks, teacher_temperature=0.05)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(reference.pixel_values, masks=masks, teacher_temperature=0.05)
    for name in ("loss", "scd_loss", "video_dino_loss", "image_dino_loss"):
        torch.testing.assert_close(getattr(half, name).float(), getattr(full, name), rtol=BF16_LOSS_RTOL, atol=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state, fixed by the first `Accelerator`; this test needs its own precision.
    Accelerate's own test cases reset it the same way."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_teachers_and_centres_stay_float32_and_move_under_bf16_training(fresh_accelerator_state):
    torch.manual_seed(0)
    config = DiscovrConfig(**tiny_config_kwargs())
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    model = DiscovrForPreTraining(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    pixel_values = torch.randn(2, config.num_frames, config.num_channels, config.image_size, config.image_size)
    masks = unwrapped.mask_generator(2, torch.Generator().manual_seed(0))
    matmul_dtypes = []
    hook = unwrapped.discovr.encoder.layer[0].attention.query.register_forward_hook(
        lambda module, inputs, output: matmul_dtypes.append(output.dtype)
    )
    outputs = model(pixel_values=pixel_values, masks=masks, teacher_temperature=0.04)
    hook.remove()
    assert set(matmul_dtypes) == {torch.bfloat16}  # the step really ran under bf16 autocast
    accelerator.backward(outputs.loss)
    optimizer.step()

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
        check_distributed_type(distributed_type)
