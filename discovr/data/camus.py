"""
CAMUS (apical 2- and 4-chamber echo with expert segmentations) as a validated `datasets.DatasetDict`.

Layout (Leclerc et al., 2019): `root/patientNNNN/` holds, per view (`2CH`, `4CH`), `patientNNNN_<view>_ED`,
`_ED_gt`, `_ES`, `_ES_gt`, `_half_sequence` and `_half_sequence_gt` images, plus `Info_<view>.cfg` (`Key: value`
lines: ED, ES, NbFrame, Sex, Age, ImageQuality, LVedv, LVesv, LVef). The current release stores NIfTI
(`.nii.gz`), the first one MetaImage (`.mhd` + `.raw`, the sequence as `_sequence`, without its segmentation).
Labels: 0 background, 1 LV cavity (endocardium), 2 LV myocardium, 3 left atrium ([`CAMUS_LABELS`]).

As in `manifests.py`, rows keep file paths, not arrays: the manifest stays cheap and [`load_camus_images`] reads
one row's arrays when they are needed, checking them then.

Orientation: every array is returned as `(H, W)` for a frame and `(T, H, W)` for a sequence, rows top to bottom,
the order `SimpleITK.GetArrayFromImage` gives. NIfTI stores x (the image's columns) first, so nibabel returns
`(W, H)` / `(W, H, T)` and the axes are reversed here; the affine is not applied, by either reader, since CAMUS's
voxel order is the image's.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, Features, Value

from .errors import ManifestError
from .manifests import _Validator


logger = logging.getLogger(__name__)

CAMUS_VIEWS = ("2CH", "4CH")
CAMUS_LABELS = ("background", "lv_cavity", "lv_myocardium", "left_atrium")
CAMUS_SPLIT_DIR = "database_split"
CAMUS_SPLIT_FILES = {
    "train": "subgroup_training.txt",
    "validation": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
# The order a file is looked for in: the current release's NIfTI, then the first release's MetaImage.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".mhd")
PHASES = ("ED", "ES", "sequence")
PATH_COLUMNS = ["ed_image", "ed_label", "es_image", "es_label", "sequence", "sequence_label"]
INSTALL_HINT = 'pip install "discovr[camus]" (nibabel for NIfTI, SimpleITK for MetaImage)'
_PATIENT = re.compile(r"patient\d+")


def _reader(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"Reading CAMUS images needs {module}: {INSTALL_HINT}") from None


def read_camus_image(path: str | os.PathLike) -> np.ndarray:
    """
    The array of one CAMUS image file: `(H, W)` or `(T, H, W)`, in the stored dtype.

    NIfTI (`.nii.gz`, `.nii`) is read with nibabel and its axes reversed; MetaImage (`.mhd`) with SimpleITK. A
    missing, unreadable or unknown file raises `ManifestError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"CAMUS image not found: {path}", [f"missing file {path}"])
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii")):
        nibabel = _reader("nibabel")
        # The errors nibabel and gzip raise for a damaged or foreign file; anything else is a bug.
        errors = (_reader("nibabel.filebasedimages").ImageFileError, OSError, EOFError, ValueError, zlib.error)
        try:
            # NIfTI's first axis is x (the columns): reversed, it is SimpleITK's (T, H, W) order.
            return np.ascontiguousarray(np.asanyarray(nibabel.load(path).dataobj).T)
        except errors as error:
            raise ManifestError(f"{path} is not a readable NIfTI image: {error}", [str(error)]) from None
    if name.endswith(".mhd"):
        sitk = _reader("SimpleITK")
        try:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as error:  # SimpleITK reports every read failure (a missing .raw too) as RuntimeError
            message = " ".join(str(error).split())
            raise ManifestError(f"{path} is not a readable MetaImage: {message}", [message]) from None
    raise ManifestError(f"{path} is neither NIfTI (.nii.gz, .nii) nor MetaImage (.mhd)", [f"unknown format {path}"])


def _parse_cfg(path: Path) -> tuple[dict[str, str], list[str]]:
    """The `Key: value` pairs of an info file, and its lines that are not of that form."""
    values, problems = {}, []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        key, colon, value = line.partition(":")
        if not line.strip():
            continue
        if not colon or not key.strip():
            problems.append(f"line {number} is not `Key: value`: {line.strip()!r}")
        else:
            values[key.strip()] = value.strip()
    return values, problems


def read_camus_cfg(path: str | os.PathLike) -> dict[str, str]:
    """The `Key: value` pairs of an `Info_<view>.cfg`. A missing file, or a line without a colon, raises
    `ManifestError`."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"CAMUS info file not found: {path}", [f"missing file {path}"])
    values, problems = _parse_cfg(path)
    if problems:
        raise ManifestError(f"{path}: {'; '.join(problems)}", problems)
    return values


def _cfg_fields(values: Mapping[str, str]) -> tuple[dict, list[str]]:
    """The row fields an info file gives, and what is wrong with it (missing keys, non-numbers, frames out of range)."""
    fields, problems = {}, []
    frames = {}
    for key in ("ED", "ES", "NbFrame"):
        text = values.get(key)
        if text is None:
            problems.append(f"no {key}")
        elif not re.fullmatch(r"\d+", text) or int(text) < 1:
            problems.append(f"{key} {text!r} is not a whole number >= 1")
        else:
            frames[key] = int(text)
    if len(frames) == 3:
        for key in ("ED", "ES"):
            if frames[key] > frames["NbFrame"]:
                problems.append(f"{key} {frames[key]} is beyond NbFrame {frames['NbFrame']}")
    # The info files count frames from 1; the rows index the sequence from 0.
    fields["ed_frame"] = frames.get("ED", 0) - 1
    fields["es_frame"] = frames.get("ES", 0) - 1
    fields["num_frames"] = frames.get("NbFrame", -1)
    for key, column in (("LVef", "ef"), ("LVedv", "edv"), ("LVesv", "esv"), ("Age", "age")):
        text = values.get(key)
        number = pd.to_numeric(text, errors="coerce") if text not in (None, "") else math.nan
        if text not in (None, "") and (pd.isna(number) or not math.isfinite(number)):
            problems.append(f"{key} {text!r} is not a number")
        fields[column] = float(number)
    if not (math.isnan(fields["ef"]) or 0 <= fields["ef"] <= 100):
        problems.append(f"LVef {fields['ef']:g} is outside [0, 100]")
    fields["sex"] = values.get("Sex", "")
    fields["image_quality"] = values.get("ImageQuality", "")
    return fields, problems


def _find(folder: Path, stem: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        if (folder / f"{stem}{extension}").is_file():
            return folder / f"{stem}{extension}"
    return None


def _view_row(root: Path, patient: str, view: str) -> tuple[dict, list[str], list[str]]:
    """One (patient, view) row: its fields, its missing files and its info-file problems."""
    folder = root / patient
    row = {"patient": patient, "view": view}
    missing, cfg_problems = [], []
    stems = {
        f"{phase.lower()}_{kind}": f"{patient}_{view}_{phase}{suffix}"
        for phase in ("ED", "ES")
        for kind, suffix in (("image", ""), ("label", "_gt"))
    }
    found = {column: _find(folder, stem) for column, stem in stems.items()}
    # A missing file is named with the extension its siblings have, so a MetaImage release reads `.mhd`.
    extension = next(
        (ext for path in found.values() if path for ext in IMAGE_EXTENSIONS if path.name.endswith(ext)),
        IMAGE_EXTENSIONS[0],
    )
    for column, path in found.items():
        row[column] = str(path or "")
        if path is None:
            missing.append(f"{patient}/{stems[column]}{extension}")
    # The current release has half sequences with their segmentation; the first one a sequence without.
    sequence = _find(folder, f"{patient}_{view}_half_sequence") or _find(folder, f"{patient}_{view}_sequence")
    sequence_label = _find(folder, f"{patient}_{view}_half_sequence_gt")
    row["sequence"], row["sequence_label"] = str(sequence or ""), str(sequence_label or "")
    cfg = folder / f"Info_{view}.cfg"
    if cfg.is_file():
        values, line_problems = _parse_cfg(cfg)
        fields, problems = _cfg_fields(values)
        problems = line_problems + problems
        cfg_problems = [f"{patient}/{cfg.name} ({'; '.join(problems)})"] if problems else []
    else:
        missing.append(f"{patient}/{cfg.name}")
        fields, _ = _cfg_fields({})  # the defaults: frames -1, numbers NaN
    row.update(fields)
    return row, missing, cfg_problems


def _split_files(root: Path, split_dir: str | os.PathLike | None) -> Path | None:
    """The folder holding the official split files: `split_dir`, else `database_split` in or beside `root`."""
    if split_dir is not None:
        split_dir = Path(split_dir)
        missing = [name for name in CAMUS_SPLIT_FILES.values() if not (split_dir / name).is_file()]
        if missing:
            problems = [f"missing file {split_dir / name}" for name in missing]
            raise ManifestError(f"CAMUS split folder {split_dir} lacks {missing}", problems)
        return split_dir
    for candidate in (root / CAMUS_SPLIT_DIR, root.parent / CAMUS_SPLIT_DIR):
        if all((candidate / name).is_file() for name in CAMUS_SPLIT_FILES.values()):
            return candidate
    return None


def _seeded_split(patients: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, str]:
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative shares summing to 1, got {fractions}")
    counts = np.floor(np.asarray(fractions) * len(patients)).astype(int)
    counts[0] += len(patients) - counts.sum()
    names = np.repeat(list(CAMUS_SPLIT_FILES), counts)
    order = np.random.default_rng(seed).permutation(len(patients))
    return {patients[index]: str(name) for index, name in zip(order, names)}


def load_camus(
    root: str | os.PathLike,
    views: Sequence[str] = CAMUS_VIEWS,
    split_dir: str | os.PathLike | None = None,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    strict: bool = True,
    verify: bool = False,
) -> DatasetDict:
    """
    Load a CAMUS folder (`patientNNNN/` folders) as train/validation/test, one row per patient and view.

    Columns: `patient`, `view`, `ed_frame` and `es_frame` (0-based indices into the sequence; the info files count
    from 1), `num_frames`, `ef`, `edv`, `esv` (LVef, LVedv, LVesv; NaN when absent), `sex`, `age`,
    `image_quality`, and the absolute paths `ed_image`, `ed_label`, `es_image`, `es_label`, `sequence`,
    `sequence_label` (the last two empty when the release has none). [`load_camus_images`] reads a row's arrays.

    Splits: the official `subgroup_training.txt`, `subgroup_validation.txt` and `subgroup_testing.txt` (one patient
    per line) from `split_dir`, else from `database_split/` in or beside `root` (the current release ships it
    beside `database_nifti/`); without them, a seeded split by patient, so both views of a patient share a split.

    Args:
        root: the folder holding the `patientNNNN/` folders.
        views: the views to load, of `("2CH", "4CH")`.
        split_dir: folder of the official split files.
        seed: seed of the split when there are no split files.
        split_fractions: train, validation and test shares of that split (the official split is 400/50/50).
        strict: raise one `ManifestError` listing every problem (missing files, bad info files, patients missing
            from the split files or in two of them); with `False`, the bad rows are skipped and logged.
        verify: also read every image and label now and check them as [`load_camus_images`] does (slow: it reads
            the whole data set).
    """
    unknown = [view for view in views if view not in CAMUS_VIEWS]
    if unknown or not views:
        raise ValueError(f"views must be some of {CAMUS_VIEWS}, got {list(views)}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"CAMUS folder not found: {root}", [f"missing folder {root}"])
    patients = sorted(path.name for path in root.iterdir() if path.is_dir() and _PATIENT.fullmatch(path.name))

    split_folder = _split_files(root, split_dir)
    listed: dict[str, list[str]] = {}
    if split_folder is not None:
        for split, name in CAMUS_SPLIT_FILES.items():
            for line in (split_folder / name).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    listed.setdefault(line.strip(), []).append(split)
        # A listed patient without a folder becomes rows whose files are all missing, and is reported as such.
        patients = sorted(set(patients) | set(listed))
        assignment = {patient: listed.get(patient, [""])[0] for patient in patients}
        logger.info("CAMUS splits from %s", split_folder)
    else:
        assignment = _seeded_split(patients, seed, split_fractions)
        logger.info("CAMUS: no split files found; seeded patient split (seed %d, %s)", seed, tuple(split_fractions))
    if not patients:
        raise ManifestError(f"{root} holds no patientNNNN folders", [f"no patients in {root}"])

    rows, missing, cfg_problems = [], [], []
    for patient in patients:
        for view in views:
            row, row_missing, row_cfg = _view_row(root, patient, view)
            rows.append({**row, "split": assignment[patient]})
            missing.append(", ".join(row_missing))
            cfg_problems.append("; ".join(row_cfg))
    table = pd.DataFrame(rows)
    names = (table["patient"] + " " + table["view"]).tolist()
    check = _Validator(table, root)
    check.flag("a missing file", [bool(m) for m in missing], missing)
    check.flag("a bad info file", [bool(p) for p in cfg_problems], cfg_problems)
    if split_folder is not None:
        unlisted = [not listed.get(patient) for patient in table["patient"]]
        check.flag(f"a patient in none of the split files in {split_folder}", unlisted, names)
        twice = [len(listed.get(patient, [])) > 1 for patient in table["patient"]]
        check.flag("a patient in more than one split file", twice, names)
    if verify:
        # Only rows whose files and info are all there: the others are reported already.
        complete = [not m and not p for m, p in zip(missing, cfg_problems)]
        unreadable = [_row_problems(row) if ok else "" for row, ok in zip(table.to_dict("records"), complete)]
        check.flag("an unreadable or inconsistent image", [bool(u) for u in unreadable], unreadable)
    keep = check.resolve(strict)
    table = table[keep]
    unsegmented = int((table["sequence_label"] == "").sum())
    if unsegmented:
        logger.info("CAMUS: %d of %d rows have no sequence segmentation", unsegmented, len(table))

    features = Features(
        {
            **{column: Value("string") for column in ["patient", "view"]},
            **{column: Value("int64") for column in ["ed_frame", "es_frame", "num_frames"]},
            **{column: Value("float64") for column in ["ef", "edv", "esv", "age"]},
            **{column: Value("string") for column in ["sex", "image_quality"]},
            **{column: Value("string") for column in PATH_COLUMNS},
        }
    )
    return DatasetDict(
        {
            split: Dataset.from_pandas(
                table[table["split"] == split][list(features)].reset_index(drop=True),
                features=features,
                preserve_index=False,
            )
            for split in CAMUS_SPLIT_FILES
        }
    )


def _row_problems(row: Mapping) -> str:
    problems = []
    for phase in PHASES:
        if phase == "sequence" and not row["sequence"]:
            continue
        try:
            load_camus_images(row, phase)
        except ManifestError as error:
            problems.append(str(error))
    return "; ".join(problems)


def load_camus_images(row: Mapping, phase: str = "ED") -> tuple[np.ndarray, np.ndarray | None]:
    """
    Image and label map of one `load_camus` row: `(H, W)` for `"ED"` / `"ES"`, `(T, H, W)` for `"sequence"`.

    The image keeps its stored dtype (uint8 in CAMUS); the label map is uint8 with values in 0-3
    ([`CAMUS_LABELS`]), or `None` for a sequence without segmentation. Raises `ManifestError` naming the file for
    a missing or unreadable file, label values outside 0-3, an image and label map of different shapes, or a
    sequence whose length is not the info file's NbFrame.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if phase == "sequence":
        if not row["sequence"]:
            raise ManifestError(f"{row['patient']} {row['view']} has no sequence file", ["no sequence"])
        image_path, label_path, ndim = row["sequence"], row["sequence_label"], 3
    else:
        image_path, label_path, ndim = row[f"{phase.lower()}_image"], row[f"{phase.lower()}_label"], 2
    image = _with_ndim(read_camus_image(image_path), ndim, image_path)
    if phase == "sequence" and row["num_frames"] > 0 and len(image) != row["num_frames"]:
        raise ManifestError(
            f"{image_path} has {len(image)} frames; its info file says NbFrame {row['num_frames']}", ["frame count"]
        )
    if not label_path:
        return image, None
    label = _with_ndim(read_camus_image(label_path), ndim, label_path)
    if label.shape != image.shape:
        raise ManifestError(
            f"{label_path} has shape {label.shape}, its image {image_path} {image.shape}", ["shape mismatch"]
        )
    values = np.unique(label)
    bad = values[~np.isin(values, np.arange(len(CAMUS_LABELS)))]
    if bad.size:
        raise ManifestError(
            f"{label_path} has label values {bad.tolist()[:10]} outside 0-{len(CAMUS_LABELS) - 1}", ["label values"]
        )
    return image, label.astype(np.uint8)


def _with_ndim(array: np.ndarray, ndim: int, path) -> np.ndarray:
    """`array` with `ndim` dimensions: a frame stored as a one-frame volume (the first release's ED and ES) loses
    that axis."""
    if ndim == 2 and array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        what = "a 2-D frame" if ndim == 2 else "a 3-D sequence"
        raise ManifestError(f"{path} has shape {array.shape}, not {what}", ["dimensions"])
    return array


__all__ = [
    "CAMUS_LABELS",
    "CAMUS_SPLIT_FILES",
    "CAMUS_VIEWS",
    "load_camus",
    "load_camus_images",
    "read_camus_cfg",
    "read_camus_image",
]
