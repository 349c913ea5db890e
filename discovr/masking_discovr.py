"""DISCOVR `multi_local` masks: one generator for the model and for DataLoader workers.

Every mask is a per-frame random pattern with a fixed masked count, so all samples (and all views) keep the
same number of visible tokens and can be batched into one encoder call without padding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

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
class DiscovrMasks:
    """The masks of one DISCOVR pretraining batch (True = masked), checked when built.

    - `global_view`: `(batch_size, num_patches)`: the tube mask of the decoder/SCD view;
    - `local_views`: `(batch_size, num_local_views, num_patches)`: the video-DINO student views;
    - `image_views`: `(batch_size, num_frames, num_local_views, num_patches_per_frame)`: the image-DINO student
      views of every frame.

    The global and local views are encoded in one batch, so they must all hide the same number of tokens; the
    image views too. Building the object checks that and records the visible counts (`num_visible`,
    `num_image_visible`); reading them is a host synchronisation, free on the CPU, where `DiscovrMaskGenerator`
    and the data collator build masks. `to` and row selection keep the checked counts.
    """

    global_view: torch.Tensor
    local_views: torch.Tensor
    image_views: torch.Tensor
    num_visible: int = field(init=False)
    num_image_visible: int = field(init=False)

    def __post_init__(self) -> None:
        expected = {
            "global_view": (2, "(batch_size, num_patches)"),
            "local_views": (3, "(batch_size, num_local_views, num_patches)"),
            "image_views": (4, "(batch_size, num_frames, num_local_views, num_patches_per_frame)"),
        }
        for name, (dims, description) in expected.items():
            mask = getattr(self, name)
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"`{name}` must be a bool tensor of shape {description}, got {type(mask).__name__}")
            if mask.dim() != dims or mask.numel() == 0:
                raise ValueError(f"`{name}` must have shape {description}, got {tuple(mask.shape)}")
            if mask.dtype != torch.bool:
                raise ValueError(f"`{name}` must be a bool tensor (True = masked), got {mask.dtype}")
        global_view, local_views, image_views = self.global_view, self.local_views, self.image_views
        if not global_view.shape[0] == local_views.shape[0] == image_views.shape[0]:
            raise ValueError(
                "`global_view`, `local_views` and `image_views` must have the same batch size, got "
                f"{global_view.shape[0]}, {local_views.shape[0]} and {image_views.shape[0]}"
            )
        if local_views.shape[-1] != global_view.shape[-1]:
            raise ValueError(
                f"`local_views` must cover the {global_view.shape[-1]} tokens of `global_view`, "
                f"got {local_views.shape[-1]}"
            )
        video_counts = torch.cat((global_view.sum(-1).flatten(), local_views.sum(-1).flatten()))
        image_counts = image_views.sum(-1).flatten()
        video_min, video_max, image_min, image_max = torch.stack(
            (video_counts.min(), video_counts.max(), image_counts.min(), image_counts.max())
        ).tolist()
        if video_min != video_max:
            raise ValueError(
                "`global_view` and `local_views` must mask the same number of tokens in every sample and view "
                f"(they are encoded in one batch), got counts from {video_min} to {video_max}"
            )
        if image_min != image_max:
            raise ValueError(
                f"`image_views` must mask the same number of patches in every view, got {image_min} to {image_max}"
            )
        if video_max >= global_view.shape[-1] or image_max >= image_views.shape[-1]:
            raise ValueError("the masks must leave at least one token of every view visible")
        object.__setattr__(self, "num_visible", global_view.shape[-1] - video_max)
        object.__setattr__(self, "num_image_visible", image_views.shape[-1] - image_max)

    @property
    def batch_size(self) -> int:
        return self.global_view.shape[0]

    @property
    def video_views(self) -> torch.Tensor:
        """The global view then the local views: `(batch_size, 1 + num_local_views, num_patches)`."""
        return torch.cat((self.global_view.unsqueeze(1), self.local_views), dim=1)

    def _with(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> DiscovrMasks:
        """A copy whose tensors went through `transform`, which keeps every row's counts: no second check."""
        masks = copy.copy(self)
        for name in ("global_view", "local_views", "image_views"):
            object.__setattr__(masks, name, transform(getattr(self, name)))
        return masks

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DiscovrMasks:
        return self._with(lambda mask: mask.to(device, non_blocking=non_blocking))

    def __getitem__(self, rows: slice | torch.Tensor) -> DiscovrMasks:
        """The masks of some samples of the batch (`masks[2:4]`)."""
        if isinstance(rows, str):
            raise TypeError(
                f"DiscovrMasks selects samples, not views: use `masks.global_view`, `masks.local_views` or "
                f"`masks.image_views` instead of masks[{rows!r}]"
            )
        return self._with(lambda mask: mask[rows])

    def check_fits(self, config: DiscovrConfig, batch_size: int) -> None:
        """Raise `ValueError`, naming the field, unless the masks fit `batch_size` clips of the model `config`."""
        expected = {
            "global_view": ((batch_size, config.num_patches), "(batch_size, num_patches)"),
            "local_views": ((batch_size, None, config.num_patches), "(batch_size, num_local_views, num_patches)"),
            "image_views": (
                (batch_size, config.num_frames, None, config.num_patches_per_frame),
                "(batch_size, num_frames, num_local_views, num_patches_per_frame)",
            ),
        }
        for name, (shape, description) in expected.items():
            found = tuple(getattr(self, name).shape)
            if any(e is not None and e != s for e, s in zip(shape, found)):
                readable = ", ".join("V" if e is None else str(e) for e in shape)
                raise ValueError(f"`masks.{name}` must have shape {description} = ({readable}), got {found}")


@dataclass(frozen=True)
class DiscovrMaskGenerator:
    """Draws the masks of one DISCOVR pretraining batch (True = masked).

    `generator(batch_size)` returns `DiscovrMasks`: tube masks for the global and the local video views, and
    per-frame masks for the image views.

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

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> DiscovrMasks:
        views = self.num_local_views
        tubes = self.tube_masks(batch_size * (1 + views), generator).view(batch_size, 1 + views, -1)
        image = random_patterns(
            batch_size * self.num_frames * views, self.num_patches_per_frame, self.num_image_masked, generator
        )
        return DiscovrMasks(
            global_view=tubes[:, 0],
            local_views=tubes[:, 1:],
            image_views=image.view(batch_size, self.num_frames, views, self.num_patches_per_frame),
        )


__all__ = ["DiscovrMaskGenerator", "DiscovrMasks"]
