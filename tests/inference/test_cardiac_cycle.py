"""Beat-to-beat EF: cavity volumes of drawn shapes, beat detection on known curves, and synthetic ground truth."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from discovr.data.synthetic import (
    LABEL_LV_CAVITY,
    MASKS_DIR,
    PARAMETERS_FILE,
    SECTOR_RADIUS,
    TRANSDUCER_Y,
    GROUND_TRUTH_FILE,
    make_synthetic_echonet,
)
from discovr.inference.cardiac_cycle import (
    beat_to_beat_ef,
    detect_beats,
    lv_areas,
    lv_volume_area_length,
    lv_volume_discs,
)


def ellipse(a: float, b: float, angle_deg: float, centre: tuple[float, float] = (55.3, 56.7)) -> np.ndarray:
    """Pixels whose centres lie in the ellipse of semi-axes a (along `angle_deg`) and b."""
    y, x = np.mgrid[0:112, 0:112].astype(np.float64)
    angle = math.radians(angle_deg)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def bullet(length: float, half_width: float, angle_deg: float) -> np.ndarray:
    """The synthetic generator's cavity shape: widest at 60% of the way from the apex, cut flat at the mitral plane."""
    y, x = np.mgrid[0:112, 0:112].astype(np.float64)
    angle = math.radians(angle_deg)
    direction = (math.sin(angle), math.cos(angle))
    dx, dy = x - 40.3, y - 20.6
    along = (dx * direction[0] + dy * direction[1]) / length
    across = np.abs(dx * direction[1] - dy * direction[0])
    profile = np.sqrt(np.clip(1.0 - ((along - 0.6) / 0.6) ** 2, 0.0, None))
    return (along >= 0) & (along <= 1) & (across <= half_width * profile)


def test_lv_areas_counts_cavity_pixels():
    maps = np.zeros((3, 4, 5), dtype=np.uint8)
    maps[0, :2, :2] = 1
    maps[1, :, :] = 2
    maps[2, 0, :] = 1
    maps[2, 1, 0] = 3
    np.testing.assert_array_equal(lv_areas(maps), [4, 0, 5])
    np.testing.assert_array_equal(lv_areas(maps, lv_label=3), [0, 0, 1])
    with pytest.raises(ValueError, match=r"\(T, H, W\), got shape \(4, 5\)"):
        lv_areas(maps[0])
    with pytest.raises(ValueError, match="integer labels, got dtype float"):
        lv_areas(maps.astype(np.float32))


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 137.0])
def test_disc_volume_of_an_ellipse(angle):
    # The ellipse turned about its long axis is an ellipsoid of volume 4/3 pi a b^2; area-length is exact for it.
    # 3% allows for pixelisation: drawn ellipses 15-40 pixels long came within 2.7% at every rotation tried, this
    # one (24 pixels wide) within 1.3%.
    a, b = 30.0, 12.0
    analytic = 4.0 / 3.0 * math.pi * a * b**2
    mask = ellipse(a, b, angle)
    assert lv_volume_discs(mask) == pytest.approx(analytic, rel=0.03)
    assert lv_volume_area_length(mask) == pytest.approx(analytic, rel=0.03)


@pytest.mark.parametrize("shape", ["ellipse", "bullet"])
def test_disc_volume_is_rotation_invariant(shape):
    # The principal axis turns with the cavity. Measured differences at 30 degrees: 0.3% (ellipse), 0.9% (bullet).
    draw = (lambda angle: ellipse(30.0, 12.0, angle)) if shape == "ellipse" else (lambda angle: bullet(60, 16, angle))
    assert lv_volume_discs(draw(30.0)) == pytest.approx(lv_volume_discs(draw(0.0)), rel=0.02)


def test_volumes_of_degenerate_masks():
    assert lv_volume_discs(np.zeros((8, 8), bool)) == 0.0
    assert lv_volume_area_length(np.zeros((8, 8), bool)) == 0.0
    single = np.zeros((8, 8), bool)
    single[3, 4] = True
    # One pixel is a unit-height disc of unit diameter.
    assert lv_volume_discs(single, num_discs=1) == pytest.approx(math.pi / 4)
    with pytest.raises(ValueError, match="`mask` must be a 2-D"):
        lv_volume_discs(np.zeros((2, 8, 8), bool))
    with pytest.raises(ValueError, match="`num_discs` must be >= 1"):
        lv_volume_discs(single, num_discs=0)


