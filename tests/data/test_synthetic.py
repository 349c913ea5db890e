"""The synthetic echo generator: layout, decodability, geometry-derived EF, realism and determinism."""

import math
import numpy as np
import pandas as pd
import pytest
import torch

from discovr.data import synthetic
from discovr.data.synthetic import FILE_LIST_COLUMNS, TRACING_COLUMNS, make_synthetic_echonet
from discovr.video_processing_discovr import read_video


def disc_volume(rows, cm_per_pixel=1.0):
    """Method-of-discs volume of one traced frame (first row long axis, then the chords), in mL at `cm_per_pixel`."""
    length = math.hypot(rows.X2.iloc[0] - rows.X1.iloc[0], rows.Y2.iloc[0] - rows.Y1.iloc[0])
    chords = np.hypot(rows.X2.iloc[1:] - rows.X1.iloc[1:], rows.Y2.iloc[1:] - rows.Y1.iloc[1:]).to_numpy()
    return float(np.sum(np.pi * (chords / 2) ** 2) * length / len(chords)) * cm_per_pixel**3


def test_layout_and_videos_decode(synthetic_root, synthetic_gray):
    files = pd.read_csv(synthetic_root / "FileList.csv")
    assert list(files.columns) == FILE_LIST_COLUMNS
    assert list(pd.read_csv(synthetic_root / "VolumeTracings.csv").columns) == TRACING_COLUMNS
    assert set(files.Split) <= {"TRAIN", "VAL", "TEST"} and "TRAIN" in set(files.Split)
    for row in files.itertuples():
        assert "." not in row.FileName
        gray, metadata = synthetic_gray[row.FileName]
        assert gray.shape == (row.NumberOfFrames, 112, 112)
        assert metadata.fps == pytest.approx(50) and row.FPS == 50
        assert 100 <= row.NumberOfFrames <= 250


def test_ef_equals_geometry_of_the_tracings(synthetic_root):
    files = pd.read_csv(synthetic_root / "FileList.csv").set_index("FileName")
    spacing = pd.read_csv(synthetic_root / synthetic.PARAMETERS_FILE).set_index("FileName").CmPerPixel
    tracings = pd.read_csv(synthetic_root / "VolumeTracings.csv")
    for name, rows in tracings.groupby("FileName"):
        assert name.endswith(".avi")
        frames = [frame for frame, _ in rows.groupby("Frame", sort=False)]
        assert len(frames) == 2 and all(len(r) == 21 for _, r in rows.groupby("Frame"))
        volumes = sorted(disc_volume(r, spacing[name[:-4]]) for _, r in rows.groupby("Frame"))
        esv, edv = volumes
        row = files.loc[name[:-4]]
        assert row.EDV == pytest.approx(edv, rel=1e-3) and row.ESV == pytest.approx(esv, rel=1e-3)
        assert row.EF == pytest.approx(100 * (edv - esv) / edv, abs=0.05)


def test_cavity_darkness_follows_the_written_cycle(synthetic_root, synthetic_gray):
    truth = pd.read_csv(synthetic_root / synthetic.GROUND_TRUTH_FILE)
    tracings = pd.read_csv(synthetic_root / "VolumeTracings.csv")
    for name, rows in tracings.groupby("FileName"):
        gray, _ = synthetic_gray[name[:-4]]
        # Region: the bounding box of the end-diastolic (largest) tracing, where the cavity lives.
        ed_rows = max((r for _, r in rows.groupby("Frame")), key=disc_volume)
        xs = np.concatenate([ed_rows.X1, ed_rows.X2])
        ys = np.concatenate([ed_rows.Y1, ed_rows.Y2])
        box = gray[:, int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1]
        dark = (box < 20).float().sum(dim=(1, 2)).numpy()
        area = truth[truth.FileName == name[:-4]].sort_values("Frame").CavityArea.to_numpy()
        assert np.corrcoef(dark, area)[0, 1] > 0.9, name


def test_intensity_and_cycle_realism(synthetic_root, synthetic_gray):
    truth = pd.read_csv(synthetic_root / synthetic.GROUND_TRUTH_FILE)
    for name in pd.read_csv(synthetic_root / "FileList.csv").FileName:
        gray, _ = synthetic_gray[name]
        near_black = (gray < 12).float().mean().item()
        rest = gray[gray >= 12]
        assert 0.52 <= near_black <= 0.74, (name, near_black)
        assert 66 <= rest.mean().item() <= 95, (name, rest.mean().item())
        assert 45 <= rest.median().item() <= 82, (name, rest.median().item())
        # Cycle length: the lag of the strongest autocorrelation peak of the written cavity area.
        area = truth[truth.FileName == name].sort_values("Frame").CavityArea.to_numpy()
        centred = area - area.mean()
        autocorrelation = np.correlate(centred, centred, mode="full")[len(area) - 1 :]
        lags = np.arange(25, len(area) - 5)
        period = lags[np.argmax(autocorrelation[lags])]
        assert 30 <= period <= 90, (name, period)
        fac = (area.max() - area.min()) / area.max()
        assert 0.05 <= fac <= 0.65


