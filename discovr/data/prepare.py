"""`discovr-prepare`: a folder of echo DICOMs (and AVI/MP4 exports) to a de-identified EchoNet-Dynamic folder.

OUTPUT_DIR gets what every loader, `discovr-pretrain` and `discovr-finetune` read, and what may be shared:
- `Videos/<pseudonym>.avi`: the ultrasound sector only (zero outside it, burned-in text and ECG gone), cropped to
  a square, resized to `--size` (112), MJPEG, at the native frame rate or `--fps`;
- `FileList.csv`: EchoNet-Dynamic's columns (EF, ESV and EDV empty without labels), rows in pseudonym order.

And what stays local, since it links the outputs to the inputs:
- `prepare_report.csv`: one row per input file (path relative to INPUT_DIR): converted, or skipped and why;
- `prepare_key` (or `--key_file`): the secret of the keyed hashes behind the pseudonyms and the split;
- `prepare_mapping.csv`: pseudonym to input path, only with `--write_mapping`;
- `prepare_unmatched_labels.csv`: `--labels` rows that matched no input;
- `prepare_journal.jsonl` and `prepare_settings.json`: what a re-run needs to resume.

Pseudonyms are `0X` + 16 hex digits of HMAC-SHA256(key, SOPInstanceUID) (of the file's SHA-256 for AVI/MP4
exports and DICOMs without one). No header value is copied to any output; the logs name no input.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..cli import DiscovrArgumentParser, InputError, argument, run_console_script
from ..video_processing_discovr import VIDEO_SUFFIXES, VideoDecodeError, is_dicom_file
from .avi import frame_rate_fraction, write_avi
from .errors import DicomReadError
from .manifests import ECHONET_COLUMNS, ECHONET_SPLITS


logger = logging.getLogger(__name__)

VIDEO_DIR = "Videos"
FILE_LIST = "FileList.csv"
REPORT_FILE = "prepare_report.csv"
MAPPING_FILE = "prepare_mapping.csv"
UNMATCHED_LABELS_FILE = "prepare_unmatched_labels.csv"
JOURNAL_FILE = "prepare_journal.jsonl"
SETTINGS_FILE = "prepare_settings.json"
KEY_FILE = "prepare_key"
# Bumped when a change to the conversion would make earlier outputs differ from new ones.
FORMAT_VERSION = 1
# A sector of which more than this share is coloured in some frame is colour Doppler.
COLOR_DOPPLER_FRACTION = 0.01
LABEL_VALUE_COLUMNS = ("EF", "ESV", "EDV")
LABEL_KEY_COLUMNS = ("Path", "SOPInstanceUID")
REPORT_COLUMNS = [
    "input", "kind", "status", "reason", "detail", "split", "split_source", "label_match", "sector_method",
    "sector_note", "source_frames", "source_height", "source_width", "source_fps", "fps_source", "output_frames",
    "output_fps", "pixel_spacing_mm",
]
# Report statuses: converted (now or by an earlier run), skipped (a known reason), failed (an unexpected error).
CONVERTED, SKIPPED, FAILED = "converted", "skipped", "failed"


class PrepareError(InputError):
    """A problem with the command's inputs (folders, labels, key, options): one line, shown without a traceback."""


@dataclass(frozen=True)
class PrepareOptions:
    """How inputs become videos. Saved in OUTPUT_DIR, so that a re-run resumes only with the same options."""

    size: int = 112
    fps: float | None = None
    default_fps: float | None = None

    def check(self) -> None:
        if self.size < 16 or self.size > 2048 or self.size % 2:
            raise PrepareError(f"--size must be an even number of pixels from 16 to 2048, got {self.size}")
        for name in ("fps", "default_fps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise PrepareError(f"--{name} must be a positive number of frames per second, got {value}")

    def as_settings(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}


# ------------------------------------------------------------------------------------------------- pseudonyms


def keyed_hash(key: bytes, purpose: str, value: str) -> str:
    """Hex HMAC-SHA256 of `value` under `key`, separated by `purpose` so one value hashes differently per use."""
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def pseudonym(key: bytes, purpose: str, value: str) -> str:
    """An EchoNet-style file name (`0X` + 16 hex digits) for an identifier."""
    return "0X" + keyed_hash(key, purpose, value)[:16].upper()


def load_or_create_key(path: str | os.PathLike) -> tuple[bytes, bool]:
    """The key stored at `path` (hex text), or a new random 256-bit one written there (owner-only). Returns
    (key, created)."""
    path = Path(path)
    if path.exists():
        try:
            key = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as error:
            raise PrepareError(f"key file {path} is not a hex key written by discovr-prepare ({error})") from None
        if len(key) < 16:
            raise PrepareError(f"key file {path} holds {len(key)} bytes; a key needs at least 16")
        return key, False
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key.hex() + "\n")
    return key, True


