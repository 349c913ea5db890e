"""`discovr-finetune` on a tiny synthetic set: every mode, the artefacts, the pipeline, and bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file, save_file

from discovr import DiscovrConfig, DiscovrForVideoClassification, DiscovrModel, DiscovrVideoProcessor
from discovr.video_processing_discovr import ClipSampling
from discovr.data import load_echonet_dynamic
from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training.data_selection import attach_targets
from discovr.training.finetune import (
    FinetuneConfig,
    build_model,
    finetune,
    TargetScaling,
    initialise_regression_bias,
    load_classification_model,
    main,
)

from discovr_testing import tiny_config_kwargs
from discovr_testing import FRAME_STRIDE


def quick_config(data_root, output_dir, **overrides) -> FinetuneConfig:
    """Two optimiser steps of two clips, one validation at the end, three clips per evaluated video."""
    kwargs = dict(
        output_dir=str(output_dir), data_root=str(data_root), max_steps=2, eval_steps=2, logging_steps=1,
        per_device_train_batch_size=2, per_device_eval_batch_size=8, learning_rate=1e-2, num_workers=0,
        clips="uniform:3", disable_tqdm=True,
    )
    kwargs.update(overrides)
    return FinetuneConfig(**kwargs)


def encoder_state(model) -> dict[str, torch.Tensor]:
    encoder = model.discovr if hasattr(model, "discovr") else model
    return {name: tensor.clone() for name, tensor in encoder.state_dict().items()}


def changed(before: dict, after: dict, prefix: str) -> bool:
    names = [name for name in before if name.startswith(prefix)]
    assert names, f"no parameter starts with {prefix}"
    return any(not torch.equal(before[name], after[name]) for name in names)


def test_videomae_encoder_fine_tunes_its_last_blocks(synthetic_echonet, tiny_encoder_dir, tmp_path, monkeypatch):
    # A VideoMAE encoder of the same size, saved with the DISCOVR processor, as the representation benchmark does.
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel

    config = DiscovrConfig.from_pretrained(tiny_encoder_dir)
    encoder_dir = tmp_path / "videomae"
    VideoMAEModel(VideoMAEConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_frames=config.num_frames,
        tubelet_size=config.tubelet_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
    )).save_pretrained(encoder_dir)
    DiscovrVideoProcessor.from_pretrained(tiny_encoder_dir).save_pretrained(encoder_dir)
    before = {name: t.clone() for name, t in VideoMAEModel.from_pretrained(encoder_dir).state_dict().items()}

    reloaded = []
    original = VideoMAEForVideoClassification.from_pretrained.__func__
    monkeypatch.setattr(VideoMAEForVideoClassification, "from_pretrained",
                        classmethod(lambda cls, path, **kw: reloaded.append(str(path)) or original(cls, path, **kw)))
    result = finetune(quick_config(synthetic_echonet, tmp_path / "out", model_name_or_path=str(encoder_dir), k=1))
    # The best checkpoint is reloaded with from_pretrained, which maps VideoMAE's stored q_bias/v_bias.
    assert any("checkpoint-" in path for path in reloaded)
    model = VideoMAEForVideoClassification.from_pretrained(tmp_path / "out")
    after = model.videomae.state_dict()
    assert not changed(before, after, "encoder.layer.0.")
    assert changed(before, after, "encoder.layer.1.")
    assert model.config.problem_type == "regression"
    assert math.isfinite(result.metrics["test"]["clip_average"]["mae"])
    with pytest.raises(ValueError, match="has no CLS token"):
        load_classification_model(str(encoder_dir), 1, "regression", {0: "LVEF"}, pooling="cls")


@pytest.mark.parametrize("mode", ["linear", "last_k", "full", "lora"])
def test_lvef_modes_train_what_they_should(mode, synthetic_echonet, tiny_encoder_dir, tmp_path):
    result = finetune(quick_config(synthetic_echonet, tmp_path, model_name_or_path=str(tiny_encoder_dir), mode=mode, k=1))

    before = encoder_state(DiscovrModel.from_pretrained(tiny_encoder_dir))
    model = DiscovrForVideoClassification.from_pretrained(tmp_path)
    after = encoder_state(model)
    assert model.config.problem_type == "regression"
    assert model.config.id2label == {0: "LVEF"}
    assert not any("lora" in name for name in load_file(tmp_path / "model.safetensors"))

    assert changed(before, after, "embeddings.") == (mode == "full")
    assert changed(before, after, "encoder.layer.0.") == (mode in ("full", "lora"))
    assert changed(before, after, "encoder.layer.1.") == (mode != "linear")
    assert changed(before, after, "layernorm.") == (mode in ("last_k", "full"))
    if mode == "lora":
        # LoRA adapts query and value only; merging folds the adapters into those weights.
        assert changed(before, after, "encoder.layer.1.attention.query.")
        assert changed(before, after, "encoder.layer.1.attention.value.")
        assert not changed(before, after, "encoder.layer.1.attention.key.")
        assert not changed(before, after, "encoder.layer.1.mlp.")

    assert result.metrics["train"]["steps"] == 2
    for split in ("validation", "test"):
        for view in ("one_clip", "clip_average"):
            assert math.isfinite(result.metrics[split][view]["mae"])


def test_lvef_outputs_pipeline_and_card(synthetic_echonet, tiny_config_file, tmp_path):
    """The console script from a random tiny config: predictions, plots, card, processor and the pipeline."""
    out = tmp_path / "run"
    assert main([
        "--config", str(tiny_config_file), "--data_root", str(synthetic_echonet), "--output_dir", str(out),
        "--mode", "full", "--max_steps", "2", "--eval_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "2", "--num_workers", "0", "--frame_stride", str(FRAME_STRIDE),
        "--clips", "all", "--disable_tqdm",
    ]) == 0

    test_split = load_echonet_dynamic(synthetic_echonet)["test"]
    file_list = pd.read_csv(synthetic_echonet / "FileList.csv")
    expected = file_list[file_list["Split"] == "TEST"].set_index("FileName")
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["FileName", "EF", "prediction", "num_clips"]
    assert sorted(predictions["FileName"]) == sorted(expected.index)
    np.testing.assert_allclose(predictions["EF"], expected.loc[predictions["FileName"], "EF"])
    assert predictions["prediction"].notna().all()
    # "all" clips: every start at which a 4-frame, stride-2 clip fits.
    frames = dict(zip(expected.index, expected["NumberOfFrames"]))
    assert list(predictions["num_clips"]) == [
        len(ClipSampling("all").starts(frames[name], 4, FRAME_STRIDE)) for name in predictions["FileName"]
    ]
    assert len(test_split) == len(predictions)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips"] == "all"
    np.testing.assert_allclose(
        metrics["test"]["clip_average"]["mae"], (predictions["prediction"] - predictions["EF"]).abs().mean()
    )
    train_mean = pd.read_csv(synthetic_echonet / "FileList.csv").query("Split == 'TRAIN'")["EF"].mean()
    np.testing.assert_allclose(
        metrics["test"]["train_mean_baseline"]["mae"], (predictions["EF"] - train_mean).abs().mean()
    )
    for name in ("lvef_scatter.png", "bland_altman.png", "roc.png", "training_curves.png", "training_log.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "checkpoints").exists()
    card = (out / "README.md").read_text()
    assert "not** a medical device" in card and "LVEF" in card
    # The Hub renders the results from `model-index`; people read the short table; no local path travels along.
    metadata = yaml.safe_load(card.split("---")[1])
    test_mae = next(m for m in metadata["model-index"][0]["results"][0]["metrics"] if m["type"] == "mae")
    assert test_mae["value"] == pytest.approx(metrics["test"]["clip_average"]["mae"], rel=1e-5)
    assert f"| MAE (EF %) | {metrics['validation']['clip_average']['mae']:.4g} |" in card
    assert "M parameters" in card and str(tmp_path) not in card and str(synthetic_echonet) not in card

    processor = DiscovrVideoProcessor.from_pretrained(out)
    assert (processor.num_frames, processor.frame_stride, processor.size["height"]) == (4, FRAME_STRIDE, 32)

    from transformers import pipeline

    classifier = pipeline("video-classification", model=str(out))
    output = classifier(test_split[0]["video"])
    assert output[0]["label"] == "LVEF"
    assert math.isfinite(output[0]["score"])


def test_head_bias_starts_at_the_training_mean(tiny_config_file, tmp_path):
    config = FinetuneConfig(output_dir=str(tmp_path), data_root=str(tmp_path), config=str(tiny_config_file))
    model, processor = build_model(config, 1, "regression", {0: "LVEF"})
    initialise_regression_bias(model, 57.25)
    assert model.classifier.bias.item() == 57.25
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        # Freshly initialised weights are small, so the first predictions sit near the mean.
        assert (model(pixel_values=clip).logits - 57.25).abs().max() < 1.0
    assert processor.frame_stride == 3 and processor.num_frames == 4


def test_target_scaling_folds_exactly_into_the_head(tiny_config_file, tmp_path):
    targets = np.array([30.0, 45.0, 60.0, 75.0])
    scaling = TargetScaling.from_targets(targets)
    assert scaling.mean == 52.5 and scaling.std == pytest.approx(targets.std())
    np.testing.assert_allclose(scaling.unscale(np.array(scaling.scale(list(targets)))), targets)

    config = FinetuneConfig(output_dir=str(tmp_path), data_root=str(tmp_path), config=str(tiny_config_file))
    model, _ = build_model(config, 1, "regression", {0: "LVEF"})
    initialise_regression_bias(model, 0.0)  # the training mean, in standardised units
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        standardised = model(pixel_values=clip).logits
        scaling.fold_into(model)
        folded = model(pixel_values=clip).logits
    torch.testing.assert_close(folded, standardised * scaling.std + scaling.mean)
    assert model.classifier.bias.item() == pytest.approx(scaling.mean)  # the head still starts at the mean


def test_classification_on_an_ef_threshold(synthetic_echonet, tiny_encoder_dir, tmp_path):
    result = finetune(quick_config(
        synthetic_echonet, tmp_path, model_name_or_path=str(tiny_encoder_dir), task="classification",
        label_column="ef", abnormal_below=50.0, mode="linear",
    ))
    model = DiscovrForVideoClassification.from_pretrained(tmp_path)
    assert model.config.problem_type == "single_label_classification"
    assert model.config.id2label == {0: "Normal", 1: "Abnormal"}
    table = result.predictions
    assert list(table.columns) == [
        "FileName", "label", "prediction", "num_clips", "probability_Normal", "probability_Abnormal"
    ]
    np.testing.assert_allclose(table["probability_Normal"] + table["probability_Abnormal"], 1.0, rtol=1e-5)
    file_list = pd.read_csv(synthetic_echonet / "FileList.csv").set_index("FileName")
    expected = ["Abnormal" if ef < 50 else "Normal" for ef in file_list.loc[table["FileName"], "EF"]]
    assert list(table["label"]) == expected
    assert set(result.metrics["test"]["clip_average"]) >= {"accuracy", "balanced_accuracy", "macro_f1"}


def test_pretraining_checkpoint_loads_its_encoder(tmp_path, caplog):
    torch.manual_seed(0)
    pretraining = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    pretraining.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        model = load_classification_model(str(tmp_path), 1, "regression", {0: "LVEF"})
    for name, tensor in pretraining.discovr.state_dict().items():
        torch.testing.assert_close(model.discovr.state_dict()[name], tensor)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("classifier.bias, classifier.weight" in message for message in warnings)
    assert not any("image_student" in message for message in warnings)


def test_incomplete_encoder_is_refused(tmp_path):
    DiscovrModel(DiscovrConfig(**tiny_config_kwargs())).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("encoder.layer.1.")}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="encoder.layer.1"):
        load_classification_model(str(tmp_path), 1, "regression", {0: "LVEF"})


def labelled_splits(train, validation, test, feature) -> DatasetDict:
    features = Features({"video": Value("string"), "y": feature})
    make = lambda values: Dataset.from_dict({"video": [f"v{i}" for i in range(len(values))], "y": values}, features=features)  # noqa: E731
    return DatasetDict({"train": make(train), "validation": make(validation), "test": make(test)})


def test_targets_from_every_kind_of_label_column():
    splits, id2label = attach_targets(
        labelled_splits(["b", "a"], ["a"], ["b"], Value("string")), "classification", "y"
    )
    assert id2label == {0: "a", 1: "b"} and splits["train"]["target"] == [1, 0]
    splits, id2label = attach_targets(
        labelled_splits([1, 0], [0], [1], ClassLabel(names=["Normal", "Abnormal"])), "classification", "y"
    )
    assert id2label == {0: "Normal", 1: "Abnormal"} and splits["test"]["target"] == [1]
    splits, id2label = attach_targets(
        labelled_splits([60.0, 35.0], [49.9], [50.0], Value("float64")), "classification", "y", abnormal_below=50
    )
    assert splits["train"]["target"] == [0, 1] and splits["validation"]["target"] == [1]
    assert splits["test"]["target"] == [0]


def test_bad_label_setups_are_explained():
    floats = labelled_splits([60.0], [50.0], [40.0], Value("float64"))
    with pytest.raises(ValueError, match="needs --label_column"):
        attach_targets(floats, "classification")
    with pytest.raises(ValueError, match="--abnormal_below"):
        attach_targets(floats, "classification", "y")
    with pytest.raises(ValueError, match="'ef' is not in the train split"):
        attach_targets(floats, "lvef")
    with pytest.raises(ValueError, match=r"validation split has classes absent .*\['c'\]"):
        attach_targets(labelled_splits(["a", "b"], ["c"], ["a"], Value("string")), "classification", "y")


def test_bad_arguments_are_refused(synthetic_echonet, tiny_config_file, tmp_path):
    with pytest.raises(ValueError, match="exactly one of"):
        finetune(quick_config(synthetic_echonet, tmp_path))
    with pytest.raises(ValueError, match="--k must be in 1..2"):
        finetune(quick_config(synthetic_echonet, tmp_path, config=str(tiny_config_file), mode="last_k", k=5))
    with pytest.raises(ValueError, match="uniform:K"):
        finetune(quick_config(synthetic_echonet, tmp_path, config=str(tiny_config_file), clips="uniform:"))


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--mode", "--k", "--task", "--label_column", "--clips", "--max_eval_videos", "--preset"):
        assert option in text


def test_layer_decay_scales_each_depth_and_reaches_peft_parameters():
    """Block i of L trains at lr * decay^(L - i), the embeddings at decay^(L + 1), the head at the full rate."""
    from discovr.training.finetune import apply_mode, layer_decay_optimizer

    config = DiscovrConfig(**tiny_config_kwargs(num_labels=1, problem_type="regression"))
    num_layers = config.num_hidden_layers
    for mode in ("full", "lora"):
        finetune_config = FinetuneConfig(output_dir="o", data_root="d", mode=mode, learning_rate=1.0, layer_decay=0.5)
        model = apply_mode(DiscovrForVideoClassification(config), finetune_config)
        optimizer = layer_decay_optimizer(model, finetune_config)
        rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        assert set(rate) == {id(p) for p in trainable.values()}
        for name, parameter in trainable.items():
            if "encoder.layer.0." in name:
                assert rate[id(parameter)] == 0.5 ** num_layers, name
            elif "classifier" in name:
                assert rate[id(parameter)] == 1.0, name
            elif "patch_embeddings" in name:
                assert rate[id(parameter)] == 0.5 ** (num_layers + 1), name
            no_decay = parameter.ndim <= 1 or name.endswith("cls_token")
            assert decay[id(parameter)] == (0.0 if no_decay else finetune_config.weight_decay), name