def test_sinusoid_beats():
    # Period 40 frames at 50 fps: ED (maxima) at 40, 80, 120, 160; ES (minima) 20 frames later. The maximum at frame
    # 0 is the video's first frame and the ES at 20 has no ED before it, so neither starts a beat.
    frames = np.arange(200)
    areas = 1000.0 + 200.0 * np.cos(2 * np.pi * frames / 40)
    assert detect_beats(areas, fps=50) == [(40, 60), (80, 100), (120, 140), (160, 180)]
    rng = np.random.default_rng(0)
    noisy = areas + rng.normal(0.0, 15.0, areas.size)
    # Segmentation failures on single frames (an empty mask) must not pass for end-systoles.
    noisy[[33, 71, 114, 150]] = 0.0
    beats = detect_beats(noisy, fps=50)
    assert len(beats) == 4
    for (ed, es), (true_ed, true_es) in zip(beats, [(40, 60), (80, 100), (120, 140), (160, 180)]):
        assert abs(ed - true_ed) <= 2 and abs(es - true_es) <= 2


def test_no_beat_is_fabricated():
    rng = np.random.default_rng(0)
    frames = np.arange(150)
    cases = {
        "flat": np.full(150, 800.0),
        "empty masks": np.zeros(150),
        "noise": 800.0 + rng.normal(0.0, 40.0, 150),
        "noise at 30 fps": 800.0 + rng.normal(0.0, 80.0, 300),
        "monotonic": np.linspace(1000.0, 600.0, 150),
        # Half a beat: the area falls from ED (the first frame) to ES and rises again, but no ED is seen.
        "systole only": 800.0 + 200.0 * np.cos(np.pi * frames / 100),
        "too short": np.array([800.0, 700.0]),
    }
    for name, areas in cases.items():
        assert detect_beats(areas, fps=30 if "30 fps" in name else 50) == [], name


@pytest.mark.parametrize(
    ("areas", "fps", "message"),
    [
        (np.zeros((5, 2)), 50, "`areas` must be 1-D"),
        (np.array([1.0, np.nan, 2.0]), 50, "1 NaN or infinite"),
        (np.zeros(5), 0, "`fps` must be a positive"),
        (np.zeros(5), float("nan"), "`fps` must be a positive"),
    ],
)
def test_detect_beats_rejects_bad_input(areas, fps, message):
    with pytest.raises(ValueError, match=message):
        detect_beats(areas, fps)


def test_beat_to_beat_ef_of_drawn_ellipses():
    # The cavity's width follows a 30-frame cycle: 12 pixels at ED, 8 at ES, so EF = 1 - (8/12)^2 for an ellipsoid.
    frames = np.arange(90)
    widths = 10.0 + 2.0 * np.cos(2 * np.pi * frames / 30)
    maps = np.stack([ellipse(30.0, width, 20.0) for width in widths]).astype(np.uint8)
    result = beat_to_beat_ef(maps, fps=30)
    assert [(beat.ed_frame, beat.es_frame) for beat in result.beats] == [(30, 45), (60, 75)]
    assert result.phases[30] == "ED" and result.phases[45] == "ES"
    assert set(np.flatnonzero(result.phases != "")) == {30, 45, 60, 75}
    np.testing.assert_array_equal(result.areas, lv_areas(maps))
    assert result.volumes[30] == pytest.approx(lv_volume_discs(maps[30] == 1))
    assert result.beats[0].edv == result.volumes[30] and result.beats[0].esv == result.volumes[45]
    assert result.ef == pytest.approx(np.mean([beat.ef for beat in result.beats]))
    assert result.ef == pytest.approx(100 * (1 - (8 / 12) ** 2), abs=2.0)
    assert beat_to_beat_ef(maps, fps=30, volume_method="area_length").ef == pytest.approx(result.ef, abs=2.0)
    with pytest.raises(ValueError, match="`volume_method`"):
        beat_to_beat_ef(maps, fps=30, volume_method="simpson")


