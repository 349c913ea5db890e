"""DiscovrForPreTraining: parity with the published implementation, loss properties, training-state methods.

Every size comes from the fixture's `reference_config.json` or from the model config, never from constants.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from discovr_testing import tiny_config_kwargs
from torch.nn import functional as F
from transformers import AutoModelForPreTraining

from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrMaskGenerator, DiscovrMasks
from discovr.convert_discovr_original_to_hf import convert_checkpoint, summarize
from discovr.losses_discovr import dino_cross_entropy, dino_teacher_targets, sinkhorn
from discovr.modeling_discovr import standardize_tokens, visible_positions

ATOL = 1e-5


@pytest.fixture(scope="module")
def converted(reference):
    return convert_checkpoint(reference.checkpoint, reference_config=reference.config_path, model="pretraining")


@pytest.fixture(scope="module")
def fixture_views(reference, converted):
    """The fixture's inputs as our modules take them: frames, visible positions and the mask counts."""
    model, _ = converted
    global_mask = reference.inputs["global_mask"]
    frames_mask = reference.inputs["image_frames_mask"]
    num_visible = int((~global_mask[0]).sum())
    num_image_visible = int((~frames_mask[0]).sum())
    return {
        "frames": reference.pixel_values.flatten(0, 1),
        "video_positions": visible_positions(global_mask, num_visible),
        "image_positions": visible_positions(frames_mask, num_image_visible).unsqueeze(1),
    }


def tiny_model(seed: int = 0, **overrides) -> DiscovrForPreTraining:
    torch.manual_seed(seed)
    return DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs(**overrides)))


def tiny_clips(config: DiscovrConfig, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=generator)


# ----------------------------------------------------------------------------------------------- conversion


def test_converter_accounts_for_every_reference_key(reference, converted):
    model, report = converted
    state_dict = torch.load(reference.checkpoint, weights_only=True)["model"]
    assert report["left"] == []
    assert set(report["converted"]) | set(report["dropped"]) == set(state_dict)
    assert all(key.endswith("pos_embed") for key in report["dropped"])
    assert "pretraining model" in summarize(report)
    # Tensors that only the pretraining model holds arrive unchanged, including the perturbed weight-norm gains.
    own = model.state_dict()
    for source, target in (
        ("prototypes", "prototypes"), ("mask_token", "mask_token"), ("video_center", "video_center"),
        ("image_center", "image_center"), ("encoder_to_decoder.weight", "encoder_to_decoder.weight"),
        ("image_dino_head.last_layer.weight_g", "image_student_head.last_layer.weight_g"),
        ("video_teacher_head.last_layer.weight_v", "video_teacher_head.last_layer.weight_v"),
        ("decoder.head.weight", "decoder.head.weight"),
    ):
        torch.testing.assert_close(own[target], state_dict[source], atol=0, rtol=0)


def test_converted_config_matches_fixture(reference, converted):
    model, _ = converted
    cfg = reference.config
    assert model.config.sinkhorn_epsilon == cfg["eps"]
    assert model.config.sinkhorn_iterations == cfg["sinkhorn_iterations"]
    assert model.config.num_prototypes == cfg["num_prototypes"]
    assert model.config.num_local_views == cfg["num_local_views"]
    assert model.config.decoder_hidden_size == cfg["decoder_embed_dim"]
    assert model.config.dino_out_dim == cfg["dino_out_dim"]
    assert model.config.image_layer_norm_eps == cfg["layer_norm_eps_image"]
    assert model.config.image_qkv_bias == cfg["image_branch_qkv_bias"]


def test_save_and_reload_keeps_every_tensor_and_frozen_teachers(converted, tmp_path):
    model, _ = converted
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(reloaded, DiscovrForPreTraining)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    # Non-persistent tables are recomputed on load.
    torch.testing.assert_close(reloaded.decoder.position_embeddings, model.decoder.position_embeddings)
    for teacher, student in reloaded.teacher_student_pairs():
        assert not any(p.requires_grad for p in teacher.parameters())
        assert all(p.requires_grad for p in student.parameters())


# --------------------------------------------------------------------------------------------------- parity


def test_image_branch_parity(reference, converted, fixture_views):
    model, _ = converted
    expected = reference.expected
    with torch.no_grad():
        teacher = model.image_teacher(fixture_views["frames"])
        student = model.image_student(fixture_views["frames"], fixture_views["image_positions"])
        teacher_head = model.image_teacher_head(teacher[:, 0])
        student_head = model.image_student_head(student[:, 0])
    torch.testing.assert_close(teacher, expected["image_teacher_full"], atol=ATOL, rtol=0)
    torch.testing.assert_close(student, expected["image_student_masked"], atol=ATOL, rtol=0)
    torch.testing.assert_close(teacher_head, expected["image_teacher_head"], atol=ATOL, rtol=0)
    torch.testing.assert_close(student_head, expected["image_student_head"], atol=ATOL, rtol=0)


