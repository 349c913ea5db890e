"""EchoNet-Dynamic, EchoNet-Pediatric and DISCOVR CSV manifests, on small hand-written folders."""

import logging

import pytest

from discovr.data import ManifestError, load_echonet_dynamic, load_echonet_pediatric, load_video_csv, read_video_csv


HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"


def write_echonet(root, rows, tracings=None, videos=None):
    """An EchoNet-Dynamic folder: FileList rows as strings, tracing rows, and the (empty) video files."""
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    (root / "FileList.csv").write_text(HEADER + "".join(f"{row}\n" for row in rows))
    if tracings is not None:
        (root / "VolumeTracings.csv").write_text(
            "FileName,X1,Y1,X2,Y2,Frame\n" + "".join(f"{row}\n" for row in tracings)
        )
    for name in videos if videos is not None else [row.split(",")[0] for row in rows]:
        (root / "Videos" / (name if name.endswith(".avi") else f"{name}.avi")).write_bytes(b"")
    return root


def square_tracing(name, frame, half):
    """Long axis then two chords of a square of side 2*half: the traced area is (2*half)**2."""
    return [
        f"{name},10,0,10,{2 * half},{frame}",
        f"{name},{10 - half},0,{10 + half},0,{frame}",
        f"{name},{10 - half},{2 * half},{10 + half},{2 * half},{frame}",
    ]


def good_folder(root):
    rows = [
        "a,60.0,40,100,112,112,50,120,TRAIN",
        "b.avi,35.5,65,100,112,112,50,130,train",
        "c,70,30,100,112,112,50,140,Val",
        "d,55,45,100,112,112,50,150,TEST",
        "e,45,55,100,112,112,50,160,test",
    ]
    # Video a: ED at frame 30 (larger), ES at 12, listed ES first. Video b: no tracings. c: a single frame only.
    tracings = square_tracing("a.avi", 12, 3) + square_tracing("a.avi", 30, 5) + square_tracing("c.avi", 4, 4)
    tracings += square_tracing("d.avi", 8, 6) + square_tracing("d.avi", 20, 2)
    tracings += square_tracing("e.avi", 1, 6) + square_tracing("e.avi", 2, 2)
    return write_echonet(root, rows, tracings, videos=["a", "b", "c", "d", "e"])


def test_echonet_dynamic_splits_columns_and_tracings(tmp_path, caplog):
    root = good_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = load_echonet_dynamic(root)
    assert {name: len(split) for name, split in data.items()} == {"train": 2, "validation": 1, "test": 2}
    assert set(data["train"].column_names) == {
        "video", "ef", "esv", "edv", "fps", "num_frames", "height", "width", "ed_frame", "es_frame"
    }
    rows = {row["video"].rsplit("/", 1)[-1]: row for split in data.values() for row in split}
    assert rows["a.avi"]["video"] == str((root / "Videos" / "a.avi").resolve())
    assert (rows["a.avi"]["ed_frame"], rows["a.avi"]["es_frame"]) == (30, 12)
    assert (rows["d.avi"]["ed_frame"], rows["d.avi"]["es_frame"]) == (8, 20)
    # b has no tracing and c only one traced frame: both kept for EF, with -1, and counted in the log.
    assert (rows["b.avi"]["ed_frame"], rows["b.avi"]["es_frame"], rows["b.avi"]["ef"]) == (-1, -1, 35.5)
    assert rows["c.avi"]["ed_frame"] == -1
    assert "2 of 5 videos have fewer than 2 traced frames" in caplog.text
    assert rows["e.avi"]["num_frames"] == 160 and rows["e.avi"]["fps"] == 50.0


def test_every_problem_is_listed_in_one_error(tmp_path):
    rows = [
        "ok,60,40,100,112,112,50,120,TRAIN",
        "missing1,60,40,100,112,112,50,120,TRAIN",
        "missing2,60,40,100,112,112,50,120,TRAIN",
        "dup,60,40,100,112,112,50,120,TRAIN",
        "dup.avi,60,40,100,112,112,50,120,VAL",
        "high,120,40,100,112,112,50,120,TEST",
        "nan,,40,100,112,112,50,120,TEST",
        "../escape,60,40,100,112,112,50,120,TEST",
        "odd,60,40,100,112,112,50,120,HOLDOUT",
    ]
    write_echonet(tmp_path, rows, videos=["ok", "dup", "high", "nan", "odd"])
    with pytest.raises(ManifestError) as error:
        load_echonet_dynamic(tmp_path)
    message = str(error.value)
    assert "2 rows with a missing video file: missing1, missing2" in message
    assert "2 rows with a duplicate file name: dup, dup.avi" in message
    assert "EF outside [0, 100]: high" in message
    assert "EF missing or not a number: nan" in message
    assert "a path outside the data root: ../escape" in message
    assert "unknown Split" in message and "odd" in message
    assert len(error.value.problems) == 6


def test_missing_names_are_counted_beyond_the_first_few(tmp_path):
    rows = [f"v{i},60,40,100,112,112,50,120,TRAIN" for i in range(8)]
    write_echonet(tmp_path, rows, videos=[])
    with pytest.raises(ManifestError, match=r"8 rows with a missing video file: v0, v1, v2, v3, v4 and 3 more"):
        load_echonet_dynamic(tmp_path)


