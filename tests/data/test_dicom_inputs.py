"""`.dcm` wherever a video path goes: processor, pipeline, discovr-predict, DISCOVR manifests; the layering rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.uid import JPEGBaseline8Bit
from transformers import pipeline

from discovr import DiscovrConfig, DiscovrForVideoClassification, DiscovrVideoProcessor
from discovr.data import VideoTransform, load_video_csv
from discovr.data.avi import write_avi
from discovr.data.dicom import read_dicom_video
from discovr.data.prepare import PrepareOptions, prepare
from discovr.data.sector import crop_to_sector, find_sector
from discovr.data.synthetic_dicom import write_echo_dicom
from discovr.inference.predict import collect_videos, load_predictor, prediction_table
from discovr.video_processing_discovr import read_video
from discovr_testing import tiny_config_kwargs


SIZE = 32  # the tiny model's input size


@pytest.fixture(scope="module")
def echo_dicom(tmp_path_factory, echo_scene):
    """A 40-frame JPEG Baseline YBR_FULL_422 echo at 50 fps, with text and an ECG outside the sector."""
    path = tmp_path_factory.mktemp("dicom") / "echo.dcm"
    write_echo_dicom(path, np.repeat(echo_scene.frames[..., None], 3, axis=-1), transfer_syntax=JPEGBaseline8Bit,
                     photometric="YBR_FULL_422", fps=50)
    return path


@pytest.fixture(scope="module")
def export_avi(tmp_path_factory, echo_scene):
    """The same scene as an AVI export, burned-in text and ECG included."""
    path = tmp_path_factory.mktemp("export") / "export.avi"
    write_avi(path, echo_scene.frames, 50)
    return path


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lvef_model")
    torch.manual_seed(0)
    config = DiscovrConfig(**tiny_config_kwargs(num_labels=1, problem_type="regression", id2label={0: "LVEF"},
                                                label2id={"LVEF": 0}))
    DiscovrForVideoClassification(config).save_pretrained(directory)
    DiscovrVideoProcessor(num_frames=config.num_frames, frame_stride=3, size={"height": SIZE, "width": SIZE}).save_pretrained(directory)
    return directory


def raw_processor(**kwargs) -> DiscovrVideoProcessor:
    return DiscovrVideoProcessor(num_frames=8, frame_stride=3, size={"height": SIZE, "width": SIZE}, do_rescale=False,
                                 do_normalize=False, **kwargs)


def test_processor_reads_dicom_with_pydicom_and_crops_the_sector(echo_dicom):
    batch = raw_processor()(str(echo_dicom), return_tensors="pt", return_metadata=True)
    metadata = batch["video_metadata"][0]
    # The file's own frame count and rate (FFmpeg would report others), and the centred strided clip.
    assert metadata.total_num_frames == 40 and metadata.fps == pytest.approx(50) and metadata.video_backend == "pydicom"
    assert metadata.frames_indices == list(range(9, 33, 3))
    frames, dicom_metadata = read_dicom_video(echo_dicom)
    cropped = crop_to_sector(frames[metadata.frames_indices], find_sector(frames, dicom_metadata))
    assert (metadata.height, metadata.width) == cropped.shape[1:3]
    expected = raw_processor()(cropped, do_sample_frames=False, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], expected)


def test_do_mask_sector_masks_other_files_and_can_be_turned_off(export_avi, echo_dicom, echo_scene):
    plain = raw_processor()(str(export_avi), return_tensors="pt", return_metadata=True)
    masked = raw_processor(do_mask_sector=True)(str(export_avi), return_tensors="pt", return_metadata=True)
    assert (plain["video_metadata"][0].height, plain["video_metadata"][0].width) == (288, 320)
    side = masked["video_metadata"][0].width
    assert masked["video_metadata"][0].height == side and side < 288
    frames = np.repeat(echo_scene.frames[..., None], 3, axis=-1)
    sector = find_sector(frames)
    assert sector.square[2] == side  # the same sector as found from the source frames

    unmasked_dicom = raw_processor(do_mask_sector=False)(str(echo_dicom), return_tensors="pt", return_metadata=True)
    assert (unmasked_dicom["video_metadata"][0].height, unmasked_dicom["video_metadata"][0].width) == (288, 320)
    with pytest.raises(ValueError, match="setting of the processor"):
        raw_processor()(str(echo_dicom), do_mask_sector=True)


def test_the_setting_is_saved_with_the_processor(tmp_path):
    raw_processor(do_mask_sector=True).save_pretrained(tmp_path)
    assert DiscovrVideoProcessor.from_pretrained(tmp_path).do_mask_sector is True


def test_pipeline_on_dicom_equals_pipeline_on_the_prepared_avi(regressor_dir, echo_dicom, tmp_path):
    input_dir = tmp_path / "archive"
    input_dir.mkdir()
    (input_dir / "echo.dcm").write_bytes(echo_dicom.read_bytes())
    result = prepare(input_dir, tmp_path / "prepared", options=PrepareOptions(size=SIZE), progress=False)
    (name,) = result.file_list["FileName"]
    avi = tmp_path / "prepared" / "Videos" / f"{name}.avi"

    # Raw frames (no rescaling): the DICOM path and the AVI differ by the MJPEG coding of the same frames, exactly.
    processor = DiscovrVideoProcessor.from_pretrained(regressor_dir, do_rescale=False, do_normalize=False)
    from_dicom = processor(str(echo_dicom), return_tensors="pt")["pixel_values"][0].to(torch.uint8)
    from_avi = processor(str(avi), return_tensors="pt")["pixel_values"][0].to(torch.uint8)
    write_avi(tmp_path / "clip.avi", from_dicom.permute(0, 2, 3, 1).numpy(), 50)
    coded, _ = read_video(tmp_path / "clip.avi")
    torch.testing.assert_close(from_avi, coded, atol=1, rtol=0)
    assert (from_avi.float() - from_dicom.float()).abs().mean() > 0  # the codec did change them

    lvef = pipeline("video-classification", model=str(regressor_dir))
    dicom_score = lvef(str(echo_dicom), clips=3)[0]["score"]
    avi_score = lvef(str(avi), clips=3)[0]["score"]
    unmasked_score = lvef(torch.from_numpy(read_dicom_video(echo_dicom)[0]).permute(0, 3, 1, 2), clips=3)[0]["score"]
    # The MJPEG difference moves the score far less than leaving out the sector crop does.
    assert abs(dicom_score - avi_score) < 0.2 * abs(dicom_score - unmasked_score)


def test_multi_clip_loading_uses_the_processor_decoder(echo_dicom):
    clips = raw_processor().decode_clips(str(echo_dicom), clips="uniform:3")
    assert clips.num_video_frames == 40 and clips.starts == [0, 9, 18]


def test_discovr_predict_takes_dicom_files_and_folders(regressor_dir, echo_dicom):
    videos = collect_videos([str(echo_dicom), str(echo_dicom.parent)])
    assert [video.path for video in videos] == [echo_dicom, echo_dicom]
    table = prediction_table(load_predictor(regressor_dir, "cpu"), videos, progress=False)
    assert (table["error"] == "").all() and table["prediction"].notna().all()


def test_discovr_manifests_take_dicom_paths(tmp_path, echo_dicom):
    (tmp_path / "echo.dcm").write_bytes(echo_dicom.read_bytes())
    pd.DataFrame({"Path": ["echo.dcm"], "class": ["Normal"]}).to_csv(tmp_path / "train.csv", index=False)
    dataset = load_video_csv(tmp_path / "train.csv", tmp_path).with_transform(VideoTransform(raw_processor(), "label"))
    assert dataset[0]["pixel_values"].shape == (8, 3, SIZE, SIZE)


def test_model_core_imports_no_data_module_and_remote_code_explains_dicom(tmp_path, echo_dicom, export_avi):
    """The layering rule: `discovr.data` is imported only once a DICOM is read; remote code says what to install."""
    probe = "import sys, discovr; print(sorted(m for m in sys.modules if m.startswith('discovr.data')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]

    raw_processor().save_pretrained(tmp_path / "processor")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["discovr"] = None  # as for a user without the package
        from transformers import AutoVideoProcessor
        processor = AutoVideoProcessor.from_pretrained({str(tmp_path / "processor")!r}, trust_remote_code=True)
        print(processor({str(export_avi)!r}, return_tensors="pt")["pixel_values"].shape)
        try:
            processor({str(echo_dicom)!r})
        except Exception as error:
            print(type(error).__name__, error)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([1, 8, 3, 32, 32])" in result.stdout
    assert "VideoDecodeError" in result.stdout and "pip install 'discovr[dicom]'" in result.stdout
