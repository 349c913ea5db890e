"""Data loading speed: clips/s of 64-frame stride-3 clips from the synthetic EchoNet set.

Compares, in the same process and interleaved:
- `ours_workers0` / `ours_workers2`: `load_echonet_dynamic` + `VideoTransform` (torchcodec decodes only the clip's
  frames; the clips of a batch are normalised together) + `collate_videos` under a `DataLoader` with 0 and 2
  workers (persistent, so worker start-up is not timed);
- `opencv_decode_all`: EchoNet's approach, single process: OpenCV decodes the whole video, then the clip is sliced
  and normalised the same way;
- `decode_only_ours` / `decode_only_opencv`: the decoding step alone (the clip's frames with torchcodec against
  the whole video with OpenCV), without normalisation, batching or the DataLoader.

Every workload reads every training video once per timed run, with a random start. The speed-up is
opencv time / ours time, per run pair and as a ratio of medians.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import add_common_args, apply_common_args, machine_info, ratio_summary, time_interleaved
from discovr.data import VideoTransform, collate_videos, load_echonet_dynamic, make_synthetic_echonet
from discovr.video_processing_discovr import DiscovrVideoProcessor, random_clip_start, read_video, sample_clip_indices


logger = logging.getLogger("benchmarks.data_loading")


def opencv_decode_all(path: str) -> np.ndarray:
    """EchoNet's loader: every frame of the video, decoded with OpenCV, as RGB (T, H, W, 3)."""
    import cv2

    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def opencv_clip(path: str, num_frames: int, frame_stride: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """EchoNet-style loading: decode every frame with OpenCV, then slice one strided clip and normalise it."""
    video = opencv_decode_all(path)
    start = random_clip_start(len(video), num_frames, frame_stride)
    clip = torch.from_numpy(video[sample_clip_indices(len(video), num_frames, frame_stride, start)])
    clip = clip.permute(0, 3, 1, 2).float() / 255.0
    return (clip - mean) / std


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Nine passes: single passes of this memory-bound workload swing by 1.5x on a shared 2-core machine.
    add_common_args(parser, warmup=1, repeats=9, device=False)  # video decoding and augmentation run on the CPU
    parser.add_argument("--num-videos", type=int, default=40, help="synthetic videos to generate (default 40)")
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size (default 8)")
    parser.add_argument("--data-dir", default=None, help="reuse (or create) the synthetic set here instead of a temp dir")
    args = parser.parse_args(argv)
    apply_common_args(args)
    if args.quick:
        args.num_videos = 4

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_dir or scratch)
        if not (root / "FileList.csv").is_file():
            logger.info("Writing %d synthetic videos to %s", args.num_videos, root)
            make_synthetic_echonet(root, num_videos=args.num_videos, seed=0, split_fractions=(1.0, 0.0, 0.0))
        train = load_echonet_dynamic(root)["train"]
        processor = DiscovrVideoProcessor()
        data = train.with_transform(VideoTransform(processor, training=True))
        loaders = {
            workers: DataLoader(
                data,
                batch_size=args.batch_size,
                num_workers=workers,
                collate_fn=collate_videos,
                persistent_workers=workers > 0,
            )
            for workers in (0, 2)
        }
        mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        paths = list(train["video"])

        def run_ours(workers: int):
            def run():
                for batch in loaders[workers]:
                    assert batch["pixel_values"].shape[1:] == (processor.num_frames, 3, 112, 112)

            return run

        def run_opencv():
            for start in range(0, len(paths), args.batch_size):
                clips = [opencv_clip(p, processor.num_frames, processor.frame_stride, mean, std) for p in paths[start : start + args.batch_size]]
                torch.stack(clips)

        def decode_ours():
            for path in paths:
                read_video(path, lambda metadata: processor.sample_frames(metadata, do_random_start=True))

        def decode_opencv():
            for path in paths:
                opencv_decode_all(path)

        stats, times = time_interleaved(
            {
                "ours_workers0": run_ours(0),
                "ours_workers2": run_ours(2),
                "opencv_decode_all": run_opencv,
                "decode_only_ours": decode_ours,
                "decode_only_opencv": decode_opencv,
            },
            warmup=args.warmup,
            repeats=args.repeats,
        )
        frames = train["num_frames"]

    clips = len(paths)
    results = {
        name: {**stat.to_dict(), "clips_per_s_median": clips / stat.median} for name, stat in stats.items()
    }
    output = {
        "benchmark": "data_loading",
        "machine": machine_info(),
        "setup": {
            "videos": clips,
            "frames_per_video_mean": float(np.mean(frames)),
            "clip": f"{processor.num_frames} frames, stride {processor.frame_stride}, 112x112, random start",
            "batch_size": args.batch_size,
            "timed_runs": args.repeats,
        },
        "results": results,
        "speedup_vs_opencv": {
            "workers0": ratio_summary(times["opencv_decode_all"], times["ours_workers0"]),
            "workers2": ratio_summary(times["opencv_decode_all"], times["ours_workers2"]),
            "decode_only": ratio_summary(times["decode_only_opencv"], times["decode_only_ours"]),
        },
    }
    for name, result in results.items():
        logger.info(
            "%-18s %6.1f clips/s  (median %.2fs, min %.2fs, max %.2fs over %d clips)",
            name, result["clips_per_s_median"], result["median"], result["min"], result["max"], clips,
        )
    for name, summary in output["speedup_vs_opencv"].items():
        logger.info("speed-up %s vs OpenCV: %.2fx (paired median %.2fx)", name, summary["ratio_of_medians"], summary["paired_median"])
    return output


if __name__ == "__main__":
    main()