def test_missing_columns(tmp_path):
    (tmp_path / "FileList.csv").write_text("FileName,EF\na,50\n")
    with pytest.raises(ManifestError, match=r"missing columns \['ESV', 'EDV'.*'Split'\]"):
        load_echonet_dynamic(tmp_path)


def test_absolute_path_escapes_root(tmp_path):
    write_echonet(tmp_path, ["/etc/passwd,60,40,100,112,112,50,120,TRAIN"], videos=[])
    with pytest.raises(ManifestError, match="outside the data root"):
        load_echonet_dynamic(tmp_path)


def test_non_strict_skips_bad_rows_and_reports_why(tmp_path, caplog):
    rows = [
        "ok,60,40,100,112,112,50,120,TRAIN",
        "gone,60,40,100,112,112,50,120,TRAIN",
        "high,101,40,100,112,112,50,120,TEST",
    ]
    write_echonet(tmp_path, rows, videos=["ok", "high"])
    with caplog.at_level(logging.WARNING):
        data = load_echonet_dynamic(tmp_path, strict=False)
    assert len(data["train"]) == 1 and len(data["test"]) == 0
    assert "skipped 2 of 3 rows: 1 with a missing video file; 1 with EF outside [0, 100]" in caplog.text


def test_echonet_pediatric_folds(tmp_path):
    view = tmp_path / "A4C"
    (view / "Videos").mkdir(parents=True)
    lines = ["FileName,EF,Sex,Age,Weight,Height,Split"]
    for index in range(20):
        lines.append(f"p{index}.avi,{40 + index},F,{index % 18},30,120,{index % 10}")
        (view / "Videos" / f"p{index}.avi").write_bytes(b"")
    (view / "FileList.csv").write_text("\n".join(lines) + "\n")
    points = ["FileName,X,Y,Frame"]
    # p0: frame 3 is a 4x4 square, frame 9 a 2x2 one, so ED = 3 and ES = 9.
    for frame, side in ((9, 2), (3, 4)):
        points += [f"p0.avi,{x},{y},{frame}" for x, y in ((0, 0), (side, 0), (side, side), (0, side))]
    (view / "VolumeTracings.csv").write_text("\n".join(points) + "\n")

    data = load_echonet_pediatric(tmp_path, view="A4C", test_fold=9)
    assert sorted(data["test"]["fold"]) == [9, 9] and sorted(data["validation"]["fold"]) == [0, 0]
    assert len(data["train"]) == 16 and not set(data["train"]["fold"]) & {0, 9}
    p0 = data["validation"].filter(lambda row: row["video"].endswith("p0.avi"))[0]
    assert (p0["ed_frame"], p0["es_frame"]) == (3, 9)
    with pytest.raises(ValueError, match="view"):
        load_echonet_pediatric(tmp_path, view="PLAX")


def test_video_csv_positional_and_named(tmp_path):
    for name in ("n1.avi", "n2.avi", "sub/a1.avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "train.csv").write_text("n1,Normal\nsub/a1.avi,Abnormal\n")
    (tmp_path / "test.csv").write_text("Path,class\nn2,Normal\n")
    data = load_video_csv({"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}, root=tmp_path)
    names = data["train"].features["label"].names
    assert names == ["Abnormal", "Normal"] and data["test"].features["label"].names == names
    assert data["train"]["label"] == [1, 0]
    assert data["train"]["video"][1] == str((tmp_path / "sub" / "a1.avi").resolve())
    single = load_video_csv(tmp_path / "test.csv", root=tmp_path, class_names=["Normal", "Abnormal"])
    assert single["label"] == [0] and single["video"] == [str((tmp_path / "n2.avi").resolve())]


def test_video_csv_problems(tmp_path):
    (tmp_path / "ok.avi").write_bytes(b"")
    (tmp_path / "bad.csv").write_text("ok,Normal\nok.avi,Normal\nmissing,Normal\n../up,Normal\nok2,Weird\n")
    with pytest.raises(ManifestError) as error:
        load_video_csv(tmp_path / "bad.csv", root=tmp_path, class_names=["Normal", "Abnormal"])
    message = str(error.value)
    for expected in ("duplicate file name: ok.avi, ok.avi", "missing video file: missing.avi, ok2.avi",
                     "outside the data root: ../up.avi", "a class not in ['Normal', 'Abnormal']: ok2.avi"):
        assert expected in message
    (tmp_path / "named.csv").write_text("Path,label\nok,Normal\n")
    with pytest.raises(ManifestError, match=r"missing columns \['class'\]"):
        load_video_csv(tmp_path / "named.csv", root=tmp_path)


def test_read_video_csv_returns_every_row_as_written(tmp_path):
    # Rows that load_video_csv would reject (missing file, duplicate, unknown class) are all kept here.
    (tmp_path / "plain.csv").write_text("missing,Normal\nmissing,Weird\n sub/a.avi , Abnormal \n")
    paths, classes = read_video_csv(tmp_path / "plain.csv")
    assert list(paths) == ["missing", "missing", "sub/a.avi"] and list(classes) == ["Normal", "Weird", "Abnormal"]
    (tmp_path / "named.csv").write_text("class,Path\nNormal,n1\n")
    paths, classes = read_video_csv(str(tmp_path / "named.csv"))
    assert list(paths) == ["n1"] and list(classes) == ["Normal"]
    with pytest.raises(ManifestError, match="not found"):
        read_video_csv(tmp_path / "absent.csv")
