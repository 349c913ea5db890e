"""Training health of DISCOVR pretraining: the signals that show collapse while a run trains.

A DINO branch has collapsed when its teacher distribution is uniform (entropy at ln(dino_out_dim), loss at
ln(dino_out_dim)) or one-hot (entropy near 0); SCD has collapsed when its codes use few prototypes; a
representation has collapsed when its CLS features stop varying across clips, which the batch std and the
rank of the embeddings (RankMe, Garrido et al. 2023) show. `docs/pretraining.md` says how to read them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

# A DINO loss this close to ln(dino_out_dim), relative, counts as "at the uniform-teacher plateau".
COLLAPSE_TOLERANCE = 0.01


def teacher_entropy_fraction(teacher_probs: torch.Tensor) -> float:
    """Mean entropy of the teacher target distributions `(M, out)`, as a fraction of ln(out).

    1 is a uniform teacher (no signal); near 0, each target is one-hot.
    """
    probs = teacher_probs.float()
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1).mean()
    return float(entropy) / math.log(teacher_probs.shape[-1])


def code_usage(codes: torch.Tensor, num_prototypes: int) -> tuple[int, float]:
    """Distinct prototypes the SCD codes use, and the perplexity exp(H) of their histogram (at most K)."""
    counts = torch.bincount(codes.flatten(), minlength=num_prototypes).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())


def feature_std(features: torch.Tensor) -> float:
    """Std across the batch of L2-normalised features, averaged over dimensions (0 when every row is the same).

    Normalising first makes it scale-free: for unit vectors spread evenly it is about 1 / sqrt(dim).
    """
    if features.shape[0] < 2:
        return float("nan")
    return float(F.normalize(features.float(), dim=-1).std(dim=0).mean())


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe: exp of the entropy of the normalised singular values of `(num_samples, dim)` embeddings.

    It estimates the effective rank, between 1 (collapsed to a line) and min(num_samples, dim).
    """
    singular_values = torch.linalg.svdvals(embeddings.float())
    p = singular_values / singular_values.sum() + eps
    return float((-(p * p.log()).sum()).exp())


@torch.no_grad()
def step_health(outputs, num_prototypes: int) -> dict[str, float]:
    """Health of one step from a `DiscovrForPreTrainingOutput`.

    Entropies are fractions of ln(dino_out_dim); the code counts are over this process's batch.
    """
    codes_used, perplexity = code_usage(outputs.scd_codes, num_prototypes)
    return {
        "video_teacher_entropy": teacher_entropy_fraction(outputs.video_teacher_probs),
        "image_teacher_entropy": teacher_entropy_fraction(outputs.image_teacher_probs),
        "scd_codes_used": codes_used,
        "scd_code_perplexity": perplexity,
        "video_student_cls_std": feature_std(outputs.video_student_cls),
        "video_teacher_cls_std": feature_std(outputs.video_teacher_cls),
    }


@torch.no_grad()
def encoder_rankme(encoder: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 16) -> float:
    """RankMe of an encoder's CLS embeddings of fixed clips `(N, T, C, H, W)`, in eval mode, restoring its mode."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    try:
        embeddings = torch.cat([
            encoder(pixel_values=pixel_values[i : i + batch_size].to(device)).last_hidden_state[:, 0].float().cpu()
            for i in range(0, pixel_values.shape[0], batch_size)
        ])
    finally:
        encoder.train(was_training)
    return rankme(embeddings)


@dataclass
class CollapseMonitor:
    """Warns, once per branch, when a DINO loss sits within `tolerance` of ln(dino_out_dim) past warm-up.

    `patience` logged steps in a row must be at the plateau: one noisy step is not a collapse. The warning names
    the branch, the step the plateau began and the remedies (`docs/pretraining.md`, "Training health").
    """

    dino_out_dim: int
    warmup_steps: int
    patience: int = 3
    tolerance: float = COLLAPSE_TOLERANCE
    _streaks: dict[str, list[int]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    @property
    def plateau(self) -> float:
        return math.log(self.dino_out_dim)

    def update(self, step: int, losses: dict[str, float]) -> list[str]:
        """Record one logging step's DINO losses (`{branch: loss}`); returns the branches warned about now."""
        newly_warned = []
        for branch, loss in losses.items():
            at_plateau = step >= self.warmup_steps and abs(loss - self.plateau) <= self.tolerance * self.plateau
            streak = self._streaks.setdefault(branch, [])
            if not at_plateau:
                streak.clear()
                continue
            streak.append(step)
            if len(streak) >= self.patience and branch not in self.warned:
                self.warned.add(branch)
                newly_warned.append(branch)
                logger.warning(
                    "The %s DINO loss has stayed at ln(dino_out_dim) = %.3f since step %d: its teacher is uniform and "
                    "gives no signal (collapse). Try a lower --teacher_temperature (and "
                    "--warmup_teacher_temperature), BatchNorm in the DINO heads (dino_head_batch_norm) or the KoLeo "
                    "regulariser (koleo_loss_weight) in the model config, or a lower --base_lr; docs/pretraining.md "
                    "(\"Training health\") explains each.",
                    branch, self.plateau, streak[0],
                )
        return newly_warned


__all__ = [
    "CollapseMonitor", "code_usage", "encoder_rankme", "feature_std", "rankme", "step_health",
    "teacher_entropy_fraction",
]
