"""`read_dicom_video`: every transfer syntax and photometric interpretation, frame rates, metadata and refusals."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from pydicom import dcmread, examples
from pydicom.pixels import convert_color_space
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from discovr.data.dicom import read_dicom_video
from discovr.data.errors import (
    CorruptPixelDataError,
    DicomReadError,
    NotUltrasoundError,
    SingleFrameError,
    UnknownFrameRateError,
    UnsupportedTransferSyntaxError,
)
from discovr.data.synthetic_dicom import COLOR_FLOW_REGION, PW_DOPPLER_REGION, TISSUE_REGION, palette_lut, write_echo_dicom
from discovr.video_processing_discovr import VideoDecodeError, is_dicom_file


RED, BLUE = (200, 40, 40), (40, 60, 210)
# Where the known colours are painted: inside the sector of the synthetic scene.
RED_PATCH, BLUE_PATCH = (slice(100, 124), slice(140, 164)), (slice(140, 164), slice(170, 194))


@pytest.fixture(scope="module")
def gray(echo_scene) -> np.ndarray:
    """Six frames of the synthetic scene, grey (T, H, W)."""
    return echo_scene.frames[:6]


@pytest.fixture(scope="module")
def colored(gray) -> np.ndarray:
    """The same frames in RGB with a red and a blue patch, colours a double or missing conversion would change."""
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb[:, RED_PATCH[0], RED_PATCH[1]] = RED
    rgb[:, BLUE_PATCH[0], BLUE_PATCH[1]] = BLUE
    return rgb


def patch_colour(frames: np.ndarray, patch) -> np.ndarray:
    # The inner part of the patch: chroma subsampling and JPEG blur its edges.
    rows, columns = patch
    return frames[:, rows.start + 4 : rows.stop - 4, columns.start + 4 : columns.stop - 4].reshape(-1, 3).mean(axis=0)


# (transfer syntax, photometric interpretation, largest allowed |decoded - source| per pixel, or None for lossy
# codecs, which are checked by their mean error instead)
ENCODINGS = [
    (ImplicitVRLittleEndian, "MONOCHROME2", 0),
    (ExplicitVRLittleEndian, "MONOCHROME1", 0),
    (ExplicitVRLittleEndian, "RGB", 0),
    (ExplicitVRLittleEndian, "YBR_FULL", 2),
    (ExplicitVRLittleEndian, "YBR_FULL_422", 3),
    (JPEGBaseline8Bit, "MONOCHROME2", None),
    (JPEGBaseline8Bit, "YBR_FULL_422", None),
    (JPEGBaseline8Bit, "YBR_FULL", None),
    (RLELossless, "MONOCHROME2", 0),
    (RLELossless, "RGB", 0),
    (RLELossless, "YBR_FULL", 2),
    (JPEGLSLossless, "MONOCHROME2", 0),
    (JPEGLSLossless, "RGB", 0),
    (JPEGLSNearLossless, "MONOCHROME2", 2),  # the near-lossless error bound written
    (JPEG2000Lossless, "MONOCHROME2", 0),
    (JPEG2000Lossless, "RGB", 0),
    (JPEG2000, "RGB", None),
    (JPEG2000, "YBR_FULL", None),
]


@pytest.mark.parametrize("syntax, photometric, max_error", ENCODINGS, ids=lambda v: getattr(v, "name", str(v)))
def test_every_encoding_decodes_to_the_source_in_rgb(tmp_path, gray, colored, syntax, photometric, max_error):
    monochrome = photometric.startswith("MONOCHROME")
    source = np.repeat(gray[..., None], 3, axis=-1) if monochrome else colored
    path = tmp_path / "echo.dcm"
    write_echo_dicom(path, gray if monochrome else colored, transfer_syntax=syntax, photometric=photometric, fps=30)

    frames, metadata = read_dicom_video(path)

    assert frames.dtype == np.uint8 and frames.shape == source.shape
    assert (metadata.num_frames, metadata.height, metadata.width) == source.shape[:3]
    assert metadata.fps == pytest.approx(30, rel=1e-3) and metadata.fps_source == "FrameTime"
    assert metadata.transfer_syntax == syntax.name and metadata.photometric_interpretation == photometric
    error = np.abs(frames.astype(int) - source.astype(int))
    if max_error is not None:
        assert error.max() <= max_error
    else:
        assert error.mean() < 1.5
    if not monochrome:
        # A conversion done twice (or not at all) moves these colours by far more than the codecs do.
        assert np.abs(patch_colour(frames, RED_PATCH) - RED).max() < 8
        assert np.abs(patch_colour(frames, BLUE_PATCH) - BLUE).max() < 8


def test_the_colour_check_would_catch_a_double_conversion(colored):
    """The tolerance above is meaningful: converting RGB once more as if it were YCbCr moves the patches far."""
    twice = convert_color_space(colored, "YBR_FULL", "RGB")
    assert np.abs(patch_colour(twice, RED_PATCH) - RED).max() > 40
    assert np.abs(patch_colour(twice, BLUE_PATCH) - BLUE).max() > 40


def test_palette_color_is_looked_up_once(tmp_path, gray):
    path = tmp_path / "palette.dcm"
    write_echo_dicom(path, gray, photometric="PALETTE COLOR")
    frames, _ = read_dicom_video(path)
    np.testing.assert_array_equal(frames, palette_lut()[gray])


def test_pydicom_example_echo_reads_with_its_real_colours():
    frames, metadata = read_dicom_video(examples.get_path("ybr_color"))
    assert frames.shape == (30, 240, 320, 3)
    assert metadata.fps == pytest.approx(1000 / 33.333) and metadata.fps_source == "FrameTime"
    assert metadata.transfer_syntax == "JPEG Baseline (Process 1)"
    assert metadata.photometric_interpretation == "YBR_FULL_422" and metadata.modality == "US"
    # Grey tissue stays grey: a second YCbCr-to-RGB conversion turns grey green (R and B fall, G rises).
    tissue = frames[:, 60:180, 120:200].reshape(-1, 3).astype(float)
    tissue = tissue[tissue.mean(axis=1) > 40]
    assert len(tissue) > 1000
    assert np.abs(tissue[:, 1] - tissue[:, 0]).mean() < 4 and np.abs(tissue[:, 1] - tissue[:, 2]).mean() < 4
    # The region was written for a 640x480 original: it is reported, but gives no spacing for these pixels.
    (region,) = metadata.regions
    assert region.is_tissue_2d and (region.max_x, region.max_y) == (595, 414) and not region.fits(240, 320)
    assert metadata.pixel_spacing_mm is None


@pytest.mark.parametrize(
    "attribute, fps", [("CineRate", 30), ("FrameTime", 50), ("FrameTimeVector", 50), ("RecommendedDisplayFrameRate", 25)]
)
def test_frame_rate_from_each_attribute(tmp_path, gray, attribute, fps):
    path = tmp_path / "echo.dcm"
    write_echo_dicom(path, gray, fps=fps, frame_rate_attribute=attribute)
    _, metadata = read_dicom_video(path)
    assert metadata.fps == pytest.approx(fps) and metadata.fps_source == attribute


def test_frame_rate_attributes_are_taken_in_order(tmp_path, gray):
    path = tmp_path / "echo.dcm"
    write_echo_dicom(path, gray, fps=40, frame_rate_attribute="FrameTime")
    ds = dcmread(path)
    ds.RecommendedDisplayFrameRate = 10
    ds.CineRate = 30
    ds.save_as(path)
    assert read_dicom_video(path)[1].fps == 30
    del ds.CineRate
    ds.save_as(path)
    assert read_dicom_video(path)[1].fps == pytest.approx(40)


def test_no_frame_rate_is_refused_unless_a_default_is_given(tmp_path, gray):
    path = tmp_path / "no_rate.dcm"
    write_echo_dicom(path, gray, frame_rate_attribute=None)
    with pytest.raises(UnknownFrameRateError, match="no_rate.dcm.*gives no frame rate.*--default_fps"):
        read_dicom_video(path)
    _, metadata = read_dicom_video(path, default_fps=24)
    assert (metadata.fps, metadata.fps_source) == (24, "default_fps")
    _, metadata = read_dicom_video(path, require_frame_rate=False)
    assert metadata.fps is None and metadata.fps_source == ""


def test_regions_spacing_and_doppler_flags(tmp_path, gray, echo_scene):
    x0, y0, x1, y1 = echo_scene.sector_box
    path = tmp_path / "regions.dcm"
    write_echo_dicom(path, gray, regions=[(x0, y0, x1, y1, TISSUE_REGION)], region_cm_per_pixel=0.03)
    _, metadata = read_dicom_video(path)
    assert metadata.pixel_spacing_mm == pytest.approx((0.3, 0.3))
    assert not metadata.has_color_flow and not metadata.has_spectral_doppler

    write_echo_dicom(path, gray, regions=[(x0, y0, x1, y1, TISSUE_REGION), (x0 + 20, y0 + 20, x0 + 80, y0 + 80, COLOR_FLOW_REGION)])
    assert read_dicom_video(path)[1].has_color_flow
    write_echo_dicom(path, gray, regions=[(0, 240, 319, 287, PW_DOPPLER_REGION)])
    _, metadata = read_dicom_video(path)
    assert metadata.has_spectral_doppler and metadata.pixel_spacing_mm is None


def test_a_dicom_without_extension_is_recognised(tmp_path, gray):
    path = tmp_path / "IM000001"
    write_echo_dicom(path, gray)
    assert is_dicom_file(path)
    assert read_dicom_video(path)[0].shape[0] == len(gray)


def test_single_frame_is_refused(tmp_path, gray):
    path = tmp_path / "still.dcm"
    write_echo_dicom(path, gray[:1])
    with pytest.raises(SingleFrameError, match="still.dcm.*single frame"):
        read_dicom_video(path)


def test_other_modalities_are_refused_and_a_missing_one_falls_back_to_the_sop_class(tmp_path, gray):
    path = tmp_path / "ct.dcm"
    write_echo_dicom(path, gray, modality="CT")
    with pytest.raises(NotUltrasoundError, match="ct.dcm.*modality is CT, not US"):
        read_dicom_video(path)
    write_echo_dicom(path, gray, modality="")
    assert read_dicom_video(path)[1].modality == "US"  # the ultrasound multi-frame SOP class


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, JPEG2000Lossless],
                         ids=lambda uid: uid.name)
def test_truncated_pixel_data_is_refused(tmp_path, gray, syntax):
    path = tmp_path / "cut.dcm"
    write_echo_dicom(path, gray, transfer_syntax=syntax, truncate_pixel_data=600)
    with pytest.raises(CorruptPixelDataError, match="cut.dcm"):
        read_dicom_video(path)


def test_a_file_that_is_not_dicom_is_refused(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file")
    with pytest.raises(DicomReadError, match="notes.dcm.*not a readable DICOM file"):
        read_dicom_video(path)


def test_a_transfer_syntax_pydicom_cannot_decode_is_refused(tmp_path, gray):
    path = tmp_path / "mpeg4.dcm"
    write_echo_dicom(path, gray, transfer_syntax=JPEGBaseline8Bit)
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264: video, not images
    ds.save_as(path)
    with pytest.raises(UnsupportedTransferSyntaxError, match="mpeg4.dcm.*no decoder.*MPEG-4"):
        read_dicom_video(path)


def test_a_missing_decoder_plugin_names_the_package(tmp_path, gray, monkeypatch):
    path = tmp_path / "jpegls.dcm"
    write_echo_dicom(path, gray, transfer_syntax=JPEGLSLossless)
    # As if neither pyjpegls nor pylibjpeg-libjpeg were installed.
    monkeypatch.setattr(Decoder, "available_plugins", property(lambda self: ()))
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"jpegls.dcm.*JPEG-LS.*install pyjpegls or pylibjpeg-libjpeg.*discovr\[dicom\]"):
        read_dicom_video(path)


def test_refusals_are_decode_errors_that_survive_pickling(tmp_path, gray):
    path = tmp_path / "still.dcm"
    write_echo_dicom(path, gray[:1])
    with pytest.raises(SingleFrameError) as caught:
        read_dicom_video(path)
    assert isinstance(caught.value, VideoDecodeError) and caught.value.reason == "single_frame"
    copy = pickle.loads(pickle.dumps(caught.value))  # as DataLoader workers re-raise them
    assert type(copy) is SingleFrameError and str(copy) == str(caught.value)


def test_example_copy_without_extension_is_still_dicom(tmp_path):
    path = tmp_path / "example"
    shutil.copy(examples.get_path("ybr_color"), path)
    assert is_dicom_file(path) and not is_dicom_file(tmp_path)