def split_for(key: bytes, seed: int, group: str, fractions: Sequence[float]) -> str:
    """TRAIN, VAL or TEST for a group (a hashed patient), from a keyed hash: the same group always gets one split."""
    draw = int(keyed_hash(key, f"split-{seed}", group)[:13], 16) / 16**13
    bounds = np.cumsum(fractions)
    return list(ECHONET_SPLITS)[int(np.searchsorted(bounds, draw, side="right").clip(max=2))]


# ---------------------------------------------------------------------------------------------- identification


@dataclass
class Identity:
    """What the first pass learns of an input: its kind, pseudonym and split group (hashes only, never values)."""

    relative: str
    kind: str  # dicom, video or other
    name: str | None = None
    name_source: str = ""  # SOPInstanceUID or content
    group: str | None = None
    group_source: str = "file"  # patient, study or file
    reason: str = ""
    detail: str = ""


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identify(path: str, relative: str, key: bytes) -> Identity:
    """Kind, pseudonym and split group of one input, from its DICOM header (no pixel data) or its bytes."""
    from .dicom import read_dicom_identifiers

    suffix = PurePosixPath(relative).suffix.lower()
    try:
        if suffix in VIDEO_SUFFIXES:
            identity = Identity(relative, "video", pseudonym(key, "content", _file_digest(path)), "content")
        elif is_dicom_file(path):
            ids = read_dicom_identifiers(path)
            identity = Identity(relative, "dicom")
            if ids.sop_instance_uid:
                identity.name, identity.name_source = pseudonym(key, "SOPInstanceUID", ids.sop_instance_uid), "SOPInstanceUID"
            else:
                identity.name, identity.name_source = pseudonym(key, "content", _file_digest(path)), "content"
            if ids.patient_id:
                identity.group, identity.group_source = keyed_hash(key, "PatientID", ids.patient_id), "patient"
            elif ids.study_instance_uid:
                identity.group, identity.group_source = keyed_hash(key, "StudyInstanceUID", ids.study_instance_uid), "study"
        else:
            return Identity(relative, "other", reason="not_dicom_or_video",
                            detail=f"'{relative}' is neither DICOM nor {'/'.join(VIDEO_SUFFIXES)}")
    except DicomReadError as error:
        return Identity(relative, "dicom", reason=error.reason, detail=str(error).replace(path, relative))
    except OSError as error:
        return Identity(relative, "other", reason="unreadable", detail=f"'{relative}' cannot be read ({error.strerror})")
    if identity.group is None:
        identity.group = keyed_hash(key, "file", identity.name)
    return identity


# -------------------------------------------------------------------------------------------------- conversion


