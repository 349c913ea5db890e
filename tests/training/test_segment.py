"""`discovr-segment`: train, evaluate and predict on the tiny synthetic set, as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from discovr import DiscovrConfig, DiscovrForSemanticSegmentation, DiscovrForVideoClassification
from discovr.data.segmentation import CAMUS_STYLE_LABELS
from discovr.training import segment

from discovr_testing import tiny_config_kwargs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_echonet, tiny_encoder_dir):
    """A linear probe trained a few steps on the tiny encoder, and what `train` returned."""
    output = tmp_path_factory.mktemp("segment") / "model"
    argv = [
        "train", "--model_name_or_path", str(tiny_encoder_dir), "--data_root", str(synthetic_echonet),
        "--output_dir", str(output), "--max_steps", "4", "--per_device_train_batch_size", "2", "--num_workers", "0",
        "--num_bootstrap", "50", "--max_eval_videos", "2", "--disable_tqdm",
    ]
    assert segment.main(argv) == 0
    return output, json.loads((output / "metrics.json").read_text())


def test_train_saves_a_frozen_probe_with_its_processor_and_metrics(trained, tiny_encoder_dir):
    output, metrics = trained
    model = DiscovrForSemanticSegmentation.from_pretrained(output)
    encoder = DiscovrForSemanticSegmentation.from_pretrained(tiny_encoder_dir, num_labels=len(CAMUS_STYLE_LABELS))
    # Frozen by default: the backbone is the encoder's, unchanged by training.
    for name, weight in encoder.discovr.state_dict().items():
        assert torch.equal(model.discovr.state_dict()[name], weight), name
    assert model.config.id2label == dict(enumerate(CAMUS_STYLE_LABELS)) and model.config.freeze_backbone
    assert (output / "video_preprocessor_config.json").is_file()
    for split in ("validation", "test"):
        subset = metrics[split]["all_frames"]
        assert subset["num_videos"] == 2
        for structure in CAMUS_STYLE_LABELS[1:]:
            dice = subset["metrics"][f"dice_{structure}"]
            low, high = subset["intervals"][f"dice_{structure}"]
            assert 0.0 <= low <= dice <= high <= 1.0
        assert "ed_es" in metrics[split]  # the synthetic rows name their traced frames
    card = (output / "README.md").read_text()
    assert "image-segmentation" in card and str(tiny_encoder_dir) not in card


def test_evaluate_matches_the_training_run(trained, synthetic_echonet, tmp_path):
    output, metrics = trained
    result_file = tmp_path / "metrics.json"
    argv = [
        "evaluate", "--model_name_or_path", str(output), "--data_root", str(synthetic_echonet), "--splits", "test",
        "--max_eval_videos", "2", "--num_bootstrap", "50", "--output", str(result_file), "--disable_tqdm",
        "--device", "cpu",
    ]
    assert segment.main(argv) == 0
    assert json.loads(result_file.read_text())["test"] == metrics["test"]


def test_predict_writes_frames_summary_and_plots(trained, synthetic_echonet, tmp_path):
    output, _ = trained
    config = DiscovrConfig(**tiny_config_kwargs(num_labels=1, problem_type="regression"))
    regression_dir = tmp_path / "lvef"
    DiscovrForVideoClassification(config).save_pretrained(regression_dir)
    segment.model_processor(config).save_pretrained(regression_dir)
    videos = sorted((synthetic_echonet / "Videos").glob("*.avi"))[:2]
    out = tmp_path / "predicted"
    argv = ["predict", str(output), *map(str, videos), "--output_dir", str(out), "--regression_model",
            str(regression_dir), "--device", "cpu", "--disable_tqdm"]
    assert segment.main(argv) == 0
    summary = pd.read_csv(out / "segmentation_summary.csv")
    assert list(summary["FileName"]) == [video.name for video in videos]
    assert summary["error"].isna().all() and summary["ef_regression"].notna().all()
    for video, num_frames in zip(videos, summary["num_frames"]):
        frames = pd.read_csv(out / f"{video.stem}_frames.csv", keep_default_na=False)
        assert list(frames["frame"]) == list(range(num_frames))
        assert set(frames["phase"]) <= {"", "ED", "ES"}
        np.testing.assert_allclose(frames["time_s"], frames["frame"] / 50.0, rtol=1e-6)
        assert (out / f"{video.stem}_area.png").is_file() and (out / f"{video.stem}_overlay.png").is_file()


def test_predict_overlays_frames_decoded_as_the_segmentation_was(trained, synthetic_echonet, tmp_path):
    """A processor that crops each frame to its ultrasound sector, on a video with black side bands: the overlay's
    frames get the same crop as the frames that were segmented, so frames and label maps have one size."""
    import shutil

    import av

    from discovr import DiscovrVideoProcessor
    from discovr.video_processing_discovr import read_video

    output, _ = trained
    sector_model = tmp_path / "sector_model"
    shutil.copytree(output, sector_model)
    processor = DiscovrVideoProcessor.from_pretrained(sector_model)
    processor.do_mask_sector = True
    processor.save_pretrained(sector_model)
    frames, metadata = read_video(str(sorted((synthetic_echonet / "Videos").glob("*.avi"))[0]), None)
    banded = tmp_path / "banded.avi"
    with av.open(str(banded), "w") as container:
        stream = container.add_stream("mjpeg", rate=round(metadata.fps))
        stream.height, stream.width, stream.pix_fmt = frames.shape[-2], frames.shape[-1] + 48, "yuvj420p"
        for frame in frames:
            image = torch.nn.functional.pad(frame, (24, 24)).permute(1, 2, 0).contiguous().numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    out = tmp_path / "predicted"
    assert segment.main(["predict", str(sector_model), str(banded), "--output_dir", str(out), "--device", "cpu",
                         "--disable_tqdm"]) == 0
    assert (out / "banded_overlay.png").is_file()


def test_predict_names_a_failed_video_and_goes_on(trained, synthetic_echonet, tmp_path):
    output, _ = trained
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    video = next((synthetic_echonet / "Videos").glob("*.avi"))
    out = tmp_path / "predicted"
    assert segment.main(["predict", str(output), str(broken), str(video), "--output_dir", str(out), "--no_plots",
                         "--disable_tqdm"]) == 1
    summary = pd.read_csv(out / "segmentation_summary.csv", keep_default_na=False)
    assert "broken.avi" in summary.loc[0, "error"] and summary.loc[1, "error"] == ""
    assert not (out / "broken_frames.csv").exists() and not list(out.glob("*.png"))


def test_usage(capsys):
    assert segment.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert segment.main([]) == 2
    assert segment.main(["segment"]) == 2
    assert "unknown command 'segment'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        segment.main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--freeze" not in capsys.readouterr().out  # what trains is the one --mode option


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_full_and_lora_modes_train_the_encoder(mode, synthetic_echonet, tiny_encoder_dir, tmp_path):
    output = tmp_path / mode
    argv = [
        "train", "--model_name_or_path", str(tiny_encoder_dir), "--data_root", str(synthetic_echonet),
        "--output_dir", str(output), "--mode", mode, "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--num_workers", "0", "--num_bootstrap", "10", "--max_eval_videos", "1", "--learning_rate", "0.05",
        "--disable_tqdm",
    ]
    assert segment.main(argv) == 0
    model = DiscovrForSemanticSegmentation.from_pretrained(output)
    encoder = DiscovrForSemanticSegmentation.from_pretrained(tiny_encoder_dir, num_labels=len(CAMUS_STYLE_LABELS))
    query = "encoder.layer.0.attention.query.weight"
    # LoRA is merged into the saved weights: a plain model whose attention moved; full fine-tuning moves it too.
    assert not torch.equal(model.discovr.state_dict()[query], encoder.discovr.state_dict()[query])
    assert not any("lora" in name for name in model.state_dict())
    assert not model.config.freeze_backbone
