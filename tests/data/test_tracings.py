"""Cavity masks from EchoNet tracings: the rasteriser's pixel convention, EchoNet's outline, and bad tracings."""

import numpy as np
import pytest
from datasets import Array2D

from discovr.data import ManifestError, load_echonet_dynamic
from discovr.data.tracings import echonet_row_masks, echonet_tracing_masks, pediatric_tracing_masks, polygon_mask


HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"


def rectangle_tracing(name, frame, x0, x1, y0, y1, long_axis=(0, 0, 23, 19)):
    """Long axis (deliberately not along the cavity, so including it would change the outline), then chords from
    (x0, y) to (x1, y) at three heights: the outline is the rectangle [x0, x1] x [y0, y1]."""
    rows = [f"{name},{','.join(str(v) for v in long_axis)},{frame}"]
    rows += [f"{name},{x0},{y},{x1},{y},{frame}" for y in (y0, (y0 + y1) / 2, y1)]
    return rows


def write_folder(root, tracings, rows=None, height=20, width=24, frames=50):
    rows = rows or [f"a,60,40,100,{height},{width},50,{frames},TRAIN", f"b,50,50,100,{height},{width},50,{frames},VAL"]
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    (root / "FileList.csv").write_text(HEADER + "".join(f"{row}\n" for row in rows))
    for row in rows:
        (root / "Videos" / f"{row.split(',')[0]}.avi").write_bytes(b"")
    if tracings is not None:
        (root / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n" + "".join(f"{t}\n" for t in tracings))
    return root


def test_pixel_centres_inside_count():
    # Edges half-way between pixel centres: exactly the centres inside, so the count equals the area (4 x 2).
    mask = polygon_mask([[1.5, 2.5], [5.5, 2.5], [5.5, 4.5], [1.5, 4.5]], height=7, width=9)
    assert mask.sum() == 8
    assert np.argwhere(mask).tolist() == [[r, c] for r in (3, 4) for c in (2, 3, 4, 5)]
    # Whole-pixel corners: the centres on the outline count too, (4 + 1) x (3 + 1), not the area 12.
    assert polygon_mask([[2, 1], [6, 1], [6, 4], [2, 4]], 7, 9).sum() == 20
    # A diamond |x - 10| + |y - 10| <= 4 holds 2 r^2 + 2 r + 1 = 41 centres.
    assert polygon_mask([[14, 10], [10, 14], [6, 10], [10, 6]], 20, 20).sum() == 41
    # Rounding the vertices first, as EchoNet does: (1.4, 0.6)-(3.6, 2.4) becomes (1, 1)-(4, 2).
    rounded = polygon_mask([[1.4, 0.6], [3.6, 0.6], [3.6, 2.4], [1.4, 2.4]], 5, 6, round_vertices=True)
    assert np.argwhere(rounded).tolist() == [[r, c] for r in (1, 2) for c in (1, 2, 3, 4)]
    # Clipped at the frame: a square from -5 to 2 keeps columns and rows 0-2.
    assert polygon_mask([[-5, -5], [2, -5], [2, 2], [-5, 2]], 6, 6).sum() == 9
    assert not polygon_mask([[30, 30], [40, 30], [40, 40]], 6, 6).any()


def test_self_crossing_outline_matches_scikit_image():
    # Hourglass (0,0)-(4,4)-(0,4)-(4,0): its crossing point (2, 2) lies on two edges and, as in
    # skimage.draw.polygon, is outside (the expected arrays were produced with scikit-image 0.26).
    hourglass = polygon_mask([[0, 0], [4, 4], [0, 4], [4, 0]], 6, 6).astype(int)
    expected = [[1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert hourglass[:5, :5].tolist() == expected and hourglass.sum() == 16
    # Bowtie (0,0)-(4,4)-(4,0)-(0,4): there the crossing point is inside by the even-odd rule.
    bowtie = polygon_mask([[0, 0], [4, 4], [4, 0], [0, 4]], 6, 6).astype(int)
    assert bowtie[2, :5].tolist() == [1, 1, 1, 1, 1] and bowtie.sum() == 17


def test_echonet_outline_walks_the_chord_ends_and_leaves_out_the_long_axis(tmp_path):
    # ED: rectangle x 6..14, y 2..12 (area 80) in a 20 x 24 frame; ES: x 9..12, y 5..9 (area 12).
    tracings = rectangle_tracing("a.avi", 30, 6, 14, 2, 12) + rectangle_tracing("a.avi", 41, 9, 12, 5, 9)
    root = write_folder(tmp_path, tracings)
    masks = echonet_tracing_masks(root / "VolumeTracings.csv", "a", height=20, width=24)
    assert sorted(masks) == [30, 41]
    ed = masks[30]
    assert ed.shape == (20, 24) and ed.dtype == bool
    expected = np.zeros((20, 24), bool)
    expected[2:13, 6:15] = True  # rows are y, columns x; the outline's centres count: 11 x 9 = 99
    assert np.array_equal(ed, expected)
    assert masks[41].sum() == 5 * 4
    # Without EchoNet's rounding, half-pixel chords give the area exactly: x 5.5..13.5, y 1.5..11.5 is 8 x 10.
    half = rectangle_tracing("a.avi", 30, 5.5, 13.5, 1.5, 11.5) + rectangle_tracing("a.avi", 41, 9, 12, 5, 9)
    write_folder(tmp_path, half)
    exact = echonet_tracing_masks(root / "VolumeTracings.csv", "a.avi", 20, 24, round_vertices=False)[30]
    assert exact.sum() == 80 and np.array_equal(np.argwhere(exact).min(0), [2, 6])


def test_chords_of_different_lengths_make_a_trapezoid(tmp_path):
    # Chords 8..12 at y 2, 6..14 at y 6, 4..16 at y 10: the sides are x = 8 - (y - 2) / 2 and 12 + (y - 2) / 2, so
    # row y holds y + 3 centres when y is even (both ends on a centre) and y + 2 when odd: 77 in all (area 64).
    # Walking the X2 ends in file order instead of back up would cross the outline over itself.
    rows = ["t.avi,10,0,10,12,5", "t.avi,8,2,12,2,5", "t.avi,6,6,14,6,5", "t.avi,4,10,16,10,5"]
    path = tmp_path / "VolumeTracings.csv"
    path.write_text("FileName,X1,Y1,X2,Y2,Frame\n" + "".join(f"{row}\n" for row in rows))
    mask = echonet_tracing_masks(path, "t", 14, 20)[5]
    assert mask.sum(axis=1).tolist() == [0, 0, 5, 5, 7, 7, 9, 9, 11, 11, 13, 0, 0, 0]
    assert mask[2, 8] and mask[2, 12] and not mask[2, 7] and mask[10, 4] and mask[10, 16] and not mask[11, 10]


def test_load_echonet_dynamic_with_masks(tmp_path):
    tracings = rectangle_tracing("a.avi", 41, 9, 12, 5, 9) + rectangle_tracing("a.avi", 30, 6, 14, 2, 12)
    root = write_folder(tmp_path, tracings)
    plain = load_echonet_dynamic(root)
    assert "ed_polygon" not in plain["train"].column_names
    data = load_echonet_dynamic(root, masks=True)
    assert isinstance(data["train"].features["ed_polygon"], Array2D)
    row = data["train"][0]
    assert (row["ed_frame"], row["es_frame"]) == (30, 41)
    # The outline EchoNet draws: X1 side down, X2 side back up; the long axis row is not in it.
    assert row["ed_polygon"] == [[6, 2], [6, 7], [6, 12], [14, 12], [14, 7], [14, 2]]
    ed, es = echonet_row_masks(row)
    assert ed.shape == (20, 24) and ed.sum() == 99 and es.sum() == 20
    assert np.array_equal(ed, echonet_tracing_masks(root / "VolumeTracings.csv", "a", 20, 24)[30])
    # b has no tracings: kept for EF, with empty outlines and no masks.
    untraced = data["validation"][0]
    assert untraced["ed_polygon"] == [] and echonet_row_masks(untraced) == (None, None)
    with pytest.raises(ValueError, match="masks=True"):
        echonet_row_masks(plain["train"][0])


def test_bad_tracings_name_file_video_and_frame(tmp_path):
    good = rectangle_tracing("b.avi", 3, 6, 14, 2, 12) + rectangle_tracing("b.avi", 4, 9, 12, 5, 9)
    short = rectangle_tracing("a.avi", 12, 6, 14, 2, 12)[:2]  # long axis and one chord
    far = rectangle_tracing("a.avi", 20, 6, 400, 2, 12)  # traced in a 600-pixel-wide image, say
    beyond = rectangle_tracing("a.avi", 70, 6, 14, 2, 12)  # the video has 50 frames
    flat = rectangle_tracing("a.avi", 25, 6, 14, 5, 5)  # three chords on one line
    root = write_folder(tmp_path, good + short + far + beyond + flat)
    # Without masks the file list loads as before: only the outlines need the checks.
    assert len(load_echonet_dynamic(root)["train"]) == 1
    with pytest.raises(ManifestError) as caught:
        load_echonet_dynamic(root, masks=True)
    message = str(caught.value)
    assert "VolumeTracings.csv: 4 tracing problem(s)" in message
    assert "a.avi frame 12: 2 row(s) (need the long axis and at least 2 chords)" in message
    assert "a.avi frame 20: x from 0 to 400, far outside the frame's 24 columns" in message
    assert "a.avi frame 70: a frame beyond the video's 50 frames" in message
    assert "a.avi frame 25: an outline that encloses no area" in message
    assert "b.avi" not in message and len(caught.value.problems) == 4
    # strict=False skips bad file-list rows, never bad tracings.
    with pytest.raises(ManifestError, match="a.avi frame 12"):
        load_echonet_dynamic(root, strict=False, masks=True)
    with pytest.raises(ManifestError, match="a.avi frame 12: 2 row"):
        echonet_tracing_masks(root / "VolumeTracings.csv", "a", 20, 24)


def test_missing_coordinates_and_missing_files(tmp_path):
    tracings = rectangle_tracing("a.avi", 30, 6, 14, 2, 12) + ["a.avi,6,2,,2,31"]
    root = write_folder(tmp_path / "nan", tracings)
    with pytest.raises(ManifestError, match=r"VolumeTracings.csv has missing or non-numeric .* a\.avi frame 31"):
        load_echonet_dynamic(root, masks=True)
    no_tracings = write_folder(tmp_path / "none", None)
    with pytest.raises(ManifestError, match="masks=True needs the tracings"):
        load_echonet_dynamic(no_tracings, masks=True)
    good = write_folder(tmp_path / "good", rectangle_tracing("a.avi", 30, 6, 14, 2, 12))
    with pytest.raises(ManifestError, match="has no tracings for b.avi"):
        echonet_tracing_masks(good / "VolumeTracings.csv", "b.avi", 20, 24)
    with pytest.raises(ManifestError, match="Tracings file not found"):
        echonet_tracing_masks(tmp_path / "absent.csv", "a", 20, 24)


def test_pediatric_points_are_the_outline(tmp_path):
    # A right triangle with legs 6 (x) and 4 (y) at (2, 1); its whole-pixel outline holds 7 + 5 + 4 + 2 + 1 centres.
    points = [(2, 1), (8, 1), (2, 5)]
    rows = [f"p.avi,{x},{y},7" for x, y in points] + ["p.avi,1,1,9", "p.avi,2,2,9"]
    path = tmp_path / "VolumeTracings.csv"
    path.write_text("FileName,X,Y,Frame\n" + "".join(f"{row}\n" for row in rows[:3]))
    mask = pediatric_tracing_masks(path, "p", 10, 12)[7]
    assert [int(n) for n in mask.sum(axis=1)[1:6]] == [7, 5, 4, 2, 1] and mask.sum() == 19
    assert mask[1, 2] and mask[1, 8] and mask[5, 2] and not mask[5, 3]
    path.write_text("FileName,X,Y,Frame\n" + "".join(f"{row}\n" for row in rows))
    with pytest.raises(ManifestError, match=r"p.avi frame 9: 2 row\(s\) \(need at least 3 points\)"):
        pediatric_tracing_masks(path, "p.avi", 10, 12)