_PROCESSORS: dict[int, Any] = {}


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, S, S, 3) to (T, size, size, 3) with the video processor's own resize, as the model's input is."""
    import torch
    from transformers.image_utils import SizeDict

    from ..video_processing_discovr import DiscovrVideoProcessor

    processor = _PROCESSORS.setdefault(size, DiscovrVideoProcessor(size={"height": size, "width": size}))
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    resized = processor.resize(video, SizeDict(height=size, width=size), resample=processor.resample)
    return resized.permute(0, 2, 3, 1).contiguous().numpy()


def resample_indices(num_frames: int, fps: float, target_fps: float | None) -> np.ndarray:
    """Source frame of each output frame: all of them, or the nearest in time to each tick at `target_fps`."""
    if target_fps is None or math.isclose(target_fps, fps):
        return np.arange(num_frames)
    count = max(1, int(math.floor(num_frames * target_fps / fps + 1e-9)))
    return np.minimum(np.round(np.arange(count) * fps / target_fps).astype(int), num_frames - 1)


def convert(path: str, relative: str, kind: str, name: str, output_dir: str, options: PrepareOptions) -> dict[str, Any]:
    """
    Convert one input to `Videos/<name>.avi`; returns its report row (with `FileName` and the journal's fields).

    Known refusals become `skipped` rows with their reason; any other error a `failed` row, so that one bad file
    never stops the others.
    """
    from .dicom import read_dicom_video
    from .sector import color_fraction, crop_to_sector, find_sector
    from ..video_processing_discovr import read_video

    row: dict[str, Any] = {"input": relative, "kind": kind, "FileName": name}
    try:
        metadata = None
        if kind == "dicom":
            frames, metadata = read_dicom_video(path, default_fps=options.default_fps)
            fps, fps_source = metadata.fps, metadata.fps_source
            if metadata.has_color_flow:
                return {**row, "status": SKIPPED, "reason": "colour_doppler", "detail": "a colour-flow region is present"}
            if metadata.has_spectral_doppler:
                return {**row, "status": SKIPPED, "reason": "spectral_doppler", "detail": "a spectral Doppler region is present"}
        else:
            decoded, video_metadata = read_video(path, mask_sector=False)
            frames = decoded.permute(0, 2, 3, 1).numpy()
            fps, fps_source = video_metadata.fps, "container"
            if not fps or not math.isfinite(fps) or fps <= 0:
                fps, fps_source = options.default_fps, "default_fps"
            if fps is None:
                return {**row, "status": SKIPPED, "reason": "unknown_frame_rate",
                        "detail": "the container gives no frame rate; pass --default_fps"}
        row.update(source_frames=len(frames), source_height=frames.shape[1], source_width=frames.shape[2],
                   source_fps=round(float(fps), 4), fps_source=fps_source)
        if len(frames) < 2:
            return {**row, "status": SKIPPED, "reason": "single_frame", "detail": "a single frame is not a video"}
        sector = find_sector(frames, metadata)
        row.update(sector_method=sector.method, sector_note=sector.note)
        colored = color_fraction(frames, sector)
        if colored > COLOR_DOPPLER_FRACTION:
            return {**row, "status": SKIPPED, "reason": "colour_doppler",
                    "detail": f"{colored:.1%} of the sector is coloured (colour flow)"}
        indices = resample_indices(len(frames), float(fps), options.fps)
        video = _resize(crop_to_sector(frames[indices], sector), options.size)
        output_fps = frame_rate_fraction(options.fps if options.fps is not None else float(fps))
        final = Path(output_dir) / VIDEO_DIR / f"{name}.avi"
        partial = final.with_name(f".{name}.avi.partial")
        write_avi(partial, video, output_fps)
        # The rename is atomic: a video under its final name is complete, which is what a re-run relies on.
        os.replace(partial, final)
    except (VideoDecodeError, DicomReadError) as error:
        reason = getattr(error, "reason", "unreadable")
        return {**row, "status": SKIPPED, "reason": reason, "detail": str(error).replace(path, relative)}
    except Exception as error:  # noqa: BLE001 - one unexpected failure must not lose the other inputs
        return {**row, "status": FAILED, "reason": "error", "detail": f"{type(error).__name__}: {error}".replace(path, relative)}
    spacing = getattr(metadata, "pixel_spacing_mm", None) if sector.method == "regions" else None
    scale = sector.square[2] / options.size
    return {
        **row, "status": CONVERTED, "reason": "", "detail": "",
        "output_frames": len(video), "output_fps": round(float(output_fps), 4),
        "pixel_spacing_mm": "" if spacing is None else f"{spacing[0] * scale:.4f}x{spacing[1] * scale:.4f}",
    }


# ------------------------------------------------------------------------------------------------------ labels


@dataclass
class Labels:
    """A `--labels` table, checked: key columns, numeric EF/ESV/EDV, Split values, the class columns to copy."""

    table: pd.DataFrame
    class_columns: list[str]
    source: Path
    by_path: dict[str, int] = field(default_factory=dict)
    by_uid: dict[str, int] = field(default_factory=dict)


def _problem_rows(mask: pd.Series) -> str:
    rows = [str(index + 2) for index in np.nonzero(mask.to_numpy())[0][:5]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(rows) + (f" and {more} more" if more > 0 else "")


def read_labels(path: str | os.PathLike, class_columns: Sequence[str] = ()) -> Labels:
    """
    Read and check a labels CSV: `Path` (relative to INPUT_DIR) and/or `SOPInstanceUID` to match the inputs, then
    any of EF, ESV, EDV, Split, PatientID (grouping for the split only, never copied) and the `class_columns`.
    Problems raise one `PrepareError` naming the file, the column and the (1-based, header = 1) line numbers.
    """
    source = Path(path)
    if not source.is_file():
        raise PrepareError(f"labels file not found: {source}")
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False).apply(lambda column: column.str.strip())
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PrepareError(f"labels file {source} is not a readable CSV ({error})") from None
    if not any(column in table.columns for column in LABEL_KEY_COLUMNS):
        raise PrepareError(f"labels file {source} needs a Path or SOPInstanceUID column (found {list(table.columns)})")
    missing = [column for column in class_columns if column not in table.columns]
    if missing:
        raise PrepareError(f"--class_columns {missing} are not columns of {source} (found {list(table.columns)})")
    problems = []
    for column in LABEL_VALUE_COLUMNS:
        if column in table.columns:
            values = pd.to_numeric(table[column].replace("", np.nan), errors="coerce")
            bad = values.isna() & (table[column] != "")
            if bad.any():
                problems.append(f"{column} is not a number on line(s) {_problem_rows(bad)}")
            if column == "EF" and ((values < 0) | (values > 100)).any():
                problems.append(f"EF is outside [0, 100] on line(s) {_problem_rows((values < 0) | (values > 100))}")
    if "Split" in table.columns:
        split = table["Split"].str.upper()
        bad = (split != "") & ~split.isin(list(ECHONET_SPLITS))
        if bad.any():
            problems.append(f"Split is not TRAIN, VAL or TEST on line(s) {_problem_rows(bad)}")
        table["Split"] = split
    labels = Labels(table, list(class_columns), source)
    for index, row in table.iterrows():
        for column, index_map in (("Path", labels.by_path), ("SOPInstanceUID", labels.by_uid)):
            value = row.get(column, "")
            if column == "Path" and value:
                value = PurePosixPath(value.replace("\\", "/")).as_posix()
            if value:
                if value in index_map:
                    problems.append(f"{column} on line {index + 2} repeats line {index_map[value] + 2}")
                index_map[value] = index
    if problems:
        raise PrepareError(f"labels file {source}: " + "; ".join(problems))
    return labels


def match_labels(
    labels: Labels, identities: Sequence[Identity], key: bytes
) -> tuple[dict[str, tuple[int, str]], list[int]]:
    """Label row and match kind ("path" or "SOPInstanceUID") per input, and the label rows no input matched.

    Inputs carry only the pseudonym of their SOPInstanceUID, so the labels' UIDs are matched through theirs."""
    by_name = {pseudonym(key, "SOPInstanceUID", uid): row for uid, row in labels.by_uid.items()}
    matches: dict[str, tuple[int, str]] = {}
    for identity in identities:
        if identity.relative in labels.by_path:
            matches[identity.relative] = (labels.by_path[identity.relative], "path")
        elif identity.name_source == "SOPInstanceUID" and identity.name in by_name:
            matches[identity.relative] = (by_name[identity.name], "SOPInstanceUID")
    used = {row for row, _ in matches.values()}
    return matches, [row for row in range(len(labels.table)) if row not in used]


# ---------------------------------------------------------------------------------------------------- the run


@dataclass
class PrepareResult:
    """What a run did: the report and file list it wrote, and its counts."""

    report: pd.DataFrame
    file_list: pd.DataFrame
    key_created: bool
    unmatched_labels: int = 0
    split_conflicts: int = 0

    @property
    def failed(self) -> int:
        return int((self.report["status"] == FAILED).sum())


def walk_inputs(input_dir: Path) -> list[tuple[str, str]]:
    """(absolute path, POSIX path relative to `input_dir`) of every file below it, in sorted order."""
    found = []
    for folder, directories, files in os.walk(input_dir):
        directories.sort()
        for file in sorted(files):
            path = Path(folder) / file
            if path.is_file():
                found.append((str(path), path.relative_to(input_dir).as_posix()))
    return found


def _run_tasks(function, arguments: list[tuple], num_workers: int, description: str, progress: bool) -> Iterable:
    """`function(*args)` for every argument tuple, in order, in `num_workers` processes (0: this one)."""
    bar = tqdm(total=len(arguments), desc=description, unit="file", disable=not progress or not arguments)
    if num_workers == 0:
        for args in arguments:
            yield function(*args)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=num_workers, initializer=_init_worker) as pool:
            for result in pool.map(function, *zip(*arguments)) if arguments else []:
                yield result
                bar.update()
    bar.close()


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log lines for the duration, since they can quote header values."""
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
            yield
    finally:
        pydicom_logger.setLevel(level)


def _init_worker() -> None:
    """A worker process: pydicom quiet for its whole life, and one torch thread (the workers share the cores)."""
    import torch

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    torch.set_num_threads(1)


def _check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise PrepareError(f"INPUT_DIR {input_dir} is not a folder")
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise PrepareError(f"OUTPUT_DIR {output_dir} must not be inside INPUT_DIR {input_dir} (it would be read as input)")


def _check_settings(output_dir: Path, options: PrepareOptions, overwrite: bool) -> None:
    settings_path = output_dir / SETTINGS_FILE
    if settings_path.is_file() and not overwrite:
        try:
            previous = json.loads(settings_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != options.as_settings():
            raise PrepareError(
                f"OUTPUT_DIR {output_dir} was prepared with other settings ({previous}); use another OUTPUT_DIR, "
                "the same options, or --overwrite to convert everything again"
            )
    settings_path.write_text(json.dumps(options.as_settings(), indent=2) + "\n")


def _read_journal(output_dir: Path) -> dict[str, dict]:
    """Rows of earlier conversions whose video is still there, by pseudonym."""
    path = output_dir / JOURNAL_FILE
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if (output_dir / VIDEO_DIR / f"{row.get('FileName')}.avi").is_file():
                done[row["FileName"]] = row
    return done


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    table.to_csv(partial, index=False)
    os.replace(partial, path)


def _file_list_rows(
    rows: dict[str, dict[str, Any]], identities: Sequence[Identity], label_table: Labels | None,
    matches: dict[str, tuple[int, str]], key: bytes, seed: int, split_fractions: Sequence[float],
    options: PrepareOptions, class_columns: Sequence[str],
) -> tuple[list[dict[str, Any]], int]:
    """`FileList.csv` rows of the converted inputs, with labels and splits (also set in their report rows), and the
    number of patients whose videos ended up in more than one split."""
    by_input = {identity.relative: identity for identity in identities}
    file_rows, conflicts = [], Counter()
    for relative, row in rows.items():
        identity = by_input[relative]
        if label_table is not None:
            row["label_match"] = matches[relative][1] if relative in matches else "unmatched"
        if row["status"] != CONVERTED:
            continue
        label = label_table.table.iloc[matches[relative][0]] if relative in matches else None
        group, group_source = identity.group, identity.group_source
        if label is not None and group_source == "file" and label.get("PatientID", ""):
            group, group_source = keyed_hash(key, "PatientID", label["PatientID"]), "labels_patient"
        if label is not None and label.get("Split", ""):
            split, split_source = label["Split"], "labels"
        else:
            split, split_source = split_for(key, seed, group, split_fractions), group_source
        conflicts[group] |= 1 << list(ECHONET_SPLITS).index(split)
        row.update(split=split, split_source=split_source)
        file_rows.append({
            "FileName": row["FileName"],
            **{column: (label.get(column, "") if label is not None else "") for column in LABEL_VALUE_COLUMNS},
            "FrameHeight": options.size, "FrameWidth": options.size, "FPS": row["output_fps"],
            "NumberOfFrames": row["output_frames"], "Split": split,
            **{column: (label[column] if label is not None else "") for column in class_columns},
        })
    return file_rows, sum(bin(bits).count("1") > 1 for bits in conflicts.values())


def prepare(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    options: PrepareOptions = PrepareOptions(),
    labels: str | os.PathLike | None = None,
    class_columns: Sequence[str] = (),
    key_file: str | os.PathLike | None = None,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    write_mapping: bool = False,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """
    Turn every file below `input_dir` into `output_dir`'s EchoNet-Dynamic layout; see the module docstring.

    Args:
        input_dir: the archive, walked recursively: DICOM (with or without `.dcm`), AVI and MP4.
        output_dir: the folder to write; a second run into it resumes (converted videos are kept).
        options: output size, frame rate, and the frame rate assumed where a file gives none.
        labels: a labels CSV (see [`read_labels`]).
        class_columns: labels columns copied to `FileList.csv` besides EF, ESV, EDV and Split.
        key_file: the pseudonym key; created (random) if missing. Default `output_dir/prepare_key`.
        seed: seed of the by-patient split.
        split_fractions: TRAIN, VAL and TEST shares of the patients, for inputs without a labelled Split.
        write_mapping: also write `prepare_mapping.csv` (pseudonym to input path).
        num_workers: worker processes (0: convert in this process).
        overwrite: convert everything again, even with other settings than the earlier run's.
        progress: show progress bars.

    Raises:
        PrepareError: bad folders, labels, key or options. Nothing is written before these are checked.
    """
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    _check_folders(input_dir, output_dir)
    options.check()
    if num_workers < 0:
        raise PrepareError(f"--num_workers must be >= 0, got {num_workers}")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or not math.isclose(sum(split_fractions), 1.0):
        raise PrepareError(f"--split_fractions must be three non-negative shares summing to 1, got {list(split_fractions)}")
    key_path = Path(key_file) if key_file is not None else output_dir / KEY_FILE
    if key_path.resolve().parent == (output_dir / VIDEO_DIR).resolve():
        raise PrepareError(f"the key file must not be in {output_dir / VIDEO_DIR}, which may be shared")
    # An existing key is checked now; a missing one is created only once the other checks have passed.
    key, key_created = load_or_create_key(key_path) if key_path.exists() else (None, True)
    label_table = read_labels(labels, class_columns) if labels is not None else None

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / VIDEO_DIR).mkdir(exist_ok=True)
    _check_settings(output_dir, options, overwrite)
    if key is None:
        key, key_created = load_or_create_key(key_path)
    with quiet_pydicom():
        return _run(input_dir, output_dir, options, label_table, class_columns, key, key_created, seed,
                    split_fractions, write_mapping, num_workers, overwrite, progress)


def _run(
    input_dir: Path, output_dir: Path, options: PrepareOptions, label_table: Labels | None,
    class_columns: Sequence[str], key: bytes, key_created: bool, seed: int, split_fractions: Sequence[float],
    write_mapping: bool, num_workers: int, overwrite: bool, progress: bool,
) -> PrepareResult:
    """The run of [`prepare`], once its arguments are checked."""
    for stale in (output_dir / VIDEO_DIR).glob(".*.avi.partial"):
        stale.unlink()

    inputs = walk_inputs(input_dir)
    identities = list(_run_tasks(identify, [(path, relative, key) for path, relative in inputs], num_workers,
                                 "identify", progress))
    paths = dict((relative, path) for path, relative in inputs)
    rows: dict[str, dict[str, Any]] = {}
    first_with_name: dict[str, str] = {}
    to_convert = []
    done = {} if overwrite else _read_journal(output_dir)
    for identity in identities:
        base = {"input": identity.relative, "kind": identity.kind}
        if identity.reason:
            rows[identity.relative] = {**base, "status": SKIPPED, "reason": identity.reason, "detail": identity.detail}
        elif identity.name in first_with_name:
            what = "SOPInstanceUID" if identity.name_source == "SOPInstanceUID" else "content"
            rows[identity.relative] = {**base, "status": SKIPPED, "reason": f"duplicate_{what.lower()}",
                                       "detail": f"same {what} as '{first_with_name[identity.name]}'"}
        else:
            first_with_name[identity.name] = identity.relative
            if identity.name in done:
                rows[identity.relative] = {**done[identity.name], **base, "status": CONVERTED,
                                           "detail": "converted by an earlier run"}
            else:
                to_convert.append(identity)

    journal = open(output_dir / JOURNAL_FILE, "w" if overwrite else "a", encoding="utf-8")
    try:
        arguments = [(paths[i.relative], i.relative, i.kind, i.name, str(output_dir), options) for i in to_convert]
        for row in _run_tasks(convert, arguments, num_workers, "convert", progress):
            rows[row["input"]] = row
            if row["status"] == CONVERTED:
                journal.write(json.dumps({k: v for k, v in row.items() if k not in ("input", "kind", "detail")}) + "\n")
                journal.flush()
    finally:
        journal.close()

    matches, unmatched = match_labels(label_table, identities, key) if label_table is not None else ({}, [])
    file_rows, split_conflicts = _file_list_rows(rows, identities, label_table, matches, key, seed, split_fractions,
                                                 options, class_columns)
    columns = ECHONET_COLUMNS + (label_table.class_columns if label_table is not None else [])
    file_list = pd.DataFrame(file_rows, columns=columns).sort_values("FileName", kind="stable").reset_index(drop=True)
    report = pd.DataFrame([rows[relative] for _, relative in inputs], columns=REPORT_COLUMNS).astype(
        {column: "Int64" for column in ("source_frames", "source_height", "source_width", "output_frames")}
    )

    _write_csv(file_list, output_dir / FILE_LIST)
    _write_csv(report, output_dir / REPORT_FILE)
    if write_mapping:
        mapping = pd.DataFrame([(rows[r]["FileName"], r) for _, r in inputs if rows[r]["status"] == CONVERTED],
                               columns=["FileName", "input"])
        _write_csv(mapping.sort_values("FileName"), output_dir / MAPPING_FILE)
    if label_table is not None:
        keys = [column for column in LABEL_KEY_COLUMNS if column in label_table.table.columns]
        unmatched_table = label_table.table.iloc[unmatched][keys].assign(line=[row + 2 for row in unmatched])
        _write_csv(unmatched_table[["line", *keys]], output_dir / UNMATCHED_LABELS_FILE)
    if overwrite:
        kept = set(file_list["FileName"])
        for video in (output_dir / VIDEO_DIR).glob("*.avi"):
            if video.stem not in kept:
                video.unlink()
    else:
        orphans = sum(video.stem not in set(file_list["FileName"]) for video in (output_dir / VIDEO_DIR).glob("*.avi"))
        if orphans:
            logger.warning("%d videos in %s are not in %s (from earlier runs); --overwrite removes them",
                           orphans, output_dir / VIDEO_DIR, FILE_LIST)
    if split_conflicts:
        logger.warning("%d patients have videos in more than one split (from the labels' Split column)", split_conflicts)
    return PrepareResult(report, file_list, key_created, len(unmatched), split_conflicts)


# ------------------------------------------------------------------------------------------------------ the CLI


def summary(result: PrepareResult, output_dir: Path) -> str:
    """The lines printed at the end of a run: counts only, no input names."""
    report = result.report
    status = Counter(report["status"])
    earlier = int((report["detail"] == "converted by an earlier run").sum())
    reasons = Counter(report.loc[report["status"] != CONVERTED, "reason"])
    lines = [
        f"{len(report)} inputs: {status[CONVERTED]} converted ({earlier} by an earlier run), {status[SKIPPED]} skipped, "
        f"{status[FAILED]} failed" + (f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common())})" if reasons else ""),
    ]
    if len(result.file_list):
        splits = Counter(result.file_list["Split"])
        sources = Counter(report.loc[report["status"] == CONVERTED, "split_source"])
        lines.append(
            "splits: " + ", ".join(f"{name} {splits[name]}" for name in ECHONET_SPLITS)
            + " (split by " + ", ".join(f"{source} {n}" for source, n in sources.most_common()) + ")"
        )
    if "label_match" in report.columns and report["label_match"].notna().any():
        lines.append(f"labels: {int((report['label_match'].isin(['path', 'SOPInstanceUID'])).sum())} inputs matched, "
                     f"{int((report['label_match'] == 'unmatched').sum())} inputs and {result.unmatched_labels} label "
                     f"rows unmatched (see {UNMATCHED_LABELS_FILE})")
    lines.append(f"shareable: {output_dir / VIDEO_DIR}/, {output_dir / FILE_LIST}; local only: {REPORT_FILE} (every "
                 f"input and why it was skipped), the key{', ' + MAPPING_FILE if (output_dir / MAPPING_FILE).is_file() else ''}")
    if result.key_created:
        lines.append("a new pseudonym key was written; keep it to get the same names on later runs")
    return "\n".join(lines)


@dataclass
class PrepareArguments:
    """The `discovr-prepare` options."""

    input_dir: str = argument(help="Archive to convert, walked recursively.", positional=True, metavar="INPUT_DIR")
    output_dir: str = argument(
        help="EchoNet-Dynamic folder to write (not inside INPUT_DIR).", positional=True, metavar="OUTPUT_DIR"
    )
    size: int = argument(112, help="Output frame size in pixels (square, even).")
    fps: float | None = argument(
        None, help="Resample every video to this frame rate (nearest frames); unset keeps each native rate."
    )
    default_fps: float | None = argument(
        None, help="Frame rate of inputs that give none; without it they are skipped (unknown_frame_rate)."
    )
    labels: str | None = argument(
        None,
        help="CSV with Path (relative to INPUT_DIR) and/or SOPInstanceUID, then any of EF, ESV, EDV, Split "
        "(TRAIN/VAL/TEST), PatientID (split grouping only) and --class_columns.",
    )
    class_columns: list[str] = argument(
        [], help="Labels columns copied to FileList.csv besides EF, ESV, EDV and Split.", metavar="COLUMN"
    )
    seed: int = argument(0, help="Seed of the by-patient split.")
    split_fractions: list[float] = argument(
        [0.7, 0.15, 0.15], help="Shares of patients per split where labels give none.", nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
    )
    key_file: str | None = argument(
        None, help="Pseudonym key (hex); created if missing. Unset means OUTPUT_DIR/prepare_key. Keep it private."
    )
    write_mapping: bool = argument(
        False, help=f"Also write OUTPUT_DIR/{MAPPING_FILE} (pseudonym to input path; local only)."
    )
    num_workers: int = argument(0, help="Worker processes; 0 converts in this process.")
    overwrite: bool = argument(
        False, help="Convert everything again (also after a change of --size or --fps) and remove old videos."
    )
    progress: bool = argument(True, help="Show the progress bars.")


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        PrepareArguments,
        prog="discovr-prepare",
        description=(
            "Turn a folder of echo DICOMs (multi-frame ultrasound; with or without .dcm) and AVI/MP4 exports into a "
            "de-identified EchoNet-Dynamic folder: Videos/<pseudonym>.avi (the ultrasound sector only, square, MJPEG) "
            "and FileList.csv, which discovr-pretrain and discovr-finetune read, plus prepare_report.csv with one row "
            "per input file. Videos/ and FileList.csv may be shared; the report, key and mapping stay local."
        ),
        epilog=(
            "Skip reasons in the report: single_frame, not_ultrasound, unsupported_transfer_syntax, "
            "corrupt_pixel_data, unknown_frame_rate, unsupported_photometric, colour_doppler, spectral_doppler, "
            "no_sector, duplicate_sopinstanceuid, duplicate_content, unreadable, not_dicom_or_video, "
            "missing_dependency. A re-run into the same OUTPUT_DIR resumes. Exit status: 0 done, 1 when some input "
            "failed unexpectedly (see the report), 2 for a problem with the arguments."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`discovr-prepare`."""
    parser = build_parser()
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = PrepareOptions(size=args.size, fps=args.fps, default_fps=args.default_fps)

    def run() -> int:
        result = prepare(
            args.input_dir, args.output_dir, options=options, labels=args.labels, class_columns=args.class_columns,
            key_file=args.key_file, seed=args.seed, split_fractions=tuple(args.split_fractions),
            write_mapping=args.write_mapping, num_workers=args.num_workers, overwrite=args.overwrite,
            progress=args.progress,
        )
        print(summary(result, Path(args.output_dir).resolve()))
        return 1 if result.failed else 0

    try:
        return run_console_script(parser.prog, run)
    except KeyboardInterrupt:
        print("discovr-prepare: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
