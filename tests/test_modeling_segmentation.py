"""DiscovrForSemanticSegmentation: shapes, the loss and its ignore index, freezing, loading, post-processing,
Trainer and PEFT."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.utils.data import Dataset
from transformers import AutoModelForSemanticSegmentation, Trainer, TrainingArguments

from discovr import DiscovrConfig, DiscovrForSemanticSegmentation, DiscovrModel, DiscovrVideoProcessor
from discovr.modeling_discovr import DiscovrSemanticSegmenterOutput

from discovr_testing import tiny_config_kwargs

NUM_LABELS = 4
# Labels at the frames' resolution, finer than the logits' patch grid, as the datasets give them.
LABEL_SIDE = tiny_config_kwargs()["image_size"]


def segmentation_config(**overrides) -> DiscovrConfig:
    kwargs = {"num_labels": NUM_LABELS, "segmentation_light_hidden_size": 8, **overrides}
    return DiscovrConfig(**tiny_config_kwargs(**kwargs))


def clips(config: DiscovrConfig, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=generator)


def random_labels(config: DiscovrConfig, batch_size: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.num_frames, LABEL_SIDE, LABEL_SIDE)
    return torch.randint(0, config.num_labels, shape, generator=generator)


def patch_side(config: DiscovrConfig) -> int:
    return config.image_size // config.patch_size


@pytest.mark.parametrize("head", ["linear", "light"])
def test_logits_are_per_frame_at_patch_resolution(head):
    config = segmentation_config(segmentation_head=head)
    model = DiscovrForSemanticSegmentation(config).eval()
    out = model(clips(config), output_hidden_states=True)
    side = patch_side(config)
    assert isinstance(out, DiscovrSemanticSegmenterOutput)
    assert out.logits.shape == (2, config.num_frames, config.num_labels, side, side)
    assert out.loss is None and len(out.hidden_states) == config.num_hidden_layers + 1
    assert model(clips(config), return_dict=False)[0].shape == out.logits.shape


@pytest.mark.parametrize("head", ["linear", "light"])
def test_frames_of_one_tubelet_share_their_logits(head):
    config = segmentation_config(segmentation_head=head)
    logits = DiscovrForSemanticSegmentation(config).eval()(clips(config)).logits
    tubelets = logits.unflatten(1, (-1, config.tubelet_size))
    for frame in range(1, config.tubelet_size):
        torch.testing.assert_close(tubelets[:, :, frame], tubelets[:, :, 0], rtol=0, atol=0)
    assert not torch.equal(tubelets[:, 0], tubelets[:, 1])


def test_loss_is_upsampled_cross_entropy_over_annotated_pixels():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config).eval()
    labels = random_labels(config)
    ignore = config.semantic_loss_ignore_index
    labels[:, 1:-1] = ignore  # only the first and last frames annotated, as ED and ES
    labels[0, 0, :3] = ignore  # and a few unannotated pixels
    out = model(clips(config), labels=labels)
    upsampled = nn.functional.interpolate(
        out.logits.flatten(0, 1), size=labels.shape[-2:], mode="bilinear", align_corners=False
    )
    expected = nn.functional.cross_entropy(upsampled, labels.flatten(0, 1), ignore_index=ignore)
    torch.testing.assert_close(out.loss, expected)


def test_unannotated_frames_contribute_nothing():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config).eval()
    pixel_values, labels = clips(config), random_labels(config)
    labels[:, config.tubelet_size : 2 * config.tubelet_size] = config.semantic_loss_ignore_index
    loss = model(pixel_values, labels=labels).loss

    def perturb_second_tubelet(module, args, logits):
        logits = logits.clone()
        logits[:, 1] += 10 * torch.randn_like(logits[:, 1])
        return logits

    handle = model.decode_head.register_forward_hook(perturb_second_tubelet)
    perturbed = model(pixel_values, labels=labels)
    handle.remove()
    first_ignored = config.tubelet_size
    assert not torch.allclose(perturbed.logits[:, first_ignored], model(pixel_values).logits[:, first_ignored])
    torch.testing.assert_close(perturbed.loss, loss)


def test_a_batch_without_annotation_gives_zero_loss_with_a_graph():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config)
    labels = torch.full_like(random_labels(config), config.semantic_loss_ignore_index)
    loss = model(clips(config), labels=labels).loss
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.decode_head.parameters())


def test_labels_of_the_wrong_shape_are_refused():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        model(clips(config), labels=random_labels(config)[:, 0])


def test_frozen_backbone_gets_no_gradient_and_builds_no_graph():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config)
    assert not any(p.requires_grad for p in model.discovr.parameters())
    out = model(clips(config), labels=random_labels(config), output_hidden_states=True)
    assert out.hidden_states[-1].grad_fn is None
    out.loss.backward()
    assert all(p.grad is None for p in model.discovr.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decode_head.parameters())


def test_unfrozen_backbone_trains():
    config = segmentation_config(freeze_backbone=False)
    model = DiscovrForSemanticSegmentation(config)
    before = {name: p.detach().clone() for name, p in model.discovr.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(clips(config), labels=random_labels(config)).loss.backward()
    optimizer.step()
    changed = [name for name, p in model.discovr.named_parameters() if not torch.equal(p, before[name])]
    assert {"encoder.layer.0.attention.query.weight", "embeddings.patch_embeddings.projection.weight"} <= set(changed)


def test_save_and_load_through_the_auto_class(tmp_path):
    config = segmentation_config(segmentation_head="light", semantic_loss_ignore_index=-1)
    model = DiscovrForSemanticSegmentation(config)
    model(clips(config), labels=random_labels(config))  # BatchNorm running statistics move off their init
    model.eval().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_discovr.DiscovrForSemanticSegmentation"

    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is DiscovrForSemanticSegmentation
    assert (loaded.config.segmentation_head, loaded.config.segmentation_light_hidden_size) == ("light", 8)
    assert loaded.config.semantic_loss_ignore_index == -1 and loaded.config.freeze_backbone is True
    assert not any(p.requires_grad for p in loaded.discovr.parameters())
    pixel_values = clips(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits)


def test_backbone_loads_from_a_saved_encoder(tiny_encoder_dir):
    model, info = DiscovrForSemanticSegmentation.from_pretrained(
        tiny_encoder_dir, num_labels=NUM_LABELS, output_loading_info=True
    )
    assert info["missing_keys"] and all(key.startswith("decode_head.") for key in info["missing_keys"])
    source = DiscovrModel.from_pretrained(tiny_encoder_dir).state_dict()
    loaded = model.discovr.state_dict()
    assert loaded.keys() == source.keys()
    for name, tensor in source.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    # The head is new, initialised by `_init_weights`, and only it trains.
    head = model.decode_head
    assert torch.equal(head.batch_norm.weight, torch.ones_like(head.batch_norm.weight))
    assert torch.equal(head.classifier.bias, torch.zeros_like(head.classifier.bias))
    assert 0 < head.classifier.weight.std() < 2 * model.config.initializer_range
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [name for name, _ in head.named_parameters(prefix="decode_head")]


def one_hot_logits(label_maps: torch.Tensor, num_labels: int) -> torch.Tensor:
    """`(B, T, h, w)` class indices -> `(B, T, num_labels, h, w)` logits whose argmax they are."""
    return nn.functional.one_hot(label_maps, num_labels).permute(0, 1, 4, 2, 3).float()


def test_post_process_at_the_logits_resolution():
    generator = torch.Generator().manual_seed(0)
    label_maps = torch.randint(0, NUM_LABELS, (2, 3, 4, 5), generator=generator)
    outputs = DiscovrSemanticSegmenterOutput(logits=one_hot_logits(label_maps, NUM_LABELS))
    masks = DiscovrVideoProcessor().post_process_semantic_segmentation(outputs)
    assert len(masks) == 2
    for mask, expected in zip(masks, label_maps):
        assert mask.dtype == torch.long
        assert torch.equal(mask, expected)


def test_post_process_upsamples_to_each_video_size():
    # Patch grid 2x2: class 1 in the left column, 2 in the right; bilinear upsampling splits the frame in halves.
    label_maps = torch.tensor([[1, 2], [1, 2]]).expand(2, 3, 2, 2)
    outputs = DiscovrSemanticSegmenterOutput(logits=one_hot_logits(label_maps, NUM_LABELS))
    target_sizes = [(8, 8), (6, 10)]
    masks = DiscovrVideoProcessor().post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    for mask, (height, width) in zip(masks, target_sizes):
        assert mask.shape == (3, height, width) and mask.dtype == torch.long
        assert (mask[..., : width // 2] == 1).all() and (mask[..., width // 2 :] == 2).all()


def test_post_process_matches_the_model_and_checks_target_sizes():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config).eval()
    with torch.no_grad():
        outputs = model(clips(config))
    processor = DiscovrVideoProcessor()
    size = (config.image_size, config.image_size)
    masks = processor.post_process_semantic_segmentation(outputs, target_sizes=torch.tensor([size, size]))
    for mask, logits in zip(masks, outputs.logits):
        upsampled = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        assert torch.equal(mask, upsampled.argmax(dim=1))
    with pytest.raises(ValueError, match="one \\(height, width\\) per video: got 1 for a batch of 2"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[size])


def test_config_fields_round_trip_and_old_configs_keep_their_meaning(tmp_path):
    config = segmentation_config(segmentation_head="light", freeze_backbone=False)
    config.save_pretrained(tmp_path)
    assert DiscovrConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()
    saved = json.loads((tmp_path / "config.json").read_text())
    new_fields = (
        "semantic_loss_ignore_index", "segmentation_head", "segmentation_light_hidden_size", "freeze_backbone"
    )
    for name in new_fields:
        del saved[name]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = DiscovrConfig.from_pretrained(tmp_path)
    assert [getattr(old, name) for name in new_fields] == [255, "linear", 256, True]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"segmentation_head": "upernet"}, "segmentation_head"),
        ({"segmentation_light_hidden_size": 0}, "segmentation_light_hidden_size"),
        ({"semantic_loss_ignore_index": 255.0}, "semantic_loss_ignore_index"),
    ],
)
def test_invalid_segmentation_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        segmentation_config(**kwargs)


def test_a_single_label_is_refused():
    with pytest.raises(ValueError, match="`num_labels` >= 2"):
        DiscovrForSemanticSegmentation(segmentation_config(num_labels=1))


def test_unknown_forward_arguments_raise():
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config)
    with pytest.raises(TypeError, match="DiscovrForSemanticSegmentation.forward\\(\\) got unexpected .*'label'"):
        model(clips(config), label=random_labels(config))


class RandomSegmentations(Dataset):
    def __init__(self, config: DiscovrConfig, size: int):
        self.pixel_values = clips(config, size)
        self.labels = random_labels(config, size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


def test_trainer_step_trains_the_head_only(tmp_path):
    config = segmentation_config()
    model = DiscovrForSemanticSegmentation(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    result = Trainer(model=model, args=args, train_dataset=RandomSegmentations(config, 2)).train()
    assert result.global_step == 1 and result.training_loss > 0
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {name for name, _ in model.decode_head.named_parameters(prefix="decode_head")}


def test_peft_lora_on_an_unfrozen_backbone():
    config = segmentation_config(freeze_backbone=False)
    model = get_peft_model(
        DiscovrForSemanticSegmentation(config),
        LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["decode_head"]),
    )
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in trainable.items()}
    optimizer = torch.optim.SGD(trainable.values(), lr=1e-1)
    batch = RandomSegmentations(config, 2)[:]
    model(**batch).loss.backward()
    optimizer.step()
    lora_b = [name for name in trainable if "lora_B" in name]
    assert len(lora_b) == 2 * config.num_hidden_layers
    assert all(not torch.equal(trainable[name], before[name]) for name in lora_b)
    assert any("decode_head" in name and not torch.equal(p, before[name]) for name, p in trainable.items())
