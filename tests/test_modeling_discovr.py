"""DiscovrModel and DiscovrForVideoClassification: shapes, errors, loading and the three losses."""

import warnings

import pytest
import torch
from torch import nn

from discovr import DiscovrConfig, DiscovrForPreTraining, DiscovrForVideoClassification, DiscovrModel
from discovr.modeling_discovr import sinusoid_position_table

from discovr_testing import tiny_config_kwargs


@pytest.fixture
def config():
    return DiscovrConfig(**tiny_config_kwargs())


def clips(config, batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=generator)


def tube_mask(config, batch_size, masked_per_slot):
    """A valid tube mask: the same per-frame pattern in every temporal slot, `masked_per_slot` per slot."""
    per_frame = torch.zeros(batch_size, config.num_patches_per_frame, dtype=torch.bool)
    per_frame[:, :masked_per_slot] = True
    per_frame = per_frame[:, torch.randperm(config.num_patches_per_frame)]
    return per_frame.repeat(1, config.num_frames // config.tubelet_size)


def test_encoder_shapes(config):
    model = DiscovrModel(config).eval()
    pixel_values = clips(config)
    out = model(pixel_values, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 1 + config.num_patches, config.hidden_size)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    mask = tube_mask(config, 2, 3)
    masked = model(pixel_values, bool_masked_pos=mask).last_hidden_state
    assert masked.shape == (2, 1 + int((~mask[0]).sum()), config.hidden_size)


def test_masking_keeps_visible_tokens_in_positional_order(config):
    """With no blocks, the encoder output is LayerNorm(embedding): masked = full at the visible positions."""
    model = DiscovrModel(DiscovrConfig(**tiny_config_kwargs(num_hidden_layers=1))).eval()
    model.encoder.layer = nn.ModuleList()
    pixel_values = clips(model.config)
    mask = tube_mask(model.config, 2, 2)
    with torch.no_grad():
        full = model(pixel_values).last_hidden_state
        masked = model(pixel_values, bool_masked_pos=mask).last_hidden_state
    for b in range(2):
        torch.testing.assert_close(masked[b, 1:], full[b, 1:][~mask[b]])
        torch.testing.assert_close(masked[b, 0], full[b, 0])


def test_eager_and_sdpa_agree_and_attentions(config):
    model = DiscovrModel(config).eval()
    pixel_values = clips(config)
    with torch.no_grad():
        sdpa = model(pixel_values).last_hidden_state
        model.set_attn_implementation("eager")
        eager = model(pixel_values, output_attentions=True)
    torch.testing.assert_close(sdpa, eager.last_hidden_state, atol=1e-5, rtol=1e-5)
    tokens = 1 + config.num_patches
    assert len(eager.attentions) == config.num_hidden_layers
    assert eager.attentions[0].shape == (2, config.num_attention_heads, tokens, tokens)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(2, config.num_attention_heads, tokens))


def test_return_dict_false(config):
    model = DiscovrModel(config).eval()
    with torch.no_grad():
        as_tuple = model(clips(config), return_dict=False)
        as_dict = model(clips(config))
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.last_hidden_state)


@pytest.mark.parametrize(
    "shape_change, message",
    [
        (lambda s: (s[0], s[1] - 2, *s[2:]), "num_frames"),
        (lambda s: (*s[:3], s[3] + 16, s[4] + 16), "height, width"),
        (lambda s: (s[0], s[1], 1, *s[3:]), "num_channels"),
        (lambda s: s[1:], "batch_size"),
    ],
)
def test_wrong_pixel_shape(config, shape_change, message):
    model = DiscovrModel(config)
    bad = torch.zeros(shape_change(clips(config).shape))
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_bad_masks(config):
    model = DiscovrModel(config)
    pixel_values = clips(config)
    with pytest.raises(ValueError, match="bool_masked_pos.*shape"):
        model(pixel_values, bool_masked_pos=torch.zeros(2, config.num_patches + 1, dtype=torch.bool))
    uneven = tube_mask(config, 2, 2)
    uneven[1, (~uneven[1]).nonzero()[0]] = True
    with pytest.raises(ValueError, match="same number"):
        model(pixel_values, bool_masked_pos=uneven)
    with pytest.raises(ValueError, match="bool"):
        model(pixel_values, bool_masked_pos=tube_mask(config, 2, 2).long())
    with pytest.raises(ValueError, match="at least one"):
        model(pixel_values, bool_masked_pos=torch.ones(2, config.num_patches, dtype=torch.bool))


def test_save_and_load_round_trip(config, tmp_path):
    model = DiscovrForVideoClassification(config).eval()
    model.save_pretrained(tmp_path)
    loaded, info = DiscovrForVideoClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert all(not v for v in info.values()), info
    pixel_values = clips(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)


def test_position_table_is_initialised_when_loading(config, tmp_path):
    """The table is not saved; loading (on the meta device) must rebuild it in `_init_weights`."""
    DiscovrModel(config).save_pretrained(tmp_path)
    loaded = DiscovrModel.from_pretrained(tmp_path)
    table = sinusoid_position_table(config.num_patches, config.hidden_size).unsqueeze(0)
    torch.testing.assert_close(loaded.embeddings.position_embeddings, table, atol=0, rtol=0)
    assert not any(t.is_meta for t in loaded.state_dict().values())


