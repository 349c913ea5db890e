"""DISCOVR `multi_local` masks: one generator for the model and for DataLoader workers.

Every mask is a per-frame random pattern with a fixed masked count, so all samples (and all views) keep the
same number of visible tokens and can be batched into one encoder call without padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration_discovr import DiscovrConfig


def random_patterns(
    num_patterns: int, num_patches: int, num_masked: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`num_patterns` bool rows of length `num_patches`, each with exactly `num_masked` random True (masked)."""
    noise = torch.rand(num_patterns, num_patches, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < num_masked


@dataclass(frozen=True)
class DiscovrMaskGenerator:
    """Draws the masks of one DISCOVR pretraining batch (True = masked).

    `generator(batch_size)` returns a dict:

    - `"global"`: `(batch_size, num_patches)`: the tube mask of the decoder/SCD view;
    - `"local"`: `(batch_size, num_local_views, num_patches)`: the tube masks of the video-DINO student views;
    - `"image"`: `(batch_size, num_frames, num_local_views, num_patches_per_frame)`: the masks of the
      image-DINO student views of every frame.

    A tube mask draws one pattern over the `num_patches_per_frame` patches of a frame and repeats it over
    every temporal slot; tokens are ordered (time, height, width) as in `DiscovrModel`.
    """

    num_frames: int
    tubelet_size: int
    num_patches_per_frame: int
    num_local_views: int
    mask_ratio: float
    image_mask_ratio: float

    @classmethod
    def from_config(cls, config: DiscovrConfig) -> DiscovrMaskGenerator:
        return cls(
            num_frames=config.num_frames,
            tubelet_size=config.tubelet_size,
            num_patches_per_frame=config.num_patches_per_frame,
            num_local_views=config.num_local_views,
            mask_ratio=config.mask_ratio,
            image_mask_ratio=config.image_mask_ratio,
        )

    @property
    def num_temporal_slots(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def num_masked_per_frame(self) -> int:
        """Patches hidden per temporal slot of a video tube mask: int(n * mask_ratio), as in the reference."""
        return int(self.num_patches_per_frame * self.mask_ratio)

    @property
    def num_image_masked(self) -> int:
        """Patches hidden per image-student view: int(n * image_mask_ratio) (44 of 49 at the published size)."""
        return int(self.num_patches_per_frame * self.image_mask_ratio)

    @property
    def num_visible(self) -> int:
        """Tokens left visible by every video tube mask."""
        return self.num_temporal_slots * (self.num_patches_per_frame - self.num_masked_per_frame)

    @property
    def num_image_visible(self) -> int:
        """Patches left visible by every image-student mask."""
        return self.num_patches_per_frame - self.num_image_masked

    def tube_masks(self, num_masks: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`(num_masks, num_patches)` tube masks."""
        patterns = random_patterns(num_masks, self.num_patches_per_frame, self.num_masked_per_frame, generator)
        return patterns.repeat(1, self.num_temporal_slots)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        views = self.num_local_views
        tubes = self.tube_masks(batch_size * (1 + views), generator).view(batch_size, 1 + views, -1)
        image = random_patterns(
            batch_size * self.num_frames * views, self.num_patches_per_frame, self.num_image_masked, generator
        )
        return {
            "global": tubes[:, 0],
            "local": tubes[:, 1:],
            "image": image.view(batch_size, self.num_frames, views, self.num_patches_per_frame),
        }


__all__ = ["DiscovrMaskGenerator"]
