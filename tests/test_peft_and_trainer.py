"""The classification model under PEFT LoRA and under Trainer with gradient accumulation."""

import math

import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from discovr import DiscovrConfig, DiscovrForVideoClassification

from discovr_testing import tiny_config_kwargs


def lvef_config():
    return DiscovrConfig(**tiny_config_kwargs(num_labels=1, problem_type="regression", id2label={0: "LVEF"}))


class RandomClips(Dataset):
    def __init__(self, config, size):
        generator = torch.Generator().manual_seed(0)
        self.pixel_values = torch.randn(
            size, config.num_frames, 3, config.image_size, config.image_size, generator=generator
        )
        self.labels = torch.rand(size, generator=generator) * 60 + 20

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


def test_lora_on_query_and_value_trains_and_merges():
    torch.manual_seed(0)
    config = lvef_config()
    model = get_peft_model(
        DiscovrForVideoClassification(config),
        LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]),
    )
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert len(lora_names) == 2 * 2 * config.num_hidden_layers  # A and B for query and value, per layer
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".key." in n)

    batch = RandomClips(config, 4)[:]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    model.eval()
    with torch.no_grad():
        adapted = model(pixel_values=batch["pixel_values"]).logits
        merged = model.merge_and_unload()
        assert type(merged) is DiscovrForVideoClassification
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(pixel_values=batch["pixel_values"]).logits, adapted, atol=1e-4, rtol=1e-4)


def test_trainer_with_gradient_accumulation(tmp_path):
    config = lvef_config()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=2,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=DiscovrForVideoClassification(config), args=args, train_dataset=RandomClips(config, 8))
    result = trainer.train()
    assert result.global_step == 2
    assert math.isfinite(result.training_loss) and result.training_loss > 0
