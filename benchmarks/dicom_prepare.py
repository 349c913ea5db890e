"""DICOM to AVI: frames/s of `discovr-prepare` against an EchoNet-style conversion loop, in the same run.

Input: synthetic multi-frame ultrasound DICOMs (`discovr.data.synthetic_dicom`), JPEG Baseline YBR_FULL_422 at a
scanner-like 512x640, with burned-in text and an ECG trace, no regions (so the sector is found from the pixels).

Workloads, timed interleaved:
- `prepare_workers0` / `prepare_workers1` / `prepare_workers2`: `discovr.data.prepare.prepare` over the folder with 0
  (in process), 1 and 2 worker processes, into a fresh output folder each run: identification (header read and
  keyed hashes), decoding, sector detection from the pixels, masking, crop, resize to 112 and MJPEG writing, and the
  report and file list;
- `echonet_style`: the loop of EchoNet-Dynamic's conversion notebook style: pydicom `pixel_array` (which converts
  YBR to RGB itself), then per frame an OpenCV crop to a fixed box (the sector's, given to it: no detection, no
  masking), `cv2.resize` to 112x112 and `cv2.VideoWriter` (MJPG) writes, single process.

The speed-up is echonet_style time / prepare time, per run pair and as a ratio of medians.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import add_common_args, apply_common_args, machine_info, ratio_summary, time_interleaved
from discovr.data.prepare import prepare
from discovr.data.synthetic_dicom import render_echo_scene, write_echo_dicom


logger = logging.getLogger("benchmarks.dicom_prepare")

OUTPUT_SIZE = 112
WORKER_COUNTS = (0, 1, 2)


def write_inputs(folder: Path, num_files: int, num_frames: int, scale: int) -> tuple[int, tuple[int, int, int, int]]:
    """Synthetic JPEG DICOMs in `folder`; returns the total frame count and the sector box (x0, y0, x1, y1)."""
    total, box = 0, (0, 0, 0, 0)
    for index in range(num_files):
        scene = render_echo_scene(num_frames=num_frames, seed=index, height=112 * scale + 64, width=160 * scale, scale=scale)
        rgb = np.repeat(scene.frames[..., None], 3, axis=-1)
        write_echo_dicom(folder / f"echo{index:03d}.dcm", rgb, transfer_syntax="1.2.840.10008.1.2.4.50",
                         photometric="YBR_FULL_422", fps=50, jpeg_quality=90)
        total += num_frames
        box = scene.sector_box
    return total, box


def echonet_style(paths: Sequence[Path], output: Path, box: tuple[int, int, int, int]) -> None:
    """pydicom `pixel_array`, then per frame an OpenCV crop, resize and MJPG write."""
    import cv2
    import pydicom

    output.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = box
    for path in paths:
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array
        fps = 1000.0 / float(ds.FrameTime)
        writer = cv2.VideoWriter(str(output / f"{path.stem}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                 (OUTPUT_SIZE, OUTPUT_SIZE))
        for frame in frames:
            crop = frame[y0 : y1 + 1, x0 : x1 + 1]
            small = cv2.resize(crop, (OUTPUT_SIZE, OUTPUT_SIZE), interpolation=cv2.INTER_AREA)
            writer.write(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        writer.release()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, warmup=1, repeats=5, device=False)  # DICOM decoding and AVI encoding run on the CPU
    parser.add_argument("--num-files", type=int, default=8, help="synthetic DICOMs (default 8)")
    parser.add_argument("--num-frames", type=int, default=60, help="frames per DICOM (default 60)")
    parser.add_argument("--scale", type=int, default=4, help="frame size: (112*scale + 64) x 160*scale (default 4: 512x640)")
    args = parser.parse_args(argv)
    apply_common_args(args)
    if args.quick:
        args.num_files, args.num_frames, args.scale = 2, 12, 2

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        inputs = scratch / "inputs"
        inputs.mkdir()
        logger.info("Writing %d synthetic DICOMs of %d frames", args.num_files, args.num_frames)
        total_frames, box = write_inputs(inputs, args.num_files, args.num_frames, args.scale)
        paths = sorted(inputs.glob("*.dcm"))
        key_file = scratch / "key"
        runs = {"count": 0}

        def run_prepare(workers: int):
            def run():
                runs["count"] += 1
                output = scratch / f"prepared{runs['count']}"
                result = prepare(inputs, output, key_file=key_file, num_workers=workers, progress=False)
                assert (result.report["status"] == "converted").all(), result.report[["input", "reason", "detail"]]
                shutil.rmtree(output)

            return run

        def run_echonet():
            output = scratch / "echonet"
            echonet_style(paths, output, box)
            shutil.rmtree(output)

        workloads = {f"prepare_workers{n}": run_prepare(n) for n in WORKER_COUNTS}
        workloads["echonet_style"] = run_echonet
        stats, times = time_interleaved(workloads, warmup=args.warmup, repeats=args.repeats)

    results = {name: {**stat.to_dict(), "frames_per_s_median": total_frames / stat.median} for name, stat in stats.items()}
    output = {
        "benchmark": "dicom_prepare",
        "machine": machine_info(),
        "setup": {
            "files": args.num_files,
            "frames_per_file": args.num_frames,
            "frame_size": f"{112 * args.scale + 64}x{160 * args.scale}",
            "encoding": "JPEG Baseline, YBR_FULL_422, quality 90",
            "output": f"{OUTPUT_SIZE}x{OUTPUT_SIZE} MJPEG AVI",
            "timed_runs": args.repeats,
        },
        "results": results,
        "speedup_vs_echonet_style": {
            f"workers{n}": ratio_summary(times["echonet_style"], times[f"prepare_workers{n}"]) for n in WORKER_COUNTS
        },
        "scaling_vs_workers0": {
            f"workers{n}": ratio_summary(times["prepare_workers0"], times[f"prepare_workers{n}"]) for n in WORKER_COUNTS[1:]
        },
    }
    for name, result in results.items():
        logger.info("%-18s %7.1f frames/s (median %.2fs, min %.2fs, max %.2fs)", name, result["frames_per_s_median"],
                    result["median"], result["min"], result["max"])
    for name, summary in output["speedup_vs_echonet_style"].items():
        logger.info("speed-up %s vs EchoNet-style: %.2fx (paired %.2fx)", name, summary["ratio_of_medians"],
                    summary["paired_median"])
    return output


if __name__ == "__main__":
    main()