def test_gradient_checkpointing_gives_the_same_gradients(config):
    torch.manual_seed(0)
    model = DiscovrModel(config).train()
    pixel_values = clips(config)
    model(pixel_values).last_hidden_state.square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(pixel_values).last_hidden_state.square().mean().backward()
    for grad, param in zip(plain, model.parameters()):
        torch.testing.assert_close(param.grad, grad, atol=1e-6, rtol=1e-5)


def test_regression_loss_matches_hand_computation(config):
    config.num_labels, config.problem_type = 1, "regression"
    model = DiscovrForVideoClassification(config).eval()
    pixel_values, labels = clips(config), torch.tensor([55.0, 30.0])
    with torch.no_grad():
        out = model(pixel_values, labels=labels)
        cls = model.discovr(pixel_values).last_hidden_state[:, 0]
        logits = cls @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(out.logits, logits)
    assert out.loss.item() == pytest.approx(((logits[:, 0] - labels) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("label_shape", [(1,), (1, 1)])
def test_regression_loss_of_a_batch_of_one_does_not_broadcast(config, label_shape):
    config.num_labels, config.problem_type = 1, "regression"
    model = DiscovrForVideoClassification(config).eval()
    pixel_values = clips(config)[:1]
    labels = torch.full(label_shape, 40.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when the target would broadcast against the input
        with torch.no_grad():
            out = model(pixel_values, labels=labels)
    assert out.loss.item() == pytest.approx((out.logits[0, 0].item() - 40.0) ** 2, rel=1e-6)


def test_single_label_loss_matches_hand_computation(config):
    config.num_labels = 3
    model = DiscovrForVideoClassification(config).eval()
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        out = model(clips(config), labels=labels)
    log_probs = out.logits.log_softmax(-1)
    expected = -(log_probs[0, 2] + log_probs[1, 0]) / 2
    assert model.config.problem_type == "single_label_classification"
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_multi_label_loss_matches_hand_computation(config):
    config.num_labels, config.problem_type = 2, "multi_label_classification"
    model = DiscovrForVideoClassification(config).eval()
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    with torch.no_grad():
        out = model(clips(config), labels=labels)
    p = out.logits.sigmoid()
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mean_pooling_uses_fc_norm_over_patch_tokens():
    config = DiscovrConfig(**tiny_config_kwargs(use_mean_pooling=True, num_labels=2))
    model = DiscovrForVideoClassification(config).eval()
    pixel_values = clips(config)
    with torch.no_grad():
        tokens = model.discovr(pixel_values).last_hidden_state
        expected = model.classifier(model.fc_norm(tokens[:, 1:].mean(1)))
        torch.testing.assert_close(model(pixel_values).logits, expected)


def test_loss_kwargs_are_not_accepted():
    assert DiscovrForVideoClassification.accepts_loss_kwargs is False


def test_unknown_problem_type(config):
    with pytest.raises(ValueError, match="`problem_type` must be one of"):
        DiscovrConfig(**{**config.to_dict(), "num_labels": 2, "problem_type": "ranking"})


def test_unknown_keywords_are_refused_by_name(config):
    pixel_values = clips(config)
    with pytest.raises(TypeError, match="DiscovrModel.forward\\(\\) got unexpected keyword argument\\(s\\) 'head_mask'"):
        DiscovrModel(config)(pixel_values, head_mask=None)
    with pytest.raises(TypeError, match="'bool_masked_pos'.*takes its masks as `masks`"):
        DiscovrForPreTraining(config)(pixel_values, bool_masked_pos=torch.zeros(2, config.num_patches, dtype=torch.bool))
    with pytest.raises(TypeError, match="'label'"):
        DiscovrForVideoClassification(config)(pixel_values, label=torch.tensor([0, 1]))
    # Transformers' own conventions (what Trainer and the pipelines may pass) are accepted.
    DiscovrModel(config)(pixel_values, output_hidden_states=True, num_items_in_batch=None)


def test_classifier_records_outputs_and_returns_tuples(config):
    """Output capture reaches through the head: hidden states and (eager) attentions, and `return_dict=False`."""
    config.num_labels = 3
    model = DiscovrForVideoClassification(config).eval()
    model.set_attn_implementation("eager")
    pixel_values = clips(config)
    with torch.no_grad():
        out = model(pixel_values, output_hidden_states=True, output_attentions=True)
        plain = model(pixel_values)
        as_tuple = model(pixel_values, return_dict=False)
    assert len(out.hidden_states) == config.num_hidden_layers + 1 and len(out.attentions) == config.num_hidden_layers
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(as_tuple[0], plain.logits)
    # The last recorded hidden state is the last block's output, before the final LayerNorm.
    encoder_out = model.discovr(pixel_values, output_hidden_states=True)
    torch.testing.assert_close(model.discovr.layernorm(encoder_out.hidden_states[-1]), encoder_out.last_hidden_state)
