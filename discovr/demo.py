"""`make demo`: build a small DISCOVR encoder and run one forward pass with a summary."""

from __future__ import annotations

import argparse
import logging
import time

import torch

from . import DiscovrConfig, DiscovrModel

logger = logging.getLogger("discovr.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discovr.demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights and clip.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    config = DiscovrConfig(
        num_frames=16, hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
        image_hidden_size=192, image_num_attention_heads=3,
    )
    model = DiscovrModel(config).eval()
    clip = torch.randn(1, config.num_frames, config.num_channels, config.image_size, config.image_size)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model(clip)
    elapsed = time.perf_counter() - start
    logger.info("DISCOVR encoder: %.1fM parameters, attention=%s", model.num_parameters() / 1e6,
                model.config._attn_implementation)
    logger.info("input  pixel_values      %s", tuple(clip.shape))
    logger.info("output last_hidden_state %s (CLS + %d tubelet tokens)", tuple(output.last_hidden_state.shape),
                config.num_patches)
    logger.info("forward pass: %.3f s", elapsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