def test_video_heads_parity(reference, converted, fixture_views):
    model, _ = converted
    expected = reference.expected
    with torch.no_grad():
        # The batched multi-view path, with one view per clip, is the reference's masked encoder.
        student = model.discovr(
            reference.pixel_values, visible_positions=fixture_views["video_positions"].unsqueeze(1)
        ).last_hidden_state
        teacher = model.video_teacher(reference.pixel_values).last_hidden_state
        student_head = model.video_student_head(student[:, 0])
        teacher_head = model.video_teacher_head(teacher[:, 0])
    torch.testing.assert_close(student, expected["video_encoder_masked"], atol=ATOL, rtol=0)
    torch.testing.assert_close(student_head, expected["video_student_head"], atol=ATOL, rtol=0)
    torch.testing.assert_close(teacher_head, expected["video_teacher_head"], atol=ATOL, rtol=0)


def test_decoder_parity_in_positional_order(reference, converted, fixture_views):
    model, _ = converted
    global_mask = reference.inputs["global_mask"]
    positions = fixture_views["video_positions"]
    with torch.no_grad():
        decoded = model.decode(reference.expected["video_encoder_masked"][:, 1:], positions)
    assert decoded.shape == (global_mask.shape[0], model.config.num_patches, reference.config["decoder_num_classes"])
    # The reference orders its rows [visible..., masked...], each in positional order.
    reference_order = global_mask.to(torch.int32).argsort(dim=1, stable=True)
    reordered = decoded.gather(1, reference_order.unsqueeze(-1).expand_as(decoded))
    torch.testing.assert_close(reordered, reference.expected["decoder_out_visible_then_masked"], atol=ATOL, rtol=0)


def test_patch_targets_parity(reference, converted):
    model, _ = converted
    expected = reference.expected
    teacher_patches = expected["image_teacher_full"][:, 1:]
    torch.testing.assert_close(
        standardize_tokens(teacher_patches), expected["image_teacher_patch_targets"], atol=ATOL, rtol=0
    )
    # SCD pairs token (t, h, w) with the first frame of tubelet t, at patch (h, w).
    batch_size = reference.config["batch"]
    targets = model.scd_targets(teacher_patches, batch_size)
    per_frame = expected["image_teacher_patch_targets"].view(
        batch_size, reference.config["num_frames"], -1, targets.shape[-1]
    )
    torch.testing.assert_close(
        targets, per_frame[:, :: reference.config["tubelet_size"]].flatten(1, 2), atol=ATOL, rtol=0
    )


def test_sinkhorn_parity(reference, converted):
    model, _ = converted
    q = sinkhorn(reference.expected["sinkhorn_scores"], model.config.sinkhorn_epsilon, model.config.sinkhorn_iterations)
    torch.testing.assert_close(q, reference.expected["sinkhorn_q"], atol=ATOL, rtol=0)


