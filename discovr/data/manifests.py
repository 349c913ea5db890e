"""Echo manifests (EchoNet-Dynamic, EchoNet-Pediatric, DISCOVR CSVs) to validated `datasets` objects.

Videos are kept as absolute path strings, not as a `datasets.Video` feature. The `Video` feature opens a torchcodec
decoder whenever a row is read, so looking at labels (`ds["ef"]`, filtering, the training mean of EF) would open
every file; and its decode failures surface as bare torchcodec errors. With paths, the manifest stays cheap, and
decoding happens once, in `DiscovrVideoProcessor`, which decodes only the frames of the clip and raises
`VideoDecodeError` naming the file. The same processor serves training, evaluation and the pipeline.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Value

from .errors import ManifestError


logger = logging.getLogger(__name__)

ECHONET_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
ECHONET_TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
PEDIATRIC_COLUMNS = ["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"]
PEDIATRIC_TRACING_COLUMNS = ["FileName", "X", "Y", "Frame"]
ECHONET_SPLITS = {"TRAIN": "train", "VAL": "validation", "TEST": "test"}
PEDIATRIC_VIEWS = ("A4C", "PSAX")
# How many offending names an error message shows before summarising the rest as a count.
SHOWN_NAMES = 5


def _names(values) -> str:
    values = [str(value) for value in values]
    shown = ", ".join(values[:SHOWN_NAMES])
    return shown + (f" and {len(values) - SHOWN_NAMES} more" if len(values) > SHOWN_NAMES else "")


def read_manifest_table(path: Path, required: list[str], what: str, dtype: dict | None = None) -> pd.DataFrame:
    """The CSV at `path`; a missing or unreadable file, or a missing required column, raises `ManifestError`."""
    if not path.is_file():
        raise ManifestError(f"{what} not found: {path}", [f"missing file {path}"])
    try:
        table = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"{what} {path} is not a readable CSV: {error}", [str(error)]) from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ManifestError(
            f"{what} {path} is missing columns {missing} (found {list(table.columns)})",
            [f"missing columns {missing}"],
        )
    return table


def _escapes_root(relative: str) -> bool:
    """True for a manifest path that is absolute or climbs out of the data root with `..`."""
    for flavour in (PurePosixPath, PureWindowsPath):
        path = flavour(relative)
        if path.is_absolute() or path.drive or ".." in path.parts:
            return True
    return False


class _Validator:
    """Collects every problem of a manifest, per row, then raises once or drops the bad rows."""

    def __init__(self, table: pd.DataFrame, source: Path):
        self.table = table.reset_index(drop=True)
        self.source = source
        self.reasons: dict[str, np.ndarray] = {}
        self.details: dict[str, str] = {}

    def flag(self, reason: str, bad: np.ndarray, names) -> None:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            self.reasons[reason] = self.reasons.get(reason, np.zeros(len(self.table), bool)) | bad
            flagged = list(pd.Series(list(names))[bad])
            self.details[reason] = f"{int(bad.sum())} rows with {reason}: {_names(flagged)}"

    def check_paths(self, relative: pd.Series, absolute: list[Path], names) -> None:
        escaping = relative.map(_escapes_root).to_numpy(bool)
        self.flag("a path outside the data root", escaping, names)
        missing = np.array([not escape and not path.is_file() for escape, path in zip(escaping, absolute)], bool)
        self.flag("a missing video file", missing, names)

    def check_duplicates(self, keys: pd.Series, names) -> None:
        self.flag("a duplicate file name", keys.duplicated(keep=False).to_numpy(), names)

    def check_ef(self, column: pd.Series, names, require_ef: bool = True) -> pd.Series:
        ef = pd.to_numeric(column, errors="coerce")
        if require_ef:
            self.flag("EF missing or not a number", ef.isna().to_numpy(), names)
        else:
            self.flag("EF not a number", (ef.isna() & column.notna()).to_numpy(), names)
        self.flag("EF outside [0, 100]", ((ef < 0) | (ef > 100)).to_numpy(), names)
        return ef

    def resolve(self, strict: bool) -> np.ndarray:
        """Mask of the rows to keep; raises `ManifestError` listing every problem when `strict`."""
        if not self.reasons:
            return np.ones(len(self.table), bool)
        problems = list(self.details.values())
        if strict:
            raise ManifestError(
                f"{self.source} has {len(problems)} kind(s) of problem (pass strict=False to skip the bad rows):\n  - "
                + "\n  - ".join(problems),
                problems,
            )
        bad = np.logical_or.reduce(list(self.reasons.values()))
        logger.warning(
            "%s: skipped %d of %d rows: %s",
            self.source,
            int(bad.sum()),
            len(self.table),
            "; ".join(f"{int(mask.sum())} with {reason}" for reason, mask in self.reasons.items()),
        )
        return ~bad


def _polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _echonet_polygon(rows: pd.DataFrame) -> np.ndarray:
    """Outline `(N, 2)` (x, y) of one EchoNet-Dynamic traced frame, as EchoNet builds it: the chord ends walked down
    the (X1, Y1) side and back up the (X2, Y2) side. The first row is the long axis and is not part of the outline."""
    chords = rows.iloc[1:]
    x = np.concatenate([chords["X1"].to_numpy(float), chords["X2"].to_numpy(float)[::-1]])
    y = np.concatenate([chords["Y1"].to_numpy(float), chords["Y2"].to_numpy(float)[::-1]])
    return np.stack([x, y], axis=1)


def _pediatric_polygon(rows: pd.DataFrame) -> np.ndarray:
    """Outline `(N, 2)` (x, y) of one EchoNet-Pediatric traced frame: its points, in file order."""
    return np.stack([rows["X"].to_numpy(float), rows["Y"].to_numpy(float)], axis=1)


def _echonet_frame_area(rows: pd.DataFrame) -> float:
    """Traced area of one EchoNet frame: the polygon through the chord ends (the first row is the long axis)."""
    polygon = _echonet_polygon(rows)
    return _polygon_area(polygon[:, 0], polygon[:, 1]) if len(polygon) else 0.0


def _pediatric_frame_area(rows: pd.DataFrame) -> float:
    polygon = _pediatric_polygon(rows)
    return _polygon_area(polygon[:, 0], polygon[:, 1])


def _ed_es_frames(tracings: pd.DataFrame, area_fn, source: Path) -> dict[str, tuple[int, int]]:
    """Per video stem: (ED, ES) frames, ED being the traced frame of larger area. Videos with <2 frames are left out."""
    result = {}
    unusual = 0
    for stem, rows in tracings.groupby("stem", sort=False):
        areas = {int(frame): area_fn(frame_rows) for frame, frame_rows in rows.groupby("Frame", sort=False)}
        if len(areas) < 2:
            continue
        unusual += len(areas) > 2
        ordered = sorted(areas, key=areas.get)
        result[stem] = (ordered[-1], ordered[0])
    if unusual:
        logger.info("%s: %d videos have more than two traced frames; ED/ES are the largest/smallest", source, unusual)
    return result


def _stem(name) -> str:
    name = str(name).strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def _tracing_table(path: Path, required: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        logger.warning("%s not found: every video gets ed_frame = es_frame = -1", path)
        return None
    tracings = read_manifest_table(path, required, "Tracings file")
    numeric = tracings[required[1:]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        bad = tracings.loc[numeric.isna().any(axis=1), ["FileName", "Frame"]].drop_duplicates()
        where = [f"{name} frame {frame}" for name, frame in bad.itertuples(index=False)]
        raise ManifestError(f"{path} has missing or non-numeric coordinates or frames for {_names(where)}", where)
    tracings[required[1:]] = numeric
    tracings["stem"] = tracings["FileName"].map(_stem)
    return tracings


def _attach_tracings(frame: pd.DataFrame, stems: pd.Series, traced: dict[str, tuple[int, int]], source: Path) -> None:
    frame["ed_frame"] = [traced.get(stem, (-1, -1))[0] for stem in stems]
    frame["es_frame"] = [traced.get(stem, (-1, -1))[1] for stem in stems]
    untraced = int((frame["ed_frame"] < 0).sum())
    if untraced:
        logger.warning(
            "%s: %d of %d videos have fewer than 2 traced frames; they are kept for EF with ed_frame = es_frame = -1",
            source,
            untraced,
            len(frame),
        )


def _checked_file_list(base: Path, columns: list[str], what: str, require_ef: bool = True):
    """Read `base/FileList.csv` and run the checks both EchoNet layouts share: video files under `base/Videos`,
    duplicate FileNames and EF values. Returns the table, file stems, names, the validator and the EF column."""
    source = base / "FileList.csv"
    table = read_manifest_table(source, columns, what)
    stems = table["FileName"].map(_stem)
    check = _Validator(table, source)
    names = table["FileName"].astype(str)
    check.check_paths(stems + ".avi", [base / "Videos" / f"{stem}.avi" for stem in stems], names)
    check.check_duplicates(stems, names)
    ef = check.check_ef(table["EF"], names, require_ef)
    return table, stems, names, check, ef


def load_echonet_dynamic(
    root: str | os.PathLike, strict: bool = True, require_ef: bool = True, masks: bool = False
) -> DatasetDict:
    """
    Load an EchoNet-Dynamic folder (`FileList.csv`, `VolumeTracings.csv`, `Videos/`) as train/validation/test.

    Columns: `video` (absolute path), `ef`, `esv`, `edv`, `fps`, `num_frames`, `height`, `width`, `ed_frame`,
    `es_frame`. ED is the traced frame with the larger area and ES the other; a video with fewer than two traced
    frames is kept (for EF) with -1 in both, and their number is logged. `Split` is case-insensitive, and
    `FileName` may carry `.avi` or not.

    With `masks=True`, `ed_polygon` and `es_polygon` hold the traced cavity outlines of those frames, `(N, 2)`
    float32 (x, y) pixel coordinates (`datasets.Array2D`), empty for an untraced video; `echonet_row_masks(row)`
    (in `discovr.data.tracings`) rasterises them. Outlines rather than masks, for the reason videos are paths: a
    row stays under a kilobyte (two 112x112 masks would make it 25 kB), a mask is drawn only for the rows a batch
    reads, and an outline can be scaled with the frames and drawn at the model's input size instead of resizing a
    mask. Every traced frame of the listed videos is checked (at least the long
    axis and two chords, coordinates within the frame, a non-zero area, a frame inside the video); problems raise
    one `ManifestError` naming the file, each video and frame, whatever `strict` says for the file list, since
    a mask is never silently dropped.

    Args:
        root: the EchoNet-Dynamic folder.
        strict: raise one `ManifestError` listing every problem (missing files, duplicates, bad EF, paths outside
            `root`, unknown splits). With `False`, the bad rows are skipped and their number and reasons logged.
        require_ef: an empty EF is a problem (the default, for EF tasks). With `False` it is kept as NaN, for uses
            that need no label, such as pretraining on a `discovr-prepare` folder without labels.
        masks: add the `ed_polygon` and `es_polygon` outlines described above.
    """
    root = Path(root).resolve()
    source = root / "FileList.csv"
    table, stems, names, check, ef = _checked_file_list(
        root, ECHONET_COLUMNS, "EchoNet-Dynamic file list", require_ef
    )
    split = table["Split"].astype(str).str.strip().str.upper()
    check.flag("an unknown Split (expected TRAIN, VAL or TEST)", ~split.isin(list(ECHONET_SPLITS)).to_numpy(), names)
    numeric = {}
    for column in ["ESV", "EDV", "FPS", "NumberOfFrames", "FrameHeight", "FrameWidth"]:
        numeric[column] = pd.to_numeric(table[column], errors="coerce")
        check.flag(f"a non-numeric {column}", numeric[column].isna().to_numpy() & table[column].notna().to_numpy(), names)
    keep = check.resolve(strict)

    frame = pd.DataFrame(
        {
            "video": [str(root / "Videos" / f"{stem}.avi") for stem in stems],
            "ef": ef.astype(float),
            "esv": numeric["ESV"].astype(float),
            "edv": numeric["EDV"].astype(float),
            "fps": numeric["FPS"].astype(float),
            "num_frames": numeric["NumberOfFrames"].fillna(-1).astype(int),
            "height": numeric["FrameHeight"].fillna(-1).astype(int),
            "width": numeric["FrameWidth"].fillna(-1).astype(int),
        }
    )
    tracings = _tracing_table(root / "VolumeTracings.csv", ECHONET_TRACING_COLUMNS)
    traced = {} if tracings is None else _ed_es_frames(tracings, _echonet_frame_area, root / "VolumeTracings.csv")
    frame, stems, split = frame[keep].copy(), stems[keep], split[keep]
    _attach_tracings(frame, stems, traced, source)
    outlines = {}
    if masks:
        # Imported here: the mask module builds on this module's tracing parsing.
        from .tracings import _attach_polygons

        _attach_polygons(frame, stems, tracings, root / "VolumeTracings.csv")
        outlines = {f"{phase}_polygon": Array2D(shape=(None, 2), dtype="float32") for phase in ("ed", "es")}

    features = Features(
        {
            "video": Value("string"),
            **{column: Value("float64") for column in ["ef", "esv", "edv", "fps"]},
            **{column: Value("int64") for column in ["num_frames", "height", "width", "ed_frame", "es_frame"]},
            **outlines,
        }
    )
    return DatasetDict(
        {
            name: Dataset.from_pandas(frame[split == key].reset_index(drop=True), features=features, preserve_index=False)
            for key, name in ECHONET_SPLITS.items()
        }
    )


def load_echonet_pediatric(
    root: str | os.PathLike, view: str = "A4C", test_fold: int = 0, strict: bool = True
) -> DatasetDict:
    """
    Load one view of EchoNet-Pediatric (`<view>/FileList.csv`, `VolumeTracings.csv`, `Videos/`).

    The `Split` column is a fold 0-9: fold `test_fold` is the test set, fold `(test_fold + 1) % 10` the validation
    set and the other eight the training set. Columns: `video`, `ef`, `sex`, `age`, `weight`, `height`, `fold`,
    `ed_frame`, `es_frame` (ED = larger traced area, -1 without two traced frames).

    Args:
        root: the EchoNet-Pediatric folder holding `A4C/` and `PSAX/`.
        view: `"A4C"` or `"PSAX"`.
        test_fold: fold used for testing, 0-9.
        strict: as in [`load_echonet_dynamic`].
    """
    if view not in PEDIATRIC_VIEWS:
        raise ValueError(f"view must be one of {PEDIATRIC_VIEWS}, got {view!r}")
    if not 0 <= test_fold <= 9:
        raise ValueError(f"test_fold must be in 0-9, got {test_fold}")
    base = Path(root).resolve() / view
    source = base / "FileList.csv"
    table, stems, names, check, ef = _checked_file_list(base, PEDIATRIC_COLUMNS, "EchoNet-Pediatric file list")
    fold = pd.to_numeric(table["Split"], errors="coerce")
    check.flag("a Split that is not a fold 0-9", ~fold.isin(range(10)).to_numpy(), names)
    keep = check.resolve(strict)

    frame = pd.DataFrame(
        {
            "video": [str(base / "Videos" / f"{stem}.avi") for stem in stems],
            "ef": ef.astype(float),
            "sex": table["Sex"].astype(str),
            "age": pd.to_numeric(table["Age"], errors="coerce").astype(float),
            "weight": pd.to_numeric(table["Weight"], errors="coerce").astype(float),
            "height": pd.to_numeric(table["Height"], errors="coerce").astype(float),
            "fold": fold.fillna(-1).astype(int),
        }
    )
    tracings = _tracing_table(base / "VolumeTracings.csv", PEDIATRIC_TRACING_COLUMNS)
    traced = {} if tracings is None else _ed_es_frames(tracings, _pediatric_frame_area, base / "VolumeTracings.csv")
    frame, stems = frame[keep].copy(), stems[keep]
    _attach_tracings(frame, stems, traced, source)

    validation_fold = (test_fold + 1) % 10
    parts = {
        "train": ~frame["fold"].isin([test_fold, validation_fold]),
        "validation": frame["fold"] == validation_fold,
        "test": frame["fold"] == test_fold,
    }
    return DatasetDict(
        {name: Dataset.from_pandas(frame[mask].reset_index(drop=True), preserve_index=False) for name, mask in parts.items()}
    )


def read_video_csv(path: str | os.PathLike) -> tuple[pd.Series, pd.Series]:
    """
    The rows of a DISCOVR manifest as written: its paths and classes, from `Path` and `class` columns or the first two.

    Nothing is validated beyond the columns: [`load_video_csv`] checks the rows and builds the dataset. Tools that
    report on every row, such as `discovr-predict`, read the manifest with this instead.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Video manifest not found: {path}", [f"missing file {path}"])
    with open(path, encoding="utf-8") as handle:
        first_line = handle.readline()
    separator = "," if "," in first_line else r"\s+"
    try:
        table = pd.read_csv(path, sep=separator, header=None, dtype=str, engine="python", skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ManifestError(f"Video manifest {path} is not a readable CSV: {error}", [str(error)]) from None
    header = [str(value).strip().lower() for value in table.iloc[0]]
    if "path" in header or "class" in header:
        missing = [name for name in ("Path", "class") if name.lower() not in header]
        if missing:
            raise ManifestError(f"Video manifest {path} is missing columns {missing} (found {header})")
        table = table.iloc[1:].reset_index(drop=True)
        table.columns = header
        return table["path"].str.strip(), table["class"].str.strip()
    if table.shape[1] < 2:
        raise ManifestError(
            f"Video manifest {path} needs a path and a class per row (or `Path` and `class` columns); "
            f"found {table.shape[1]} column(s)"
        )
    return table[0].str.strip(), table[1].str.strip()


def load_video_csv(
    csv_path: str | os.PathLike | Mapping[str, str | os.PathLike],
    root: str | os.PathLike,
    class_names: list[str] | None = None,
    extension: str = ".avi",
    strict: bool = True,
) -> Dataset | DatasetDict:
    """
    Load a DISCOVR manifest: a clip path (relative to `root`) and a class per row.

    The CSV has either `Path` and `class` columns, or no header with the path first and the class second
    (comma- or space-separated). `extension` is added to paths without one. Columns: `video` (absolute path) and
    `label`, a `ClassLabel`; `dataset.features["label"].names` gives `id2label`.

    Args:
        csv_path: one manifest, or a mapping of split name to manifest (a `DatasetDict` is returned, with the
            same classes in every split).
        root: folder the paths are relative to.
        class_names: class order (label ids); by default the sorted classes found in all manifests.
        extension: extension added to paths that have none.
        strict: as in [`load_echonet_dynamic`]; a class missing from `class_names` is also a problem.
    """
    root_path = Path(root).resolve()
    sources = {None: csv_path} if not isinstance(csv_path, Mapping) else dict(csv_path)
    read = {split: read_video_csv(path) for split, path in sources.items()}
    if class_names is None:
        class_names = sorted({name for _, classes in read.values() for name in classes.dropna()})
    label_feature = ClassLabel(names=list(class_names))
    features = Features({"video": Value("string"), "label": label_feature})

    datasets = {}
    for split, (paths, classes) in read.items():
        source = Path(sources[split])
        table = pd.DataFrame({"path": paths, "class": classes})
        paths = paths.fillna("").map(lambda p: p if PurePosixPath(p).suffix else p + extension)
        check = _Validator(table, source)
        check.flag("an empty path", (table["path"].fillna("") == "").to_numpy(), paths)
        check.check_paths(paths, [root_path / p for p in paths], paths)
        check.check_duplicates(paths, paths)
        check.flag(f"a class not in {list(class_names)}", ~classes.isin(class_names).to_numpy(), paths)
        keep = check.resolve(strict)
        frame = pd.DataFrame(
            {"video": [str(root_path / p) for p in paths[keep]], "label": [label_feature.str2int(c) for c in classes[keep]]}
        )
        datasets[split] = Dataset.from_pandas(frame, features=features, preserve_index=False)
        logger.info("%s: %d clips, classes %s", source, len(frame), dict(Counter(classes[keep])))
    return datasets[None] if None in datasets else DatasetDict(datasets)


__all__ = ["load_echonet_dynamic", "load_echonet_pediatric", "load_video_csv", "read_video_csv"]
