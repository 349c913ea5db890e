"""Segmentation probe: frozen random-init, DISCOVR and VideoMAE encoders under linear and light heads (`make bench-seg`).

The encoders are the ones `benchmarks.representation_quality` pretrained on its synthetic echo data (same data, same
budget per method), read from its output folder. For each encoder, frozen:

- the training clips (each sampling a random frame of a training video; every synthetic frame is labelled with LV
  cavity, myocardium and left atrium) are encoded once, and the heads of `DiscovrForSemanticSegmentation` train on
  those cached patch tokens with its own loss (`segment_patch_tokens`), so every encoder gets the same heads, data
  and steps;
- every frame of each test video is segmented as `discovr-segment` does it (covering clips, logits averaged per
  frame, upsampled to the frame size), and scored: Dice per structure on every frame and on the traced ED/ES
  frames, and the beat-to-beat EF of the predicted masks against the generator's EF.

The EF of the ground-truth masks by the same beat detection and method of discs is reported as the floor of that
last error. Heads train for several seeds; the encoders are one pretraining seed each (see the representation
benchmark for the seed spread of the encoders themselves).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine_info, mean_std, replace_section, setup_logging

logger = logging.getLogger("benchmarks.segmentation_probe")

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "segmentation_probe"
METHODS = ("random", "discovr", "videomae")
LABELS = {"random": "random init", "discovr": "DISCOVR", "videomae": "VideoMAE"}
HEADS = ("linear", "light")
STRUCTURES = ("lv_cavity", "lv_myocardium", "left_atrium")


def load_encoder(encoder_dir: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], int, object]:
    """A frozen encoder as `pixel_values -> patch tokens (B, T', h, w, D)`, its width, and its processor."""
    from transformers import AutoConfig, VideoMAEModel

    from discovr import DiscovrModel, DiscovrVideoProcessor

    config = AutoConfig.from_pretrained(encoder_dir)
    side = config.image_size // config.patch_size
    if config.model_type == "videomae":
        model, skip = VideoMAEModel.from_pretrained(encoder_dir), 0
    else:
        model, skip = DiscovrModel.from_pretrained(encoder_dir), 1  # DISCOVR's first token is its CLS token
    model.eval().requires_grad_(False)

    @torch.inference_mode()
    def tokens(pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixel_values).last_hidden_state[:, skip:].unflatten(1, (-1, side, side))

    return tokens, config.hidden_size, DiscovrVideoProcessor.from_pretrained(encoder_dir)


def head_model(encoder_dir: Path, hidden_size: int, head: str, seed: int):
    """A `DiscovrForSemanticSegmentation` whose head and loss train on `hidden_size`-wide tokens (its own backbone
    is never run: the encoders differ in kind, so their tokens are cached and fed to `segment_patch_tokens`)."""
    from transformers import AutoConfig

    from discovr import DiscovrConfig, DiscovrForSemanticSegmentation
    from discovr.data.segmentation import CAMUS_STYLE_LABELS

    source = AutoConfig.from_pretrained(encoder_dir)
    torch.manual_seed(seed)
    config = DiscovrConfig(
        hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=1, intermediate_size=hidden_size,
        image_size=source.image_size, patch_size=source.patch_size, tubelet_size=source.tubelet_size,
        num_frames=source.num_frames, num_labels=len(CAMUS_STYLE_LABELS), id2label=dict(enumerate(CAMUS_STYLE_LABELS)),
        segmentation_head=head,
    )
    return DiscovrForSemanticSegmentation(config)


def training_clips(args: argparse.Namespace, processor, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """`clips_per_video` clips of every training video, each sampling a random labelled frame, and their labels."""
    from discovr.data.segmentation import annotated_clip, synthetic_annotations

    generator = torch.Generator().manual_seed(args.data_seed)
    pixel_values, labels = [], []
    for row in rows:
        annotated = synthetic_annotations(row)
        frames = sorted(annotated.labels)
        for _ in range(args.clips_per_video):
            frame = frames[int(torch.randint(len(frames), (1,), generator=generator))]
            clip, clip_labels = annotated_clip(processor, annotated, frame)
            pixel_values.append(clip.half())
            labels.append(clip_labels.to(torch.uint8))
    return torch.stack(pixel_values), torch.stack(labels)


def encode(tokens_fn, pixel_values: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([tokens_fn(pixel_values[i : i + batch_size].float()) for i in range(0, len(pixel_values), batch_size)])


def train_head(model, tokens: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace, seed: int) -> list[float]:
    """AdamW with a cosine schedule on the head's parameters; returns the loss every tenth of the steps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.decode_head.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    model.train()
    losses = []
    for step in range(args.steps):
        batch = torch.randint(len(tokens), (args.batch_size,), generator=generator)
        loss = model.segment_patch_tokens(tokens[batch], labels[batch].long()).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            losses.append(loss.item())
    return losses