def test_forward_losses_match_reference_tensors(reference, converted):
    """The whole forward, fed the fixture's masks, agrees with losses recomputed from the reference tensors."""
    model, _ = converted
    config = model.config
    expected = reference.expected
    global_mask = reference.inputs["global_mask"]
    batch_size, views = global_mask.shape[0], config.num_local_views
    masks = DiscovrMasks(
        global_view=global_mask,
        local_views=global_mask.unsqueeze(1).repeat(1, views, 1),
        image_views=reference.inputs["image_frames_mask"].view(batch_size, config.num_frames, 1, -1),
    )
    with torch.no_grad():
        output = model(reference.pixel_values, masks=masks, teacher_temperature=0.05)

    prototypes = F.normalize(model.prototypes, dim=-1)
    order = global_mask.to(torch.int32).argsort(dim=1, stable=True)
    decoder_out = torch.empty_like(expected["decoder_out_visible_then_masked"]).scatter_(
        1, order.unsqueeze(-1).expand_as(expected["decoder_out_visible_then_masked"]),
        expected["decoder_out_visible_then_masked"],
    )
    logits = F.normalize(decoder_out, dim=-1) @ prototypes.t() / config.scd_temperature
    torch.testing.assert_close(output.scd_logits, logits, atol=1e-4, rtol=0)

    targets = model.scd_targets(expected["image_teacher_patch_targets"], batch_size)
    scores = F.normalize(targets, dim=-1) @ prototypes.t()
    codes = sinkhorn(scores.flatten(0, 1), config.sinkhorn_epsilon, config.sinkhorn_iterations).argmax(-1)
    assert torch.equal(output.scd_codes, codes.view(batch_size, -1))
    assert torch.equal(output.teacher_assignments, scores.argmax(-1))
    torch.testing.assert_close(output.scd_loss, F.cross_entropy(logits.flatten(0, 1), codes), atol=1e-5, rtol=0)

    video_targets = dino_teacher_targets(expected["video_teacher_head"], 0.05, center=model.video_center)
    image_targets = dino_teacher_targets(expected["image_teacher_head"], 0.05, center=model.image_center)
    video_dino = dino_cross_entropy(
        expected["video_student_head"].unsqueeze(1).repeat(1, views, 1), video_targets, config.dino_student_temperature
    )
    image_dino = dino_cross_entropy(
        expected["image_student_head"].unsqueeze(1), image_targets, config.dino_student_temperature
    )
    torch.testing.assert_close(output.video_dino_loss, video_dino, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.image_dino_loss, image_dino, atol=1e-5, rtol=0)
    total = (
        config.scd_loss_weight * output.scd_loss
        + config.video_dino_loss_weight * output.video_dino_loss
        + config.image_dino_loss_weight * output.image_dino_loss
    )
    torch.testing.assert_close(output.loss, total)
    torch.testing.assert_close(output.video_teacher_mean, expected["video_teacher_head"].mean(0), atol=ATOL, rtol=0)
    torch.testing.assert_close(output.image_teacher_mean, expected["image_teacher_head"].mean(0), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ Sinkhorn


def test_sinkhorn_marginals(reference, converted):
    model, _ = converted
    scores = reference.expected["sinkhorn_scores"]
    num_rows, num_prototypes = scores.shape
    q = sinkhorn(scores, model.config.sinkhorn_epsilon, model.config.sinkhorn_iterations)
    # Every row (token) is a distribution; every prototype holds about num_rows / num_prototypes of the mass.
    torch.testing.assert_close(q.sum(dim=1), torch.ones(num_rows), atol=1e-5, rtol=0)
    balanced = torch.full((num_prototypes,), num_rows / num_prototypes)
    torch.testing.assert_close(q.sum(dim=0), balanced, atol=0.05 * num_rows / num_prototypes, rtol=0)
    converged = sinkhorn(scores, model.config.sinkhorn_epsilon, 500)
    torch.testing.assert_close(converged.sum(dim=0), balanced, atol=1e-3, rtol=0)


def reference_sinkhorn_float64(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The published form, exp(scores / epsilon) without any shift, in float64 where it cannot overflow."""
    q = torch.exp(scores.double() / epsilon).t()
    num_prototypes, num_rows = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= num_rows
    return (q * num_rows).t().float()


def test_sinkhorn_is_stable_where_the_naive_form_overflows(reference, converted):
    model, _ = converted
    iterations = model.config.sinkhorn_iterations
    # Cosine scores near 1 with a small epsilon: exp(scores / epsilon) overflows float32.
    scores = 0.9 + 0.1 * reference.expected["sinkhorn_scores"]
    epsilon = 0.01
    assert not torch.isfinite(torch.exp(scores / epsilon)).all()
    q = sinkhorn(scores, epsilon, iterations)
    torch.testing.assert_close(q, reference_sinkhorn_float64(scores, epsilon, iterations), atol=ATOL, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn(reference.expected["sinkhorn_scores"].bfloat16(), model.config.sinkhorn_epsilon, iterations)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()


# ---------------------------------------------------------------------------------------- training behaviour


def test_scd_gradient_reaches_students_decoder_and_prototypes_only():
    model = tiny_model()
    output = model(tiny_clips(model.config), generator=torch.Generator().manual_seed(0))
    output.scd_loss.backward()
    for name in ("discovr", "decoder", "encoder_to_decoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    assert model.prototypes.grad is not None and model.prototypes.grad.abs().sum() > 0
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    for name in ("image_teacher", "image_teacher_head", "video_teacher", "video_teacher_head"):
        assert all(p.grad is None and not p.requires_grad for p in getattr(model, name).parameters()), name


def test_teachers_are_not_trainable():
    model = tiny_model()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    for teacher, student in model.teacher_student_pairs():
        assert not any(id(p) in trainable for p in teacher.parameters())
        assert all(id(p) in trainable for p in student.parameters())
    # A fresh model starts its teachers as copies of the students.
    for teacher, student in model.teacher_student_pairs():
        for t, s in zip(teacher.parameters(), student.parameters()):
            assert torch.equal(t, s)


def test_teacher_ema():
    model = tiny_model()
    with torch.no_grad():
        for _, student in model.teacher_student_pairs():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
    before = [p.clone() for teacher, _ in model.teacher_student_pairs() for p in teacher.parameters()]
    students = [p.clone() for _, student in model.teacher_student_pairs() for p in student.parameters()]
    model.update_teachers(1.0)
    after = [p for teacher, _ in model.teacher_student_pairs() for p in teacher.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    model.update_teachers(0.5)
    after = [p for teacher, _ in model.teacher_student_pairs() for p in teacher.parameters()]
    for a, b, s in zip(after, before, students):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * s)
    model.update_teachers(0.0)
    after = [p for teacher, _ in model.teacher_student_pairs() for p in teacher.parameters()]
    assert all(torch.equal(a, s) for a, s in zip(after, students))


def test_center_update_formula():
    model = tiny_model()
    output = model(tiny_clips(model.config), generator=torch.Generator().manual_seed(0))
    video_center = torch.randn_like(model.video_center)
    image_center = torch.randn_like(model.image_center)
    model.video_center.copy_(video_center)
    model.image_center.copy_(image_center)
    momentum = 0.7
    model.update_centers(output.video_teacher_mean, output.image_teacher_mean, momentum)
    torch.testing.assert_close(model.video_center, momentum * video_center + (1 - momentum) * output.video_teacher_mean)
    torch.testing.assert_close(model.image_center, momentum * image_center + (1 - momentum) * output.image_teacher_mean)
    # Without a momentum, the config's centre momentum applies.
    momentum = model.config.dino_center_momentum
    expected = momentum * model.video_center + (1 - momentum) * output.video_teacher_mean
    model.update_centers(output.video_teacher_mean, output.image_teacher_mean)
    torch.testing.assert_close(model.video_center, expected)


def test_normalize_prototypes():
    model = tiny_model()
    model.normalize_prototypes()
    torch.testing.assert_close(model.prototypes.norm(dim=-1), torch.ones(model.config.num_prototypes))


def test_optimizer_steps_lower_the_loss():
    model = tiny_model()
    clips = tiny_clips(model.config)
    masks = model.mask_generator(clips.shape[0], torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(8):
        output = model(clips, masks=masks)
        losses.append(output.loss.item())
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        model.normalize_prototypes()
        model.update_teachers(0.99)
        model.update_centers(output.video_teacher_mean, output.image_teacher_mean)
    assert losses[-1] < losses[0]


def test_swapped_scd_direction_is_optional_and_changes_nothing_else():
    model = tiny_model()
    clips = tiny_clips(model.config)
    masks = model.mask_generator(clips.shape[0], torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    full = model(clips, masks=masks)
    torch.manual_seed(1)
    lean = model(clips, masks=masks, return_scd_swapped_loss=False)
    assert lean.scd_swapped_loss is None and full.scd_swapped_loss is not None
    for name, value in full.items():
        if name != "scd_swapped_loss":
            torch.testing.assert_close(getattr(lean, name), value, rtol=0, atol=0, msg=name)
    full.loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    lean.loss.backward()
    for name, p in model.named_parameters():
        if name in gradients:
            torch.testing.assert_close(p.grad, gradients[name], rtol=0, atol=0, msg=name)


def test_bf16_autocast_losses_are_finite():
    model = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(tiny_clips(model.config), generator=torch.Generator().manual_seed(0))
    for name in ("loss", "scd_loss", "scd_swapped_loss", "video_dino_loss", "image_dino_loss"):
        assert torch.isfinite(getattr(output, name)), name
    output.loss.backward()


def test_output_shapes_and_tuple_form():
    model = tiny_model(num_local_views=3)
    config = model.config
    clips = tiny_clips(config, batch_size=3)
    output = model(clips, generator=torch.Generator().manual_seed(0))
    assert output.scd_logits.shape == (3, config.num_patches, config.num_prototypes)
    assert output.scd_codes.shape == output.teacher_assignments.shape == (3, config.num_patches)
    assert output.video_teacher_mean.shape == output.image_teacher_mean.shape == (config.dino_out_dim,)
    as_tuple = model(clips, generator=torch.Generator().manual_seed(0), return_dict=False)
    torch.testing.assert_close(as_tuple[0], output.loss)


# ----------------------------------------------------------------------------------------------- masking


def test_mask_generator_structure():
    config = DiscovrConfig(**tiny_config_kwargs(num_frames=6, tubelet_size=2, num_local_views=3))
    generator = DiscovrMaskGenerator.from_config(config)
    masks = generator(4, torch.Generator().manual_seed(0))
    n = config.num_patches_per_frame
    assert masks.global_view.shape == (4, config.num_patches) and masks.global_view.dtype == torch.bool
    assert masks.local_views.shape == (4, 3, config.num_patches)
    assert masks.image_views.shape == (4, config.num_frames, 3, n)
    for tubes in (masks.global_view, masks.local_views.flatten(0, 1)):
        slots = tubes.view(tubes.shape[0], -1, n)
        assert torch.equal(slots, slots[:, :1].expand_as(slots))  # one pattern repeated over time
        assert torch.all(tubes.sum(-1) == generator.num_masked_per_frame * slots.shape[1])
    assert torch.all(masks.image_views.sum(-1) == int(n * config.image_mask_ratio))
    again = generator(4, torch.Generator().manual_seed(0))
    assert all(torch.equal(getattr(masks, k), getattr(again, k)) for k in ("global_view", "local_views", "image_views"))


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    model = tiny_model()
    return model, tiny_clips(model.config)


@pytest.mark.parametrize("edit", ["frames", "size"])
def test_bad_pixel_values(small, edit):
    model, clips = small
    bad = clips[:, :-1] if edit == "frames" else clips[..., :-1, :-1]
    with pytest.raises(ValueError, match="pixel_values"):
        model(bad)


def test_uneven_mask_counts(small):
    model, clips = small
    masks = model.mask_generator(clips.shape[0], torch.Generator().manual_seed(0))
    uneven = masks.local_views.clone()
    uneven[0, 0, uneven[0, 0].nonzero()[0]] = False  # one fewer masked token in one view
    with pytest.raises(ValueError, match="same number of tokens"):
        DiscovrMasks(masks.global_view, uneven, masks.image_views)
    uneven_image = masks.image_views.clone()
    uneven_image[0, 0, 0] = True
    with pytest.raises(ValueError, match="`image_views` must mask the same number"):
        DiscovrMasks(masks.global_view, masks.local_views, uneven_image)


def test_bad_mask_structure(small):
    model, clips = small
    masks = model.mask_generator(clips.shape[0], torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="`masks` must be `DiscovrMasks`.*got dict"):
        model(clips, masks={"global": masks.global_view})
    with pytest.raises(TypeError, match="selects samples, not views.*masks.global_view"):
        masks["global"]
    assert torch.equal(masks[1:].global_view, masks.global_view[1:]) and masks[1:].num_visible == masks.num_visible
    with pytest.raises(ValueError, match="`local_views` must have shape"):
        DiscovrMasks(masks.global_view, masks.local_views[:, 0], masks.image_views)
    with pytest.raises(ValueError, match="bool"):
        DiscovrMasks(masks.global_view, masks.local_views, masks.image_views.long())
    with pytest.raises(ValueError, match="same batch size"):
        DiscovrMasks(masks.global_view[:1], masks.local_views, masks.image_views)
    everything = torch.ones_like(masks.global_view)
    with pytest.raises(ValueError, match="at least one token"):
        DiscovrMasks(everything, everything.unsqueeze(1).repeat(1, 2, 1), masks.image_views)
    # Well-formed masks for another model size are caught by the model, naming the field.
    with pytest.raises(ValueError, match=r"`masks.global_view` must have shape \(batch_size, num_patches\)"):
        longer_clips = dataclasses.replace(model.mask_generator, num_frames=2 * model.config.num_frames)
        model(clips, masks=longer_clips(clips.shape[0]))
    with pytest.raises(ValueError, match=r"`masks.global_view` must have shape .* = \(1, "):
        model(clips[:1], masks=masks)
    with pytest.raises(ValueError, match=r"`masks.image_views` must have shape \(batch_size, num_frames"):
        model(clips, masks=DiscovrMasks(masks.global_view, masks.local_views, masks.image_views[:, :-1]))


def test_masks_move_and_slice_without_a_second_check(small):
    model, clips = small
    masks = model.mask_generator(clips.shape[0], torch.Generator().manual_seed(0))
    first = masks[:1]
    assert first.batch_size == 1 and torch.equal(first.local_views, masks.local_views[:1])
    assert (first.num_visible, first.num_image_visible) == (masks.num_visible, masks.num_image_visible)
    moved = masks.to("meta")  # a device where the counts could not be read again
    assert moved.image_views.is_meta and moved.num_visible == masks.num_visible
    assert masks.num_visible == model.mask_generator.num_visible
    assert masks.num_image_visible == model.mask_generator.num_image_visible
