"""Cluster maps of a pretrained DISCOVR model: which prototype each token of a video goes to.

The model sees one clip of the video, taken as at evaluation (the processor's `start`, or centred), once, in eval
mode. Two assignments per token are drawn over the frames: the image teacher's nearest prototype
(`teacher_assignments`, what each prototype captured) and the video decoder's predicted prototype (argmax of
`scd_logits`, what the video branch learned to predict from a masked clip). The masks of that forward pass are drawn
with a seeded generator, so the maps are reproducible.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cli import DiscovrArgumentParser, InputError, argument, default_device, model_type_of, run_console_script
from ..modeling_discovr import DiscovrForPreTraining
from ..plotting import plot_cluster_maps
from ..training.encoders import load_complete
from ..video_processing_discovr import DiscovrVideoProcessor, VideoDecodeError


logger = logging.getLogger(__name__)


@dataclass
class ClusterAssignments:
    """
    Prototype assignments of one clip.

    Attributes:
        frames: the clip's decoded frames, uint8 `(num_frames, height, width, 3)` at the video's resolution.
        start: first frame of the clip in the video.
        teacher: `(num_frames // tubelet_size, h, w)` image-teacher prototype of each token.
        predicted: same shape, the video decoder's predicted prototype of each token.
    """

    frames: np.ndarray
    start: int
    teacher: np.ndarray
    predicted: np.ndarray


@torch.inference_mode()
def compute_cluster_assignments(
    model: DiscovrForPreTraining, processor: DiscovrVideoProcessor, video: str | os.PathLike, seed: int = 0
) -> ClusterAssignments:
    """
    Run `model` once on the evaluation clip of `video` and return both token assignments on the token grid.

    Args:
        model: a pretrained `DiscovrForPreTraining`; it runs in eval mode on its own device (its mode is restored).
        processor: the processor saved with it (clip length, stride, size, normalisation).
        video: a video file.
        seed: seed of the masks the forward pass draws.
    """
    config = model.config
    decoded: list[torch.Tensor] = []

    def keep_decoded(frames: torch.Tensor) -> torch.Tensor:
        decoded.append(frames)  # the raw frames, drawn under the maps
        return frames

    clips = processor.decode_clips(video, "center", frame_transform=keep_decoded)
    pixel_values = clips.clips()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        outputs = model(pixel_values=pixel_values.to(device), generator=generator, return_dict=True)
    finally:
        model.train(was_training)
    grid = (config.num_frames // config.tubelet_size, config.image_size // config.patch_size, -1)
    return ClusterAssignments(
        frames=decoded[0][clips.clip_index[0]].permute(0, 2, 3, 1).numpy(),
        start=clips.starts[0],
        teacher=outputs.teacher_assignments[0].view(grid).cpu().numpy(),
        predicted=outputs.scd_logits[0].argmax(dim=-1).view(grid).cpu().numpy(),
    )


def write_cluster_maps(
    model: DiscovrForPreTraining,
    processor: DiscovrVideoProcessor,
    video: str | os.PathLike,
    output_dir: str | os.PathLike,
    seed: int = 0,
    gif: bool = True,
    formats: tuple[str, ...] = ("png",),
) -> list[Path]:
    """
    Write the cluster maps of `video` as `<video stem>_cluster_maps.<format>` (a frame grid with the teacher and
    predicted assignments) and `<video stem>_cluster_maps.gif` (one GIF frame per clip frame) in `output_dir`.

    Returns the written paths, the GIF last. See [`compute_cluster_assignments`] for the arguments.
    """
    assignments = compute_cluster_assignments(model, processor, video, seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"{Path(video).stem}_cluster_maps"
    paths = plot_cluster_maps(
        assignments.frames,
        assignments.teacher,
        stem.with_suffix(".png"),
        stem.with_suffix(".gif") if gif else None,
        num_prototypes=model.config.num_prototypes,
        predicted_assignments=assignments.predicted,
        formats=formats,
    )
    agreement = float(np.mean(assignments.teacher == assignments.predicted))
    logger.info(
        "Cluster maps of %s (clip from frame %d; decoder agrees with the teacher on %.0f%% of tokens): %s",
        video, assignments.start, 100 * agreement, ", ".join(map(str, paths)),
    )
    return paths


def load_pretraining_model(model_dir: str | os.PathLike) -> DiscovrForPreTraining:
    """A saved `DiscovrForPreTraining`; a folder without its decoder, prototypes and image teacher raises."""
    if model_type_of(model_dir) != "discovr":
        raise InputError(f"{model_dir} does not hold a DISCOVR model")
    # A random decoder or image teacher would draw maps that mean nothing.
    model, _ = load_complete(DiscovrForPreTraining, model_dir, "a pretraining model (discovr-pretrain's pretrained/)")
    return model


@dataclass
class ClusterMapsArguments:
    """The `discovr-cluster-maps` options."""

    model_dir: str = argument(
        help="Pretrained DiscovrForPreTraining directory (discovr-pretrain's pretrained/).", positional=True
    )
    video: str = argument(help="Video file (.avi, .mp4).", positional=True)
    output_dir: str = argument(help="Folder to write the maps into.")
    seed: int = argument(0, help="Seed of the masks drawn for the forward pass.")
    formats: list[str] = argument(["png"], help="Formats of the grid.", choices=["png", "svg"])
    gif: bool = argument(True, help="Write the animated GIF.")
    device: str | None = argument(None, help="Torch device such as 'cuda:0' or 'cpu'; None picks cuda when available.")


def build_parser() -> DiscovrArgumentParser:
    return DiscovrArgumentParser(
        ClusterMapsArguments,
        prog="discovr-cluster-maps",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Writes <video stem>_cluster_maps.png (and .svg with --formats png svg), a grid of the clip's frames with "
            "the image teacher's and the video decoder's prototype of every token overlaid, and "
            "<video stem>_cluster_maps.gif, one frame per clip frame."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """`discovr-cluster-maps`."""
    parser = build_parser()
    args = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def run() -> int:
        device = default_device(args.device)
        model = load_pretraining_model(args.model_dir).to(device)
        processor = DiscovrVideoProcessor.from_pretrained(args.model_dir)
        try:
            paths = write_cluster_maps(
                model, processor, args.video, args.output_dir, seed=args.seed, gif=args.gif,
                formats=tuple(args.formats),
            )
        except VideoDecodeError as error:
            raise InputError(str(error)) from None
        print("\n".join(map(str, paths)))
        return 0

    return run_console_script(parser.prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