def test_a_beat_whose_ed_mask_failed_is_left_out(caplog):
    # The second ED frame's mask is empty (a one-frame failure the smoothed curve ignores): its beat has no EF.
    frames = np.arange(90)
    maps = np.stack([ellipse(30.0, 10.0 + 2.0 * np.cos(2 * np.pi * f / 30), 20.0) for f in frames]).astype(np.uint8)
    maps[60] = 0
    with caplog.at_level(logging.WARNING):
        result = beat_to_beat_ef(maps, fps=30)
    assert [(beat.ed_frame, beat.es_frame) for beat in result.beats] == [(30, 45)]
    assert result.ef == pytest.approx(result.beats[0].ef) and result.phases[60] == ""
    assert "ED frame 60 of a detected beat has an empty LV mask" in caplog.text


def test_beat_to_beat_ef_without_a_beat_is_nan(caplog):
    maps = np.stack([ellipse(30.0, 12.0, 0.0)] * 40).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        result = beat_to_beat_ef(maps, fps=50)
    assert math.isnan(result.ef) and result.beats == []
    assert not result.phases.any()
    assert "No complete cardiac cycle" in caplog.text


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    # Three seconds hold at least one ED-to-ES beat with enough curve on both sides at the slowest rate (60 bpm).
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_echonet(root, num_videos=6, seed=0, min_seconds=3.0, max_seconds=3.0, progress=False)
    return root


def _cavity_touches_sector_edge(labels: np.ndarray, parameters: pd.Series) -> bool:
    """Whether the generator cut the cavity at the edge of the imaging sector in any frame."""
    y, x = np.mgrid[0 : labels.shape[1], 0 : labels.shape[2]].astype(np.float64)
    dx, dy = x - parameters["transducer_x"], y - TRANSDUCER_Y
    sector = (np.hypot(dx, dy) <= SECTOR_RADIUS) & (
        np.abs(np.arctan2(dx, dy)) <= math.radians(parameters["sector_half_angle_deg"])
    )
    interior = sector.copy()
    interior[1:-1, 1:-1] &= sector[:-2, 1:-1] & sector[2:, 1:-1] & sector[1:-1, :-2] & sector[1:-1, 2:]
    return bool(np.any((labels == LABEL_LV_CAVITY) & (sector & ~interior)))


def test_synthetic_ground_truth_masks_recover_ef(synthetic_root):
    """Beat-to-beat EF of the generator's own label maps against its FileList EF.

    The generator's EF comes from its analytic cavity, the masks are that cavity drawn on pixels and cut to the
    imaging sector. On 40 videos (seed 0), where the cavity stays inside the sector the error was -0.10 ± 0.64 EF
    points (at most 1.5): pixelisation of cavities 15-35 pixels wide. Where the sector cuts it (24 of the 40,
    mostly at ED), the masks lose up to 13% of the ED area and EF comes out low, by 2.3 points on average and up
    to 11.6: the masks, not the volume method, differ from the geometry EF was computed from.
    """
    file_list = pd.read_csv(synthetic_root / "FileList.csv")
    parameters = pd.read_csv(synthetic_root / PARAMETERS_FILE).set_index("FileName")
    contraction = pd.read_csv(synthetic_root / GROUND_TRUTH_FILE).groupby("FileName")["Contraction"]
    inside = 0
    for name, true_ef, fps in zip(file_list.FileName, file_list.EF, file_list.FPS):
        labels = np.load(synthetic_root / MASKS_DIR / f"{name}.npz")["labels"]
        result = beat_to_beat_ef(labels, fps=float(fps))
        assert result.beats, name
        levels = contraction.get_group(name).to_numpy()
        for beat in result.beats:
            # The generator's contraction is 0 at ED and 1 at ES.
            assert levels[beat.ed_frame] < 0.02 and levels[beat.es_frame] > 0.98, (name, beat)
        error = result.ef - true_ef
        if _cavity_touches_sector_edge(labels, parameters.loc[name]):
            assert error < 2.0, (name, error)
        else:
            inside += 1
            assert abs(error) < 2.0, (name, error)
    assert inside >= 2
