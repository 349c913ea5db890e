"""The ultrasound sector: regions first (checked against the frame), the pixels otherwise, and the one crop."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import examples
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from discovr.data.dicom import read_dicom_video
from discovr.data.errors import SectorNotFoundError
from discovr.data.sector import color_fraction, crop_to_sector, find_sector, ultrasound_mask
from discovr.data.synthetic_dicom import COLOR_FLOW_REGION, TISSUE_REGION, write_echo_dicom


ENCODINGS = [
    (ExplicitVRLittleEndian, "MONOCHROME2"),
    (RLELossless, "MONOCHROME2"),
    (JPEGBaseline8Bit, "MONOCHROME2"),
    (JPEGBaseline8Bit, "YBR_FULL_422"),
]


def decoded(tmp_path, scene, syntax=ExplicitVRLittleEndian, photometric="MONOCHROME2", **kwargs):
    path = tmp_path / "echo.dcm"
    frames = scene.frames if photometric.startswith("MONO") else np.repeat(scene.frames[..., None], 3, axis=-1)
    write_echo_dicom(path, frames, transfer_syntax=syntax, photometric=photometric, **kwargs)
    return read_dicom_video(path)


def assert_sector_found(mask, scene, max_outside: float):
    assert (mask & scene.sector).sum() / scene.sector.sum() > 0.99  # the sector is kept...
    assert not (mask & scene.text).any() and not (mask & scene.ecg).any()  # ...without the text or the ECG
    assert (mask & ~scene.sector).sum() / mask.sum() < max_outside


@pytest.mark.parametrize("syntax, photometric", ENCODINGS, ids=lambda v: getattr(v, "name", v))
def test_without_regions_the_sector_is_found_from_the_pixels(tmp_path, echo_scene, syntax, photometric):
    frames, metadata = decoded(tmp_path, echo_scene, syntax, photometric)
    sector = find_sector(frames, metadata)
    assert sector.method == "pixels" and sector.note == ""
    # JPEG spreads the sector's change over its 8x8 blocks, so the hull takes in a rim of ringing pixels.
    assert_sector_found(sector.mask, echo_scene, max_outside=0.03 if syntax != JPEGBaseline8Bit else 0.2)
    np.testing.assert_array_equal(ultrasound_mask(frames, metadata), sector.mask)


def test_regions_that_fit_are_used(tmp_path, echo_scene):
    x0, y0, x1, y1 = echo_scene.sector_box
    frames, metadata = decoded(tmp_path, echo_scene, regions=[(x0, y0, x1, y1, TISSUE_REGION)])
    sector = find_sector(frames, metadata)
    assert sector.method == "regions"
    expected = np.zeros_like(sector.mask)
    expected[y0 : y1 + 1, x0 : x1 + 1] = True
    np.testing.assert_array_equal(sector.mask, expected)
    assert not (sector.mask & echo_scene.text).any() and not (sector.mask & echo_scene.ecg).any()


def test_regions_outside_the_frame_fall_back_to_the_pixels(tmp_path, echo_scene):
    x0, y0, x1, y1 = echo_scene.sector_box
    # As in real files: the box of the original resolution, twice this frame's.
    frames, metadata = decoded(tmp_path, echo_scene, regions=[(2 * x0, 2 * y0, 2 * x1, 2 * y1, TISSUE_REGION)])
    sector = find_sector(frames, metadata)
    assert sector.method == "pixels" and "outside the 320x288 frame" in sector.note
    assert_sector_found(sector.mask, echo_scene, max_outside=0.03)


def test_regions_in_the_wrong_place_fall_back_to_the_pixels(tmp_path, echo_scene):
    frames, metadata = decoded(tmp_path, echo_scene, regions=[(0, 0, 60, 60, TISSUE_REGION)])
    sector = find_sector(frames, metadata)
    assert sector.method == "pixels" and "cover only 0% of the moving image" in sector.note
    assert_sector_found(sector.mask, echo_scene, max_outside=0.03)


def test_regions_of_other_kinds_are_not_the_sector(tmp_path, echo_scene):
    x0, y0, x1, y1 = echo_scene.sector_box
    frames, metadata = decoded(tmp_path, echo_scene, regions=[(x0, y0, x1, y1, COLOR_FLOW_REGION)])
    sector = find_sector(frames, metadata)
    assert sector.method == "pixels" and sector.note == "no 2-D tissue region"


@pytest.mark.parametrize("syntax, tolerance", [(ExplicitVRLittleEndian, 0), (JPEGBaseline8Bit, 12)], ids=["raw", "jpeg"])
def test_crop_is_square_zero_outside_and_the_source_inside(tmp_path, echo_scene, syntax, tolerance):
    frames, metadata = decoded(tmp_path, echo_scene, syntax)
    sector = find_sector(frames, metadata)
    cropped = crop_to_sector(frames, sector)
    top, left, bottom, right = sector.box
    side = max(bottom - top, right - left)
    assert cropped.shape == (len(frames), side, side, 3)

    # The crop back in frame coordinates: the square may leave the frame at the top, where it is padded.
    square_top, square_left, _ = sector.square
    canvas = np.zeros((len(frames), frames.shape[1] + 2 * side, frames.shape[2] + 2 * side, 3), np.uint8)
    canvas[:, side + square_top : 2 * side + square_top, side + square_left : 2 * side + square_left] = cropped
    placed = canvas[:, side : side + frames.shape[1], side : side + frames.shape[2]]
    assert not placed[:, ~sector.mask].any()  # exactly 0 outside the sector
    assert canvas.sum() == placed.sum()  # and nothing beyond the frame but padding
    source = echo_scene.frames[:, sector.mask].astype(int)
    difference = np.abs(placed[:, sector.mask].astype(int) - source[..., None])
    assert difference.max() <= tolerance and difference.mean() < 1.0


def test_pydicom_example_echo_sector_is_found_and_its_text_is_gone():
    frames, metadata = read_dicom_video(examples.get_path("ybr_color"))
    sector = find_sector(frames, metadata)
    assert sector.method == "pixels" and "lie outside the 320x240 frame" in sector.note

    gray = frames.astype(np.float32).mean(axis=-1)
    overlays = (gray.min(axis=0) > 60) & (gray.std(axis=0) < 0.01)  # bright in every frame and never changing
    assert overlays.sum() > 500  # the text, markers and toolbar of this screen
    assert not (sector.mask & overlays).any()
    moving = gray.std(axis=0) > 5
    assert (sector.mask & moving).sum() == moving.sum()
    # Checked against what the file says: its region, scaled from the 640x480 original, bounds the same sector.
    (region,) = metadata.regions
    top, left, bottom, right = sector.box
    assert abs(top - region.min_y / 2) < 8 and abs(bottom - 1 - region.max_y / 2) < 8
    assert abs(left - region.min_x / 2) < 8 and abs(right - 1 - region.max_x / 2) < 8

    cropped = crop_to_sector(frames, sector)
    assert not cropped[:, ~np.pad(sector.mask, 64)[64 + sector.square[0] : 64 + sector.square[0] + sector.square[2],
                                                  64 + sector.square[1] : 64 + sector.square[1] + sector.square[2]]].any()


def test_a_still_video_has_no_sector(echo_scene):
    still = np.repeat(echo_scene.frames[:1], 10, axis=0)
    with pytest.raises(SectorNotFoundError, match="No ultrasound sector found: nothing in the image varies"):
        find_sector(still)


def test_colour_flow_pixels_are_counted(echo_scene):
    frames = np.repeat(echo_scene.frames[..., None], 3, axis=-1)
    sector = find_sector(frames)
    assert color_fraction(frames, sector) == 0.0
    frames[5:9, 120:150, 150:180] = (220, 30, 30)  # a red jet in some frames
    assert color_fraction(frames, sector) > 0.01
