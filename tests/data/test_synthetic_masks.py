"""The synthetic generator's per-frame label maps against its own geometry and against its tracings' masks."""

import numpy as np
import pandas as pd

from discovr.data import load_echonet_dynamic
from discovr.data import synthetic
from discovr.data.tracings import echonet_row_masks


def label_maps(root, name):
    return np.load(root / synthetic.MASKS_DIR / f"{name}.npz")["labels"]


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_every_frame_has_a_label_map(synthetic_root):
    files = pd.read_csv(synthetic_root / "FileList.csv")
    for row in files.itertuples():
        labels = label_maps(synthetic_root, row.FileName)
        assert labels.shape == (row.NumberOfFrames, 112, 112) and labels.dtype == np.uint8
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        assert (labels == synthetic.LABEL_LV_CAVITY).any(axis=(1, 2)).all()


def test_cavity_area_per_frame_is_the_generators(synthetic_root):
    files = pd.read_csv(synthetic_root / "FileList.csv")
    truth = pd.read_csv(synthetic_root / synthetic.GROUND_TRUTH_FILE)
    seed = 7  # the conftest's
    for index, name in enumerate(files.FileName):
        labels = label_maps(synthetic_root, name)
        # Re-draw the video's heart and scanner, as make_synthetic_echonet does, for the geometry's own area.
        rng = np.random.default_rng([seed, index])
        heart, imaging = synthetic._draw_heart(rng), synthetic._draw_imaging(rng)
        contraction = synthetic._contraction(heart, np.arange(len(labels)))
        area = synthetic._cavity_area(heart, contraction) * imaging.zoom**2
        np.testing.assert_allclose(truth[truth.FileName == name].CavityArea.to_numpy(), area, rtol=1e-9)
        pixels = (labels == synthetic.LABEL_LV_CAVITY).sum(axis=(1, 2))
        # Pixel-centre sampling of a ~1,000-pixel outline: within 3% on every frame, unbiased over the cycle.
        relative = pixels / area - 1
        assert np.abs(relative).max() < 0.03 and abs(relative.mean()) < 0.005, name
        # The areas follow the cycle: largest where the contraction is least.
        assert np.argmax(pixels) in np.flatnonzero(contraction <= contraction.min() + 0.02)


def test_traced_frames_masks_match_the_label_maps(synthetic_root):
    data = load_echonet_dynamic(synthetic_root, masks=True)
    rows = [row for split in data.values() for row in split]
    assert len(rows) == 6
    for row in rows:
        name = row["video"].rsplit("/", 1)[-1][:-4]
        labels = label_maps(synthetic_root, name)
        ed, es = echonet_row_masks(row)
        ed_truth = labels[row["ed_frame"]] == synthetic.LABEL_LV_CAVITY
        es_truth = labels[row["es_frame"]] == synthetic.LABEL_LV_CAVITY
        # EchoNet's rounding of the 40 chord ends costs a few percent of IoU; the outline itself matches closely.
        assert iou(ed, ed_truth) > 0.9 and iou(es, es_truth) > 0.9, name
        exact_ed, exact_es = echonet_row_masks(row, round_vertices=False)
        assert iou(exact_ed, ed_truth) > 0.95 and iou(exact_es, es_truth) > 0.95, name
        assert ed.sum() > es.sum()
        # The tracing's disc outline stops half a disc short of the apex and of the mitral plane: a little smaller.
        assert 0.9 < exact_ed.sum() / ed_truth.sum() < 1.0
