"""A config that sizes only the video encoder, as VideoMAE users write one, works in every Transformers entry point."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import Dataset
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

from discovr import DiscovrConfig, DiscovrForVideoClassification, DiscovrModel, DiscovrVideoProcessor

from discovr_testing import write_ramp_video

VIDEO_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def minimal_config(**kwargs) -> DiscovrConfig:
    """Only the clip shape and the video encoder's sizes; everything of the image branch left to its default."""
    return DiscovrConfig(image_size=32, num_frames=4, **VIDEO_ENCODER, **kwargs)


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("minimal_lvef")
    torch.manual_seed(0)
    config = minimal_config(num_labels=1, problem_type="regression", id2label={0: "LVEF"}, label2id={"LVEF": 0})
    DiscovrForVideoClassification(config).save_pretrained(directory)
    DiscovrVideoProcessor(num_frames=4, frame_stride=2, size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_the_image_branch_follows_the_video_encoder():
    config = DiscovrConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768)
    image_sizes = (
        config.image_hidden_size, config.image_num_hidden_layers, config.image_num_attention_heads,
        config.image_intermediate_size,
    )
    assert image_sizes == (192, 4, 3, 768)


def test_explicit_image_sizes_are_kept_and_checked():
    config = minimal_config(image_num_hidden_layers=1, image_num_attention_heads=4, image_intermediate_size=48)
    assert (config.image_num_hidden_layers, config.image_num_attention_heads, config.image_intermediate_size) == (1, 4, 48)
    with pytest.raises(ValueError, match="`image_hidden_size` \\(64\\) must equal `hidden_size` \\(32\\)"):
        minimal_config(image_hidden_size=64)


def test_saved_config_carries_the_resolved_sizes(regressor_dir):
    saved = json.loads((regressor_dir / "config.json").read_text())
    assert (saved["image_hidden_size"], saved["image_num_hidden_layers"], saved["image_num_attention_heads"],
            saved["image_intermediate_size"]) == (32, 2, 2, 64)
    # A saved config with explicit image sizes loads unchanged, even when the video encoder's sizes differ.
    saved["image_num_hidden_layers"] = 1
    (regressor_dir / "config_edited").mkdir(exist_ok=True)
    (regressor_dir / "config_edited" / "config.json").write_text(json.dumps(saved))
    assert DiscovrConfig.from_pretrained(regressor_dir / "config_edited").image_num_hidden_layers == 1


def test_auto_classes(regressor_dir):
    assert isinstance(AutoConfig.from_pretrained(regressor_dir), DiscovrConfig)
    assert type(AutoModelForVideoClassification.from_pretrained(regressor_dir)) is DiscovrForVideoClassification
    encoder, info = AutoModel.from_pretrained(regressor_dir, output_loading_info=True)
    assert type(encoder) is DiscovrModel and not info["missing_keys"]


def test_pipeline(regressor_dir, tmp_path):
    video = write_ramp_video(tmp_path / "ramp.avi", "mjpeg")
    result = pipeline("video-classification", model=str(regressor_dir))(str(video))
    assert [entry["label"] for entry in result] == ["LVEF"]
    assert torch.isfinite(torch.tensor(result[0]["score"]))


class RandomClips(Dataset):
    def __init__(self, config: DiscovrConfig, size: int):
        generator = torch.Generator().manual_seed(0)
        self.pixel_values = torch.randn(size, config.num_frames, 3, config.image_size, config.image_size,
                                        generator=generator)
        self.labels = torch.rand(size, generator=generator) * 60 + 20

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


def test_trainer(regressor_dir, tmp_path):
    model = DiscovrForVideoClassification.from_pretrained(regressor_dir)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    result = Trainer(model=model, args=args, train_dataset=RandomClips(model.config, 4)).train()
    assert result.global_step == 2 and result.training_loss > 0


def test_peft_lora(regressor_dir):
    model = get_peft_model(
        DiscovrForVideoClassification.from_pretrained(regressor_dir),
        LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
    )
    batch = RandomClips(model.config, 2)[:]
    model(**batch).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_grads) == 2 * VIDEO_ENCODER["num_hidden_layers"]
    assert all(grad is not None and grad.abs().sum() > 0 for grad in lora_grads)
