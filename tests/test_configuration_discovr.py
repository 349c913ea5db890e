"""DiscovrConfig: published defaults, validation and serialisation."""

import pytest

from discovr import DiscovrConfig


def test_defaults_are_the_published_vit_b_setting():
    config = DiscovrConfig()
    assert (config.image_size, config.num_frames, config.tubelet_size, config.patch_size) == (112, 64, 2, 16)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.intermediate_size == 3072 and config.layer_norm_eps == 1e-6 and config.qkv_bias
    assert config.num_patches == 32 * 7 * 7
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads) == (384, 4, 6)
    assert (config.num_prototypes, config.sinkhorn_epsilon, config.sinkhorn_iterations) == (3000, 0.05, 10)
    assert config.image_qkv_bias is False and config.image_layer_norm_eps == 1e-5
    assert (config.dino_hidden_size, config.dino_bottleneck_size, config.dino_out_dim) == (2048, 256, 16384)
    assert (config.mask_ratio, config.num_local_views) == (0.9, 4)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"image_size": 100}, "image_size"),
        ({"num_frames": 63}, "num_frames"),
        ({"hidden_size": 770}, "hidden_size"),
        ({"decoder_hidden_size": 385}, "decoder_hidden_size"),
        ({"image_num_attention_heads": 7}, "image_hidden_size"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"image_mask_ratio": -0.1}, "image_mask_ratio"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"sinkhorn_epsilon": 0.0}, "sinkhorn_epsilon"),
        ({"dino_center_momentum": 1.5}, "dino_center_momentum"),
        ({"image_hidden_size": 384}, "image_hidden_size"),
        ({"hidden_act": "swish-ish"}, "hidden_act"),
        ({"image_hidden_act": "swish-ish"}, "image_hidden_act"),
        ({"image_hidden_dropout_prob": 1.0}, "image_hidden_dropout_prob"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        DiscovrConfig(**kwargs)


def test_round_trip(tmp_path):
    config = DiscovrConfig(num_frames=16, problem_type="regression", num_labels=1, id2label={0: "LVEF"})
    config.save_pretrained(tmp_path)
    loaded = DiscovrConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.id2label == {0: "LVEF"} and loaded.problem_type == "regression"