def evaluate(args: argparse.Namespace, encoders: dict, heads: dict, processor, rows) -> dict:
    """Segment every frame of every test video with every (method, head, seed); Dice and beat-to-beat EF."""
    from tqdm.auto import tqdm

    from discovr.data.segmentation import synthetic_annotations
    from discovr.inference.cardiac_cycle import beat_to_beat_ef
    from discovr.inference.segmentation import segmentation_from_logits
    from discovr.training.segment import summarize_scores, video_scores
    from discovr.video_processing_discovr import ClipSampling

    structures = {name: i for i, name in enumerate(("background", *STRUCTURES)) if i}
    scores: dict[str, list] = {key: [] for key in heads}
    efs: dict[str, list] = {key: [] for key in heads}
    truth_efs = []
    for row in tqdm(rows, desc="test videos", unit="video", disable=args.quick):
        annotated = synthetic_annotations(row)
        clips = processor.decode_clips(annotated.video, ClipSampling.covering())
        truth = np.stack([annotated.labels[frame] for frame in range(clips.num_video_frames)])
        truth_efs.append((row["ef"], beat_to_beat_ef(truth, clips.fps).ef))
        for method, (tokens_fn, _) in encoders.items():
            # Every head of a method reads the same tokens: the clips are encoded once per method.
            tokens = encode(tokens_fn, clips.clips(), args.eval_batch_size)
            for key, model in heads.items():
                if key[0] == method:
                    with torch.inference_mode():
                        clip_logits = model.segment_patch_tokens(tokens).logits.float()
                    segmentation = segmentation_from_logits(clip_logits, processor, clips)
                    scores[key].append(video_scores(row, annotated, segmentation, structures))
                    efs[key].append((row["ef"], beat_to_beat_ef(segmentation.label_maps, clips.fps).ef))
    results = {}
    for key in heads:
        summary = summarize_scores(scores[key], args.num_bootstrap, seed=0)
        pairs = np.asarray(efs[key], dtype=float)
        found = ~np.isnan(pairs[:, 1])
        results[key] = {
            "dice": {subset: {s: summary[subset]["metrics"][f"dice_{s}"] for s in STRUCTURES} for subset in summary},
            "ef_mae": float(np.abs(pairs[found, 0] - pairs[found, 1]).mean()) if found.any() else math.nan,
            "videos_without_beat": int((~found).sum()),
        }
    pairs = np.asarray(truth_efs, dtype=float)
    found = ~np.isnan(pairs[:, 1])
    truth = {"ef_mae": float(np.abs(pairs[found, 0] - pairs[found, 1]).mean()), "videos_without_beat": int((~found).sum())}
    return {"per_head": results, "ground_truth_masks": truth, "num_videos": len(rows)}


def summarise(results: dict) -> dict:
    """Mean ± std over head seeds of each (method, head)."""
    summary: dict[str, dict] = {}
    groups: dict[tuple[str, str], list] = {}
    for key, value in results["per_head"].items():
        groups.setdefault(key[:2], []).append(value)
    for (method, head), values in groups.items():
        entry = {}
        for subset in values[0]["dice"]:
            for structure in STRUCTURES:
                entry[f"dice_{subset}_{structure}"] = mean_std([v["dice"][subset][structure] for v in values])
            entry[f"dice_{subset}_mean"] = mean_std([statistics.fmean(v["dice"][subset].values()) for v in values])
        entry["ef_mae"] = mean_std([v["ef_mae"] for v in values])
        entry["videos_without_beat"] = mean_std([v["videos_without_beat"] for v in values])
        summary[f"{method}/{head}"] = entry
    return summary


