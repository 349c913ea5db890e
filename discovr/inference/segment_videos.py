"""
`discovr-segment predict`: per-frame LV masks of videos, their area curve, ED/ES frames and beat-by-beat EF.

For every video: a CSV of its frames (`frame`, `time_s`, `lv_area_px`, `lv_volume_px3`, `phase`), the area curve
with the detected beats, and a strip of the first beat's ED and ES frames with their masks. For the folder: one
summary CSV with the EF from segmentation (the mean over beats, as EchoNet reports it), the beats, and the EF of an
LVEF regression model when one is given.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..cli import InputError, default_device, model_type_of
from ..modeling_discovr import DiscovrForSemanticSegmentation
from ..training.encoders import load_complete
from ..video_processing_discovr import DiscovrVideoProcessor
from .cardiac_cycle import LV_CAVITY_LABEL, BeatToBeatResult, beat_to_beat_ef
from .predict import PER_VIDEO_ERRORS, VideoEntry, collect_videos, load_predictor, prediction_table
from .segmentation import VideoSegmentation, segment_video


logger = logging.getLogger(__name__)

SUMMARY_FILE = "segmentation_summary.csv"
LV_CAVITY_NAME = "lv_cavity"


def load_segmentation_model(
    model_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[DiscovrForSemanticSegmentation, DiscovrVideoProcessor]:
    """A saved `DiscovrForSemanticSegmentation` and its processor, in eval mode on `device` (cuda when available)."""
    if model_type_of(model_dir) != "discovr":
        raise InputError(f"{model_dir} is not a DISCOVR model")
    if not (Path(model_dir) / "video_preprocessor_config.json").is_file():
        raise InputError(f"{model_dir} has no video processor (video_preprocessor_config.json)")
    model, _ = load_complete(DiscovrForSemanticSegmentation, model_dir, "a DISCOVR segmentation model")
    device = default_device(device)
    return model.to(device).eval(), DiscovrVideoProcessor.from_pretrained(model_dir)


def lv_label_of(model: DiscovrForSemanticSegmentation) -> int:
    """The LV cavity's label id: the model's `lv_cavity` label, else CAMUS's 1."""
    return int(model.config.label2id.get(LV_CAVITY_NAME, LV_CAVITY_LABEL))


def frame_table(segmentation: VideoSegmentation, cycle: BeatToBeatResult, fps: float) -> pd.DataFrame:
    """One row per frame: `frame`, `time_s`, `lv_area_px`, `lv_volume_px3` and `phase` ("ED", "ES" or "")."""
    frames = np.asarray(segmentation.frames)
    return pd.DataFrame({
        "frame": frames, "time_s": frames / fps, "lv_area_px": cycle.areas, "lv_volume_px3": cycle.volumes,
        "phase": cycle.phases,
    })


def _overlay_strip(processor: DiscovrVideoProcessor, path: Path, segmentation: VideoSegmentation,
                   cycle: BeatToBeatResult, out_path: Path) -> None:
    """The first beat's ED and ES frames with their masks (or the first and middle frames, with no beat), decoded as
    the segmentation decoded them (the processor's sector masking included), so frames and maps share a size."""
    from ..plotting import plot_overlay_strip

    if cycle.beats:
        beat = cycle.beats[0]
        picks = [(beat.ed_frame, f"ED, frame {beat.ed_frame}"), (beat.es_frame, f"ES, frame {beat.es_frame}")]
    else:
        middle = len(segmentation.frames) // 2
        picks = [(0, "frame 0 (no beat found)"), (middle, f"frame {middle}")]
    indices = [segmentation.frames[position] for position, _ in picks]
    frames, _ = processor.fetch_videos(os.fspath(path), lambda metadata, **kwargs: indices)
    images = [frame.permute(1, 2, 0).numpy() for frame in frames]
    plot_overlay_strip(images, [segmentation.label_maps[position] for position, _ in picks],
                       [caption for _, caption in picks], out_path)


def segment_entry(
    model: DiscovrForSemanticSegmentation,
    processor: DiscovrVideoProcessor,
    entry: VideoEntry,
    fps: float | None = None,
    batch_size: int = 8,
) -> tuple[VideoSegmentation, BeatToBeatResult, float]:
    """Segment every frame of one video and find its beats; `fps` is used where the file states no frame rate."""
    segmentation = segment_video(model, processor, entry.path, batch_size=batch_size)
    frame_rate = segmentation.fps or fps
    if not frame_rate or not math.isfinite(frame_rate):
        raise InputError(f"{entry.path} states no frame rate: pass --fps")
    cycle = beat_to_beat_ef(segmentation.label_maps, frame_rate, lv_label=lv_label_of(model))
    return segmentation, cycle, frame_rate


def predict_folder(config) -> int:
    """`discovr-segment predict` (options: `SegmentPredictConfig`); returns the number of videos that failed."""
    from ..plotting import plot_area_curve

    videos = collect_videos(config.inputs)
    model, processor = load_segmentation_model(config.model_name_or_path, config.device)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for entry in tqdm(videos, desc="segment", unit="video", disable=config.disable_tqdm):
        row: dict[str, Any] = {"FileName": entry.file_name, **entry.truth}
        stem = Path(entry.file_name).stem
        try:
            segmentation, cycle, fps = segment_entry(model, processor, entry, config.fps, config.batch_size)
        except PER_VIDEO_ERRORS as error:
            logger.warning("Skipping %s: %s", entry.path, error)
            rows.append({**row, "error": str(error)})
            continue
        frame_table(segmentation, cycle, fps).to_csv(output_dir / f"{stem}_frames.csv", index=False)
        if config.plots:
            plot_area_curve(cycle.areas, fps, output_dir / f"{stem}_area.png",
                            ed_frames=[beat.ed_frame for beat in cycle.beats],
                            es_frames=[beat.es_frame for beat in cycle.beats],
                            beat_efs=[beat.ef for beat in cycle.beats], title=f"{entry.file_name}: LV area")
            _overlay_strip(processor, entry.path, segmentation, cycle, output_dir / f"{stem}_overlay.png")
        rows.append({
            **row, "ef_segmentation": cycle.ef, "num_beats": len(cycle.beats),
            "beats": ";".join(f"{beat.ed_frame}-{beat.es_frame}:{beat.ef:.1f}" for beat in cycle.beats),
            "num_frames": segmentation.num_video_frames, "fps": fps, "error": "",
        })
    summary = pd.DataFrame(rows)
    if config.regression_model:
        predictor = load_predictor(config.regression_model, config.device)
        regression = prediction_table(predictor, videos, clips="all", batch_size=config.batch_size,
                                      progress=not config.disable_tqdm)
        summary["ef_regression"] = regression["prediction"].to_numpy()
    columns = [column for column in ("FileName", "Split", "EF", "class", "ef_segmentation", "ef_regression",
                                     "num_beats", "beats", "num_frames", "fps", "error") if column in summary]
    summary[columns].to_csv(output_dir / SUMMARY_FILE, index=False)
    failed = int((summary["error"] != "").sum())
    logger.info("Segmented %d videos into %s (%d failed)", len(summary) - failed, output_dir, failed)
    return failed


__all__ = ["SUMMARY_FILE", "frame_table", "load_segmentation_model", "lv_label_of", "predict_folder", "segment_entry"]
