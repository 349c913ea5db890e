"""Predict LVEF (or classes) for echo videos with a fine-tuned DISCOVR model, one CSV row per video.

Inputs are video and DICOM files, directories (their .avi, .mp4 and .dcm files) and manifests: an EchoNet `FileList.csv` (videos in
its `Videos/` folder; its `EF` and `Split` are copied to the output) or a DISCOVR CSV (a path and a class per row,
relative to `--video_root`; the class is copied as `class`). Predictions go through the `video-classification`
pipeline, so they match `pipeline("video-classification", model=MODEL_DIR)`.

A video that is missing or cannot be decoded gets a row with the reason in `error` and a warning; the others are
still predicted, and the exit status is 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm
from transformers import pipeline

from ..cli import (
    CLIPS_HELP,
    SPATIAL_CROPS_HELP,
    DiscovrArgumentParser,
    InputError,
    argument,
    clips_argument,
    default_device,
    model_type_of,
    run_console_script,
)
from ..data.manifests import read_manifest_table, read_video_csv
from .pipeline import TASK, DiscovrVideoClassificationPipeline
from ..video_processing_discovr import DICOM_SUFFIXES, ClipSampling, VideoDecodeError
from ..video_processing_discovr import VIDEO_SUFFIXES as VIDEO_FILE_SUFFIXES


logger = logging.getLogger(__name__)

# DICOM files are read with pydicom and cropped to their ultrasound sector by the processor (DICOM extra needed).
VIDEO_SUFFIXES = VIDEO_FILE_SUFFIXES + DICOM_SUFFIXES
ECHONET_MANIFEST = "FileList.csv"
# Per-video failures that must not stop the batch: decoding (VideoDecodeError, or FFmpeg errors surfacing as
# RuntimeError / OSError) and videos the processor rejects (ValueError).
PER_VIDEO_ERRORS = (VideoDecodeError, RuntimeError, OSError, ValueError)


@dataclass
class VideoEntry:
    """One video to predict: its name in the output, its path, and any truth columns its manifest carries."""

    file_name: str
    path: Path
    truth: dict[str, Any] = field(default_factory=dict)


def _is_echonet_manifest(path: Path) -> bool:
    if path.name == ECHONET_MANIFEST:
        return True
    header = pd.read_csv(path, nrows=0).columns
    return "FileName" in header


def _echonet_entries(path: Path) -> list[VideoEntry]:
    """Rows of an EchoNet(-Pediatric) `FileList.csv`; `FileName` may carry `.avi` or not."""
    table = read_manifest_table(path, ["FileName"], "EchoNet file list", dtype={"FileName": str})
    videos = path.parent / "Videos"
    entries = []
    for row in table.to_dict("records"):
        name = str(row["FileName"]).strip()
        file = name if Path(name).suffix.lower() in VIDEO_SUFFIXES else f"{name}.avi"
        truth = {column: row[column] for column in ("Split", "EF") if column in row}
        entries.append(VideoEntry(name, videos / file, truth))
    return entries


def _discovr_csv_entries(path: Path, video_root: Path) -> list[VideoEntry]:
    """Rows of a DISCOVR CSV (a path and a class per row); `.avi` is added to paths without an extension."""
    paths, classes = read_video_csv(path)
    entries = []
    for relative, label in zip(paths.fillna(""), classes, strict=True):
        file = relative if Path(relative).suffix else f"{relative}.avi"
        entries.append(VideoEntry(relative, video_root / file, {"class": label}))
    return entries


def collect_videos(
    inputs: Sequence[str | os.PathLike], video_root: str | os.PathLike | None = None
) -> list[VideoEntry]:
    """
    Expand video files, directories and manifests into the list of videos to predict, in the order given.

    Args:
        inputs: video or DICOM files (kept even when missing, so that they get an error row), directories (their
            .avi, .mp4 and .dcm files, sorted) and `.csv` manifests (an EchoNet `FileList.csv`, or any CSV with a `FileName`
            column, else a DISCOVR CSV).
        video_root: folder the paths of DISCOVR CSVs are relative to; defaults to each manifest's folder.
    """
    entries: list[VideoEntry] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"No {'/'.join(VIDEO_SUFFIXES)} videos in directory {path} (pass a manifest instead)")
            entries.extend(VideoEntry(p.name, p) for p in found)
        elif path.suffix.lower() == ".csv":
            if not path.is_file():
                raise FileNotFoundError(f"Manifest not found: {path}")
            if _is_echonet_manifest(path):
                entries.extend(_echonet_entries(path))
            else:
                entries.extend(_discovr_csv_entries(path, Path(video_root) if video_root else path.parent))
        else:
            entries.append(VideoEntry(path.name, path))
    return entries


def load_predictor(model_dir: str | os.PathLike, device: str | None = None) -> DiscovrVideoClassificationPipeline:
    """The `video-classification` pipeline of a fine-tuned DISCOVR directory (model and processor side by side)."""
    device = default_device(device)
    model_type_of(model_dir)
    predictor = pipeline(TASK, model=os.fspath(model_dir), device=device)
    if not isinstance(predictor, DiscovrVideoClassificationPipeline):
        raise InputError(f"{model_dir} is not a DISCOVR video-classification model ({type(predictor.model).__name__})")
    return predictor


def prediction_table(
    predictor: DiscovrVideoClassificationPipeline,
    videos: Sequence[VideoEntry],
    clips: ClipSampling | str | int = "center",
    batch_size: int = 1,
    progress: bool = True,
    spatial_crops: int = 1,
) -> pd.DataFrame:
    """
    One row per video: `FileName`, the manifest's truth columns, the prediction, `num_clips` and `error`.

    A regression (LVEF) model gives a `prediction` column; a classifier gives its top `label` and that label's
    averaged probability as `score`. `num_clips` is the number of clips actually averaged, spatial crops included (a
    short video may hold fewer distinct clips than asked for). Failed videos have an empty prediction and the reason in `error`.

    Args:
        predictor: from [`load_predictor`].
        videos: from [`collect_videos`].
        clips: clips averaged per video (`ClipSampling`: "center", "all", "uniform:K", an integer K, ...).
        batch_size: clips per forward pass.
        progress: show a progress bar.
        spatial_crops: test-time spatial crops per clip (see the pipeline's `spatial_crops`).
    """
    clips = ClipSampling.parse(clips)
    regression = predictor.model.config.problem_type == "regression"
    rows = []
    for video in tqdm(videos, desc="predict", unit="video", disable=not progress):
        row: dict[str, Any] = {"FileName": video.file_name, **video.truth}
        try:
            result = predictor(
                os.fspath(video.path), clips=clips, spatial_crops=spatial_crops, batch_size=batch_size, top_k=1,
                return_clip_starts=True,
            )
        except PER_VIDEO_ERRORS as error:
            message = str(error) if isinstance(error, VideoDecodeError) else f"{type(error).__name__}: {error}"
            logger.warning("Skipping %s: %s", video.path, message)
            row.update({"num_clips": None, "error": message})
        else:
            best = result["predictions"][0]
            if regression:
                row["prediction"] = best["score"]
            else:
                row.update({"label": best["label"], "score": best["score"]})
            row.update({"num_clips": len(result["clip_starts"]), "error": ""})
        rows.append(row)
    prediction_columns = ["prediction"] if regression else ["label", "score"]
    truth_columns = [column for column in ("Split", "EF", "class") if any(column in row for row in rows)]
    table = pd.DataFrame(rows, columns=["FileName", *truth_columns, *prediction_columns, "num_clips", "error"])
    return table.astype({"num_clips": "Int64"})


@dataclass
class PredictArguments:
    """The `discovr-predict` options."""

    model_dir: str = argument(help="Fine-tuned DISCOVR directory (model and video processor side by side).",
                              positional=True)
    inputs: list[str] = argument(
        help="Video files (.avi, .mp4), DICOM files (.dcm, masked to the ultrasound sector), directories of them, an "
        "EchoNet FileList.csv or a DISCOVR CSV manifest.",
        positional=True, metavar="VIDEO_OR_DIR_OR_MANIFEST",
    )
    output: str = argument("predictions.csv", help="CSV file to write.")
    clips: ClipSampling = argument(ClipSampling("center"), help=CLIPS_HELP, parse=clips_argument)
    spatial_crops: int = argument(1, help=SPATIAL_CROPS_HELP)
    batch_size: int = argument(8, help="Clips per forward pass.")
    device: str | None = argument(None, help="Torch device such as 'cuda:0' or 'cpu'; None picks cuda when available.")
    video_root: str | None = argument(
        None, help="Folder that DISCOVR CSV paths are relative to; None means the CSV's own folder."
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.spatial_crops < 1:
            raise InputError(f"--spatial_crops must be >= 1, got {self.spatial_crops}")


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        PredictArguments,
        prog="discovr-predict",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Output columns: FileName, Split and EF (EchoNet manifests) or class (DISCOVR CSVs), then prediction "
            "(LVEF models, in %) or label and score (classifiers), num_clips (clips x spatial crops averaged) and "
            "error (empty when the video was predicted). Exit status 1 if any video failed."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`discovr-predict`."""
    parser = build_parser()
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        videos = collect_videos(args.inputs, args.video_root)
        predictor = load_predictor(args.model_dir, args.device)
        table = prediction_table(
            predictor, videos, clips=args.clips, batch_size=args.batch_size, spatial_crops=args.spatial_crops
        )
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(output, index=False)
        failed = int((table["error"] != "").sum())
        print(f"Wrote {len(table)} predictions to {output} ({failed} failed)")
        return 1 if failed else 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