def render(args: argparse.Namespace, result: dict, machine: dict) -> list[str]:
    summary = result["summary"]

    def cell(value: tuple[float, float], digits: int = 3) -> str:
        mean, std = value
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(args.head_seeds) > 1 else f"{mean:.{digits}f}"

    lines = [
        f"`make bench-seg` (`python -m benchmarks.segmentation_probe`), {machine['date']}, {machine.get('cpu_model')}, "
        f"{machine.get('logical_cpus')} logical CPUs, torch {machine.get('torch')}. Encoders: "
        f"`{args.representation_dir.name}` pretraining seed {args.encoder_seed} (frozen). Heads trained "
        f"{args.steps} steps of {args.batch_size} clips on {args.num_train_videos} training videos x "
        f"{args.clips_per_video} clips; seeds {', '.join(map(str, args.head_seeds))} (mean ± std over head seeds). "
        f"Test: every frame of {result['evaluation']['num_videos']} test videos. Took {result['seconds'] / 60:.1f} min.",
        "",
        "| encoder | head | Dice LV, all frames | Dice myocardium | Dice atrium | Dice LV, ED/ES | mean Dice (3) | "
        "beat-to-beat EF MAE | videos without a beat |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        for head in args.heads:
            entry = summary[f"{method}/{head}"]
            lines.append(
                f"| {LABELS[method]} | {head} | {cell(entry['dice_all_frames_lv_cavity'])} | "
                f"{cell(entry['dice_all_frames_lv_myocardium'])} | {cell(entry['dice_all_frames_left_atrium'])} | "
                f"{cell(entry['dice_ed_es_lv_cavity'])} | {cell(entry['dice_all_frames_mean'])} | "
                f"{cell(entry['ef_mae'], 2)} | {entry['videos_without_beat'][0]:.1f} |"
            )
    truth = result["evaluation"]["ground_truth_masks"]
    lines += [
        "",
        f"The ground-truth masks, through the same beat detection and method of discs, give an EF MAE of "
        f"{truth['ef_mae']:.2f} against the generator's EF ({truth['videos_without_beat']} videos without a beat): "
        "the floor of the last column.",
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.segmentation_probe", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--representation_dir", type=Path,
                        default=REPO_ROOT / "benchmark_output" / "representation_quality",
                        help="Output folder of benchmarks.representation_quality (its data/ and runs/).")
    parser.add_argument("--encoder_seed", type=int, default=0, help="Pretraining seed of the encoders to probe.")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--head_seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds of the head training.")
    parser.add_argument("--num_train_videos", type=int, default=120, help="Training videos the heads see.")
    parser.add_argument("--clips_per_video", type=int, default=4, help="Cached training clips per video.")
    parser.add_argument("--num_test_videos", type=int, default=60, help="Test videos segmented (every frame).")
    parser.add_argument("--steps", type=int, default=300, help="Head training steps.")
    parser.add_argument("--batch_size", type=int, default=8, help="Clips per head training step.")
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="Peak head learning rate (cosine).")
    parser.add_argument("--eval_batch_size", type=int, default=16, help="Clips per forward pass when segmenting.")
    parser.add_argument("--num_bootstrap", type=int, default=1000, help="Bootstrap resamples (intervals in the JSON).")
    parser.add_argument("--data_seed", type=int, default=0, help="Seed of the training clips' frames.")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "benchmark_output" / "segmentation_probe",
                        help="Where results.json goes.")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="Markdown file whose segmentation section is replaced; '-' writes none.")
    parser.add_argument("--quick", action="store_true",
                        help="Toy sizes on --representation_dir (e.g. a --quick representation run): a smoke test.")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    from discovr.data import load_echonet_dynamic

    args = build_parser().parse_args(argv)
    setup_logging()
    logging.getLogger("discovr").setLevel(logging.WARNING)
    # A video without a complete beat is counted in the table; one warning per video and head would drown the log.
    logging.getLogger("discovr.inference.cardiac_cycle").setLevel(logging.ERROR)
    if args.quick:
        args.num_train_videos, args.clips_per_video, args.num_test_videos, args.steps = 3, 1, 2, 3
        args.batch_size, args.head_seeds, args.num_bootstrap = 2, [0, 1], 20
    started = time.perf_counter()
    runs = args.representation_dir / "runs"
    encoder_dirs = {method: runs / method / f"seed{args.encoder_seed}" / "encoder" for method in args.methods}
    missing = [str(path) for path in encoder_dirs.values() if not (path / "config.json").is_file()]
    if missing:
        raise SystemExit(
            f"No pretrained encoders at {', '.join(missing)}: run `python -m benchmarks.representation_quality "
            f"--seeds {args.encoder_seed} --methods {' '.join(args.methods)} --finetune_steps 0 --docs -` first "
            "(or `make bench-ssl`)."
        )
    data = load_echonet_dynamic(args.representation_dir / "data")
    train_rows = data["train"].select(range(min(args.num_train_videos, len(data["train"]))))
    test_rows = data["test"].select(range(min(args.num_test_videos, len(data["test"]))))

    loaded = {method: load_encoder(path) for method, path in encoder_dirs.items()}
    encoders = {method: (tokens_fn, hidden_size) for method, (tokens_fn, hidden_size, _) in loaded.items()}
    processor = loaded[args.methods[0]][2]
    logger.info("Decoding %d training clips", len(train_rows) * args.clips_per_video)
    pixel_values, labels = training_clips(args, processor, train_rows)
    heads, training = {}, {}
    for method, (tokens_fn, hidden_size) in encoders.items():
        tokens = encode(tokens_fn, pixel_values, args.eval_batch_size)
        for head in args.heads:
            for seed in args.head_seeds:
                model = head_model(encoder_dirs[method], hidden_size, head, seed)
                training[f"{method}/{head}/{seed}"] = train_head(model, tokens, labels, args, seed)
                heads[(method, head, seed)] = model.eval()
        logger.info("%s: heads trained", LABELS[method])
    evaluation = evaluate(args, encoders, heads, processor, test_rows)
    result = {
        "arguments": {k: str(v) for k, v in vars(args).items()}, "training_losses": training,
        "evaluation": {**evaluation, "per_head": {"/".join(map(str, k)): v for k, v in evaluation["per_head"].items()}},
        "summary": summarise(evaluation), "machine": machine_info(), "seconds": time.perf_counter() - started,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    if not args.quick and str(args.docs) != "-":
        replace_section(args.docs, SECTION, render(args, result, result["machine"]))
    logger.info("Done in %.1f min; results in %s", result["seconds"] / 60, args.output_dir / "results.json")
    return result


if __name__ == "__main__":
    main()
