"""`discovr-prepare`: a mixed archive to an EchoNet-Dynamic folder, every input accounted for, no PHI in any output."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread, examples
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

import discovr.data.prepare as prepare_module
from discovr.data import ManifestError, load_echonet_dynamic
from discovr.data.avi import write_avi
from discovr.data.dicom import read_dicom_video
from discovr.data.manifests import ECHONET_COLUMNS
from discovr.data.prepare import PrepareOptions, main, prepare, split_for
from discovr.data.sector import crop_to_sector, find_sector
from discovr.data.synthetic_dicom import COLOR_FLOW_REGION, TISSUE_REGION, render_echo_scene, write_echo_dicom
from discovr.video_processing_discovr import read_video


PATIENT_NAME, PATIENT_ID, OTHER_ID = "Zyxwvut^Planted", "PLANTED-ID-8472", "PLANTED-ID-9913"
EXPECTED = {  # input -> (status, reason)
    "study1/a1.dcm": ("converted", ""),
    "study1/IM0002": ("converted", ""),
    "study2/b1.dcm": ("converted", ""),
    "pydicom/example.dcm": ("converted", ""),
    "exports/export.avi": ("converted", ""),
    "study3/a1_copy.dcm": ("skipped", "duplicate_sopinstanceuid"),
    "study2/still.dcm": ("skipped", "single_frame"),
    "study2/doppler.dcm": ("skipped", "colour_doppler"),
    "study2/ct.dcm": ("skipped", "not_ultrasound"),
    "study2/norate.dcm": ("skipped", "unknown_frame_rate"),
    "study2/cut.dcm": ("skipped", "corrupt_pixel_data"),
    "notes.txt": ("skipped", "not_dicom_or_video"),
}
NUM_FRAMES = 16


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, list[str]]:
    """A mixed archive (see EXPECTED), with a planted patient name and IDs; returns it and the UIDs it holds."""
    root = tmp_path_factory.mktemp("archive")
    for folder in ("study1", "study2", "pydicom", "exports", "study3"):
        (root / folder).mkdir()
    scene = render_echo_scene(num_frames=NUM_FRAMES, seed=5)
    rgb = np.repeat(scene.frames[..., None], 3, axis=-1)
    x0, y0, x1, y1 = scene.sector_box
    patient = {"patient_name": PATIENT_NAME, "patient_id": PATIENT_ID}
    uids = [
        write_echo_dicom(root / "study1/a1.dcm", rgb, transfer_syntax=JPEGBaseline8Bit, photometric="YBR_FULL_422", **patient),
        write_echo_dicom(root / "study1/IM0002", scene.frames, transfer_syntax=RLELossless, fps=30,
                         regions=[(x0, y0, x1, y1, TISSUE_REGION)], **patient),
        write_echo_dicom(root / "study2/b1.dcm", scene.frames, regions=[(2 * x0, 2 * y0, 2 * x1, 2 * y1, TISSUE_REGION)],
                         patient_name=PATIENT_NAME, patient_id=OTHER_ID),
        write_echo_dicom(root / "study2/still.dcm", scene.frames[:1], **patient),
        write_echo_dicom(root / "study2/doppler.dcm", scene.frames,
                         regions=[(x0, y0, x1, y1, TISSUE_REGION), (x0 + 40, y0 + 40, x0 + 90, y0 + 90, COLOR_FLOW_REGION)], **patient),
        write_echo_dicom(root / "study2/ct.dcm", scene.frames, modality="CT", **patient),
        write_echo_dicom(root / "study2/norate.dcm", scene.frames, frame_rate_attribute=None, **patient),
        write_echo_dicom(root / "study2/cut.dcm", scene.frames, transfer_syntax=ExplicitVRLittleEndian,
                         truncate_pixel_data=5000, **patient),
    ]
    shutil.copy(root / "study1/a1.dcm", root / "study3/a1_copy.dcm")
    shutil.copy(examples.get_path("ybr_color"), root / "pydicom/example.dcm")
    example = dcmread(root / "pydicom/example.dcm", stop_before_pixels=True)
    uids += [str(example.SOPInstanceUID), str(example.StudyInstanceUID)]
    write_avi(root / "exports/export.avi", scene.frames, 25)
    (root / "notes.txt").write_text("reading notes\n")
    return root, uids


def run_cli(*argv: str) -> int:
    return main([*argv, "--no_progress"])


@pytest.fixture(scope="module")
def prepared(archive, tmp_path_factory):
    """One CLI run over the archive (with --write_mapping), and everything it printed and logged."""
    root, _ = archive
    output = tmp_path_factory.mktemp("prepared") / "echonet"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main([str(root), str(output), "--write_mapping", "--no_progress"])
    finally:
        logging.getLogger().removeHandler(handler)
    logs = "\n".join(record.getMessage() for record in records)
    return output, status, stdout.getvalue() + stderr.getvalue() + logs


def table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def test_every_input_has_one_report_row_with_its_outcome(prepared):
    output, status, printed = prepared
    assert status == 0
    report = table(output / "prepare_report.csv")
    assert sorted(report["input"]) == sorted(EXPECTED)
    outcomes = dict(zip(report["input"], zip(report["status"], report["reason"])))
    assert outcomes == EXPECTED
    skipped = report[report["status"] == "skipped"]
    assert (skipped["detail"] != "").all()
    assert "same SOPInstanceUID as 'study1/a1.dcm'" in skipped.set_index("input").loc["study3/a1_copy.dcm", "detail"]
    assert "12 inputs: 5 converted (0 by an earlier run), 7 skipped, 0 failed" in printed


def test_file_list_and_videos_are_an_echonet_dynamic_folder(prepared, archive):
    output, _, _ = prepared
    file_list = table(output / "FileList.csv")
    assert list(file_list.columns) == ECHONET_COLUMNS
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", name) for name in file_list["FileName"])
    assert list(file_list["FileName"]) == sorted(file_list["FileName"])  # no trace of the input order
    assert (file_list[["EF", "ESV", "EDV"]] == "").all().all()
    mapping = table(output / "prepare_mapping.csv").set_index("input")["FileName"]
    rows = file_list.set_index("FileName")
    expected = {"study1/a1.dcm": (50, NUM_FRAMES), "study1/IM0002": (30, NUM_FRAMES), "study2/b1.dcm": (50, NUM_FRAMES),
                "pydicom/example.dcm": (30, 30), "exports/export.avi": (25, NUM_FRAMES)}
    for relative, (fps, frames) in expected.items():
        row = rows.loc[mapping[relative]]
        assert (float(row["FPS"]), int(row["NumberOfFrames"])) == (fps, frames)
        assert (row["FrameHeight"], row["FrameWidth"]) == ("112", "112")
        video, metadata = read_video(output / "Videos" / f"{mapping[relative]}.avi")
        assert video.shape == (frames, 3, 112, 112) and metadata.fps == pytest.approx(fps)
    report = table(output / "prepare_report.csv").set_index("input")
    assert report.loc["study1/IM0002", "sector_method"] == "regions"
    assert report.loc["study1/IM0002", "pixel_spacing_mm"] != ""
    assert report.loc["study2/b1.dcm", "sector_method"] == "pixels"
    assert "outside" in report.loc["study2/b1.dcm", "sector_note"]
    assert report.loc["pydicom/example.dcm", "sector_method"] == "pixels"

    # The output is the sector crop of the source, resized, within MJPEG error.
    root, _ = archive
    frames, metadata = read_dicom_video(root / "study1/a1.dcm")
    expected_video = prepare_module._resize(crop_to_sector(frames, find_sector(frames, metadata)), 112)
    video, _ = read_video(output / "Videos" / f"{mapping['study1/a1.dcm']}.avi")
    assert np.abs(video.permute(0, 2, 3, 1).numpy().astype(int) - expected_video).mean() < 4


def test_outputs_carry_no_planted_identifier(prepared, archive):
    output, _, printed = prepared
    root, uids = archive
    planted = [PATIENT_NAME, PATIENT_NAME.replace("^", " "), "Zyxwvut", PATIENT_ID, OTHER_ID, *uids]
    assert PATIENT_ID.encode() in (root / "study1/a1.dcm").read_bytes()  # the grep finds them where they are
    files = [path for path in output.rglob("*") if path.is_file()]
    assert len(files) >= 10  # videos, file list, report, mapping, key, journal, settings
    for path in files:
        content = path.read_bytes()
        for value in planted:
            assert value.encode() not in content, f"{value!r} found in {path.name}"
    for value in planted:
        assert value not in printed
    # Names, file list and shareable videos do not even carry the input paths.
    for path in [*(output / "Videos").iterdir(), output / "FileList.csv"]:
        assert b"study1" not in path.read_bytes() and b"a1.dcm" not in path.read_bytes()


def test_split_is_by_patient(prepared):
    output, _, _ = prepared
    report = table(output / "prepare_report.csv").set_index("input")
    assert report.loc["study1/a1.dcm", "split"] == report.loc["study1/IM0002", "split"]
    assert report.loc["study1/a1.dcm", "split_source"] == "patient"
    assert report.loc["exports/export.avi", "split_source"] == "file"  # AVI exports carry no patient


def test_split_hash_keeps_patients_whole_and_follows_the_fractions():
    key = bytes(range(32))
    splits = [split_for(key, 0, f"patient-{i}", (0.7, 0.15, 0.15)) for i in range(4000)]
    shares = pd.Series(splits).value_counts(normalize=True)
    assert shares["TRAIN"] == pytest.approx(0.7, abs=0.03) and shares["VAL"] == pytest.approx(0.15, abs=0.03)
    assert split_for(key, 0, "patient-7", (0.7, 0.15, 0.15)) == splits[7]
    assert [split_for(key, 1, f"patient-{i}", (0.7, 0.15, 0.15)) for i in range(50)] != splits[:50]
    assert [split_for(bytes(32), 0, f"patient-{i}", (0.7, 0.15, 0.15)) for i in range(50)] != splits[:50]


def test_the_ef_loader_requires_labels_unless_told_otherwise(prepared):
    output, _, _ = prepared
    with pytest.raises(ManifestError, match="EF missing or not a number"):
        load_echonet_dynamic(output)
    splits = load_echonet_dynamic(output, require_ef=False)
    assert sum(len(split) for split in splits.values()) == 5


def test_resume_after_an_interruption_converts_only_the_rest(prepared, archive, tmp_path, monkeypatch):
    reference, _, _ = prepared
    root, _ = archive
    output = tmp_path / "resumed"
    output.mkdir()
    shutil.copy(reference / "prepare_key", output / "prepare_key")  # the same pseudonyms as the reference run
    original, calls = prepare_module.convert, []

    def interrupted(*args):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(prepare_module, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, output, progress=False)
    first = {path.name: path.stat().st_mtime_ns for path in (output / "Videos").glob("*.avi")}
    assert len(first) == 2

    monkeypatch.setattr(prepare_module, "convert", original)
    result = prepare(root, output, progress=False)
    report = result.report.set_index("input")
    assert (report["detail"] == "converted by an earlier run").sum() == 2
    assert {path.name: path.stat().st_mtime_ns for path in (output / "Videos").glob("*.avi") if path.name in first} == first
    pd.testing.assert_frame_equal(table(output / "FileList.csv"), table(reference / "FileList.csv"))
    for video in (reference / "Videos").glob("*.avi"):
        assert (output / "Videos" / video.name).read_bytes() == video.read_bytes()


def test_worker_processes_give_the_same_outputs(prepared, archive, tmp_path):
    reference, _, _ = prepared
    root, _ = archive
    assert run_cli(str(root), str(tmp_path / "out"), "--num_workers", "2", "--key_file", str(reference / "prepare_key")) == 0
    pd.testing.assert_frame_equal(table(tmp_path / "out" / "FileList.csv"), table(reference / "FileList.csv"))
    pd.testing.assert_frame_equal(table(tmp_path / "out" / "prepare_report.csv"), table(reference / "prepare_report.csv"))
    for video in (reference / "Videos").glob("*.avi"):
        assert (tmp_path / "out" / "Videos" / video.name).read_bytes() == video.read_bytes()
    assert not (tmp_path / "out" / "prepare_mapping.csv").exists()  # only with --write_mapping
    assert not (tmp_path / "out" / "prepare_key").exists()  # the key stays where it was given


def test_labels_match_by_path_and_uid_and_the_folder_trains(archive, tmp_path, tiny_config_file):
    root, uids = archive
    labels = pd.DataFrame({
        "Path": ["study1/a1.dcm", "", "study2/b1.dcm", "pydicom/example.dcm", "exports/export.avi", "gone/x.dcm", ""],
        "SOPInstanceUID": ["", uids[1], "", "", "", "", "1.2.3.4.5"],
        "EF": ["55.5", "30", "62", "48", "", "40", "41"],
        "Split": ["TRAIN", "TRAIN", "VAL", "TEST", "TRAIN", "", ""],
        "View": ["A4C", "A4C", "A2C", "PLAX", "A4C", "", ""],
    })
    labels.to_csv(tmp_path / "labels.csv", index=False)
    output = tmp_path / "labelled"
    assert run_cli(str(root), str(output), "--labels", str(tmp_path / "labels.csv"), "--class_columns", "View",
                   "--write_mapping") == 0
    mapping = table(output / "prepare_mapping.csv").set_index("input")["FileName"]
    rows = table(output / "FileList.csv").set_index("FileName")
    assert list(rows.columns)[-1] == "View"
    assert rows.loc[mapping["study1/a1.dcm"], ["EF", "Split", "View"]].tolist() == ["55.5", "TRAIN", "A4C"]
    assert rows.loc[mapping["study1/IM0002"], ["EF", "Split"]].tolist() == ["30", "TRAIN"]  # matched by its UID
    assert rows.loc[mapping["exports/export.avi"], "EF"] == ""  # labelled without an EF: kept empty
    report = table(output / "prepare_report.csv").set_index("input")
    assert report.loc["study1/a1.dcm", "label_match"] == "path"
    assert report.loc["study1/IM0002", "label_match"] == "SOPInstanceUID"
    assert report.loc["study2/still.dcm", "label_match"] == "unmatched"
    unmatched = table(output / "prepare_unmatched_labels.csv")
    assert unmatched["line"].tolist() == ["7", "8"] and unmatched["Path"].tolist() == ["gone/x.dcm", ""]

    # discovr-pretrain needs no labels; discovr-finetune trains on the labelled ones.
    from discovr.training.finetune import main as finetune_main
    from discovr.training.pretrain import main as pretrain_main

    assert pretrain_main([
        "--config", str(tiny_config_file), "--data_root", str(output), "--output_dir", str(tmp_path / "pretrain"),
        "--max_steps", "2", "--per_device_batch_size", "2", "--num_workers", "0", "--frame_stride", "2",
        "--epochs", "1", "--warmup_epochs", "0", "--logging_steps", "1",
    ]) == 0
    export = rows.index[rows["EF"] == ""]
    file_list = table(output / "FileList.csv")
    file_list[~file_list["FileName"].isin(export)].to_csv(output / "FileList.csv", index=False)
    assert finetune_main([
        "--config", str(tiny_config_file), "--data_root", str(output), "--output_dir", str(tmp_path / "finetune"),
        "--mode", "full", "--max_steps", "2", "--eval_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "2", "--num_workers", "0", "--frame_stride", "2", "--disable_tqdm",
    ]) == 0


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda root, tmp: [str(tmp / "absent"), str(tmp / "out")], "is not a folder"),
        (lambda root, tmp: [str(root), str(root / "out")], "must not be inside INPUT_DIR"),
        (lambda root, tmp: [str(root), str(tmp / "out"), "--size", "113"], "--size must be an even number"),
        (lambda root, tmp: [str(root), str(tmp / "out"), "--labels", str(tmp / "bad.csv")], r"EF is not a number on line\(s\) 2"),
        (lambda root, tmp: [str(root), str(tmp / "out"), "--labels", str(tmp / "bad.csv"), "--class_columns", "Nope"],
         "--class_columns .'Nope'. are not columns"),
        (lambda root, tmp: [str(root), str(tmp / "out"), "--key_file", str(tmp / "bad_key")], "is not a hex key"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(archive, tmp_path, capsys, make_args, message):
    root, _ = archive
    pd.DataFrame({"Path": ["study1/a1.dcm"], "EF": ["fifty"]}).to_csv(tmp_path / "bad.csv", index=False)
    (tmp_path / "bad_key").write_text("not hex")
    assert main(make_args(root, tmp_path)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("discovr-prepare: error: ") and re.search(message, error[-1])
    assert "Traceback" not in "\n".join(error)
    assert not (tmp_path / "out").exists()  # nothing written


def test_other_settings_need_another_folder_or_overwrite(prepared, archive, capsys):
    output, _, _ = prepared
    root, _ = archive
    assert main([str(root), str(output), "--size", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("INPUT_DIR", "OUTPUT_DIR", "--size", "--fps", "--default_fps", "--labels", "--class_columns", "--seed",
                   "--split_fractions", "--key_file", "--write_mapping", "--num_workers", "--overwrite", "colour_doppler",
                   "Exit status"):
        assert option in text


def test_fps_resamples_and_default_fps_fills_in(archive, tmp_path):
    root, _ = archive
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy(root / "study1/a1.dcm", subset / "a1.dcm")  # 16 frames at 50 fps
    shutil.copy(root / "study2/norate.dcm", subset / "norate.dcm")
    result = prepare(subset, tmp_path / "out", options=PrepareOptions(size=64, fps=25, default_fps=50), progress=False)
    assert result.report["status"].tolist() == ["converted", "converted"]
    assert result.file_list["NumberOfFrames"].tolist() == [8, 8] and result.file_list["FPS"].tolist() == [25.0, 25.0]
    assert result.report.set_index("input").loc["norate.dcm", "fps_source"] == "default_fps"
