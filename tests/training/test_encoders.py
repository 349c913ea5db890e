"""`--encoder teacher|student`: which video encoder of a `DiscovrForPreTraining` folder fine-tuning, segmentation and
evaluation use."""

from __future__ import annotations

import pytest
import torch

from discovr import DiscovrConfig
from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training.encoders import is_pretraining_folder, pretraining_encoder
from discovr.training.evaluate_representations import load_encoder
from discovr.training import segment
from discovr.training.finetune import FinetuneConfig, build_model

from discovr_testing import tiny_config_kwargs


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory):
    """A saved pretraining model whose teacher differs from its student, as after any training step."""
    torch.manual_seed(0)
    model = DiscovrForPreTraining(DiscovrConfig(**tiny_config_kwargs()))
    with torch.no_grad():
        for parameter in model.video_teacher.parameters():
            parameter.add_(0.5)
    directory = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(directory)
    return directory, model


def assert_same_weights(module, reference):
    reference_state = reference.state_dict()
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, reference_state[name], msg=name)


def test_pretraining_folders_are_recognised(pretraining_dir, tmp_path):
    directory, model = pretraining_dir
    assert is_pretraining_folder(directory)
    model.discovr.save_pretrained(tmp_path)
    assert not is_pretraining_folder(tmp_path) and not is_pretraining_folder(tmp_path / "missing")


@pytest.mark.parametrize("encoder", ["teacher", "student"])
def test_evaluation_and_fine_tuning_take_the_chosen_encoder(pretraining_dir, tmp_path, encoder):
    directory, model = pretraining_dir
    expected = model.video_teacher if encoder == "teacher" else model.discovr
    assert_same_weights(pretraining_encoder(directory, encoder), expected)
    assert_same_weights(load_encoder(directory, encoder), expected)
    classifier, _ = build_model(
        FinetuneConfig(output_dir=str(tmp_path), data_root=str(tmp_path), model_name_or_path=str(directory),
                       encoder=encoder),
        num_labels=1, problem_type="regression", id2label={0: "LVEF"},
    )
    assert_same_weights(classifier.discovr, expected)
    assert classifier.config.num_labels == 1 and classifier.config.problem_type == "regression"
    assert classifier.config.id2label == {0: "LVEF"} and classifier.config.use_mean_pooling
    segmenter, _ = segment.build_model(
        segment.SegmentTrainConfig(model_name_or_path=str(directory), data_root=str(tmp_path),
                                   output_dir=str(tmp_path), encoder=encoder, head="light"),
        label_names=("background", "lv_cavity"),
    )
    assert_same_weights(segmenter.discovr, expected)
    assert segmenter.config.num_labels == 2 and segmenter.config.segmentation_head == "light"
    assert not any(parameter.requires_grad for parameter in segmenter.discovr.parameters())


def test_the_teacher_is_the_default(pretraining_dir):
    directory, model = pretraining_dir
    assert_same_weights(load_encoder(directory), model.video_teacher)
    assert FinetuneConfig(output_dir="o", data_root="d").encoder == "teacher"
    with pytest.raises(ValueError, match="encoder must be one of"):
        pretraining_encoder(directory, "ema")
