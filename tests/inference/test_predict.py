"""`discovr-predict`: videos, directories and manifests to one CSV row per video, bad videos as error rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import pipeline

from discovr import DiscovrConfig, DiscovrForVideoClassification, DiscovrVideoProcessor
from discovr.inference.predict import build_parser, collect_videos, load_predictor, main, prediction_table
from discovr_testing import tiny_config_kwargs


def save_model(directory: Path, **config_overrides) -> Path:
    torch.manual_seed(0)
    model = DiscovrForVideoClassification(DiscovrConfig(**tiny_config_kwargs(**config_overrides)))
    model.save_pretrained(directory)
    size = model.config.image_size
    processor = DiscovrVideoProcessor(num_frames=model.config.num_frames, size={"height": size, "width": size})
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def lvef_model(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("lvef_model"), num_labels=1, problem_type="regression", id2label={0: "LVEF"},
        label2id={"LVEF": 0},
    )


@pytest.fixture(scope="module")
def echonet_subset(synthetic_echonet, tmp_path_factory) -> Path:
    """Four videos of the synthetic set with their FileList rows, the third truncated, plus a row without a video."""
    root = tmp_path_factory.mktemp("echonet_subset")
    (root / "Videos").mkdir()
    file_list = pd.read_csv(synthetic_echonet / "FileList.csv").head(4)
    for name in file_list["FileName"]:
        shutil.copy(synthetic_echonet / "Videos" / f"{name}.avi", root / "Videos" / f"{name}.avi")
    truncated = root / "Videos" / f"{file_list['FileName'][2]}.avi"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    missing = file_list.iloc[[0]].assign(FileName="NotThere", EF=55.0)
    pd.concat([file_list, missing]).to_csv(root / "FileList.csv", index=False)
    return root


def test_echonet_manifest_gives_a_row_per_video_with_errors_for_bad_ones(lvef_model, echonet_subset, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    status = main([str(lvef_model), str(echonet_subset / "FileList.csv"), "--output", str(output), "--clips", "2"])
    assert status == 1

    table = pd.read_csv(output, keep_default_na=False)
    file_list = pd.read_csv(echonet_subset / "FileList.csv")
    assert list(table.columns) == ["FileName", "Split", "EF", "prediction", "num_clips", "error"]
    assert table["FileName"].tolist() == file_list["FileName"].tolist()
    assert table["EF"].astype(float).tolist() == pytest.approx(file_list["EF"].tolist())

    good = table[table["error"] == ""]
    assert good["FileName"].tolist() == file_list["FileName"][[0, 1, 3]].tolist()
    assert good["num_clips"].astype(int).tolist() == [2, 2, 2]
    predictor = pipeline("video-classification", model=str(lvef_model))
    first = predictor(str(echonet_subset / "Videos" / f"{good['FileName'].iloc[0]}.avi"), clips=2)
    assert float(good["prediction"].iloc[0]) == pytest.approx(first[0]["score"], abs=1e-4)

    errors = table.set_index("FileName")["error"]
    assert "truncated" in errors[file_list["FileName"][2]]
    assert "file not found" in errors["NotThere"]
    assert (table.loc[table["error"] != "", ["prediction", "num_clips"]] == "").all().all()


def test_directory_and_files_with_a_corrupt_video(lvef_model, synthetic_echonet, tmp_path, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    names = sorted(path.name for path in (synthetic_echonet / "Videos").glob("*.avi"))[:2]
    for name in names:
        shutil.copy(synthetic_echonet / "Videos" / name, videos / name)
    (videos / "corrupt.avi").write_bytes(b"RIFF this is not a video")
    (videos / "notes.txt").write_text("ignored")

    entries = collect_videos([videos, tmp_path / "missing.mp4"])
    assert [entry.file_name for entry in entries] == [*sorted([*names, "corrupt.avi"]), "missing.mp4"]

    table = prediction_table(load_predictor(lvef_model, "cpu"), entries, clips="all", batch_size=4, progress=False)
    assert list(table.columns) == ["FileName", "prediction", "num_clips", "error"]
    table = table.set_index("FileName")
    assert table.loc[names, "error"].tolist() == ["", ""]
    assert "not a readable video" in table.loc["corrupt.avi", "error"]
    assert "file not found" in table.loc["missing.mp4", "error"]
    # "all" averages every start at which a whole clip fits: frames - (4 - 1) * 3 of them.
    frame_counts = pd.read_csv(synthetic_echonet / "FileList.csv").set_index("FileName")["NumberOfFrames"]
    assert table.loc[names, "num_clips"].tolist() == [frame_counts[Path(name).stem] - 9 for name in names]
    assert "corrupt.avi" in caplog.text and "missing.mp4" in caplog.text


def test_discovr_csv_with_a_classifier(synthetic_echonet, tmp_path):
    classes = ["abnormal", "normal"]
    model_dir = save_model(
        tmp_path / "model", num_labels=2, id2label=dict(enumerate(classes)),
        label2id={name: i for i, name in enumerate(classes)},
    )
    stems = pd.read_csv(synthetic_echonet / "FileList.csv")["FileName"][:2].tolist()
    manifest = tmp_path / "clips.csv"
    manifest.write_text("Path,class\n" + "".join(f"Videos/{stem},{c}\n" for stem, c in zip(stems, classes)))

    output = tmp_path / "predictions.csv"
    status = main([str(model_dir), str(manifest), "--video_root", str(synthetic_echonet), "--output", str(output)])
    assert status == 0
    table = pd.read_csv(output, keep_default_na=False)
    assert list(table.columns) == ["FileName", "class", "label", "score", "num_clips", "error"]
    assert table["class"].tolist() == classes
    assert set(table["label"]) <= set(classes)
    assert all(0.5 <= score <= 1.0 for score in table["score"])


def test_help_and_argument_errors(capsys):
    help_text = build_parser().format_help()
    for option in ("--output", "--clips", "--batch_size", "--device", "--video_root", "VIDEO_OR_DIR_OR_MANIFEST"):
        assert option in help_text
    with pytest.raises(SystemExit):
        main(["model", "video.avi", "--clips", "zero"])
    assert "clips must be 'center', 'random', 'all', 'uniform:K' or a positive integer K" in capsys.readouterr().err