def test_ef_and_fac_spread_of_the_heart_draws():
    # The geometry draws alone (no rendering), many hearts: EF spans ~15-80% with a realistic share below 50%,
    # and the fractional area change covers the 0.23-0.55 seen on real clips.
    rng = np.random.default_rng(0)
    ef, fac = [], []
    for _ in range(400):
        heart = synthetic._draw_heart(rng)
        _, ed_widths, ed_length = synthetic._tracing(heart, 0.0)
        _, es_widths, es_length = synthetic._tracing(heart, 1.0)
        edv = synthetic.cavity_volume_ml(ed_widths, ed_length)
        esv = synthetic.cavity_volume_ml(es_widths, es_length)
        ef.append(100 * (edv - esv) / edv)
        areas = synthetic._cavity_area(heart, np.array([0.0, 1.0]))
        fac.append(1 - areas[1] / areas[0])
    ef, fac = np.array(ef), np.array(fac)
    assert ef.min() < 20 and ef.max() > 75
    assert 0.15 <= (ef < 50).mean() <= 0.45
    assert fac.min() < 0.23 and fac.max() > 0.55


def cross_validated_r2(features: np.ndarray, targets: np.ndarray) -> float:
    """R² of 5-fold cross-validated ridge predictions (standardised features, alpha chosen inside each fold)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    predicted = cross_val_predict(model, features, targets, cv=KFold(5, shuffle=True, random_state=0))
    return float(1 - ((predicted - targets) ** 2).sum() / ((targets - targets.mean()) ** 2).sum())


def test_ef_is_in_the_motion_not_in_simple_pixel_statistics(tmp_path):
    """A ridge on brightness, contrast and how much of the sector is dark or bright explains almost none of EF;
    one on where the image changes over a beat explains most of it. So a representation has to see the cavity
    move to predict EF, which is what the benchmarks of pretraining rely on (docs/data.md)."""
    make_synthetic_echonet(tmp_path, num_videos=120, seed=5, min_seconds=2.0, max_seconds=2.2, progress=False)
    table = pd.read_csv(tmp_path / "FileList.csv")
    statistics, motion = [], []
    for name in table.FileName:
        frames, _ = read_video(tmp_path / "Videos" / f"{name}.avi")
        gray = frames.float().mean(dim=1)[:60]  # the first 1.2 s: at least one beat at 50-100 bpm
        sector = gray.mean(dim=0) > 0
        statistics.append([
            gray.mean(), gray.std(), (gray[:, sector] < 20).float().mean(), (gray[:, sector] > 120).float().mean()
        ])
        # Temporal std of 14x14-pixel blocks: where, and how much, the picture changes over the beat.
        blocks = torch.nn.functional.avg_pool2d(gray[:, None], 14).squeeze(1)
        motion.append(blocks.std(dim=0).flatten())
    ef = table.EF.to_numpy()
    assert cross_validated_r2(np.array(statistics), ef) < 0.2
    assert cross_validated_r2(torch.stack(motion).numpy(), ef) > 0.45


def test_same_seed_same_data(tmp_path):
    first = make_synthetic_echonet(tmp_path / "a", num_videos=2, seed=3, min_seconds=2, max_seconds=2, progress=False)
    second = make_synthetic_echonet(tmp_path / "b", num_videos=2, seed=3, min_seconds=2, max_seconds=2, progress=False)
    pd.testing.assert_frame_equal(first, second)
    for name in first.FileName:
        a, _ = read_video(tmp_path / "a" / "Videos" / f"{name}.avi")
        b, _ = read_video(tmp_path / "b" / "Videos" / f"{name}.avi")
        assert torch.equal(a, b)
    other = make_synthetic_echonet(tmp_path / "c", num_videos=2, seed=4, min_seconds=2, max_seconds=2, progress=False)
    assert not np.allclose(first.EF, other.EF)


def test_console_script_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--num_videos", "--seed", "--min_seconds", "--max_seconds", "--splits"):
        assert option in help_text
    synthetic.main([str(tmp_path / "cli"), "--num_videos", "1", "--min_seconds", "2", "--max_seconds", "2", "--no_progress"])
    assert len(pd.read_csv(tmp_path / "cli" / "FileList.csv")) == 1
    assert synthetic.main([str(tmp_path / "bad"), "--num_videos", "0"]) == 2
    assert capsys.readouterr().err.strip() == "discovr-synth: error: num_videos must be >= 1, got 0"
