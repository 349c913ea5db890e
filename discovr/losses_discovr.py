"""DISCOVR objective pieces: Sinkhorn-Knopp codes, the DINO cross-entropy and the centre update.

Each reduction that must span the global batch goes through `all_reduce`, which is the identity unless
`torch.distributed` is initialised, so single-process runs take no distributed code path.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F


def distributed_world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (`"sum"` or `"max"`) over all processes; a no-op in a single process."""
    if distributed_world():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Balanced soft assignment of `scores` `(M, K)` to K prototypes (SwAV's Sinkhorn-Knopp).

    Rows of the result sum to 1; over the global batch every prototype receives about M / K of the mass.
    Equals the reference's `exp(scores / epsilon)` form: subtracting the global maximum first is a constant
    factor that the first normalisation cancels, and it keeps `exp` finite for any `epsilon`. Always computed
    in float32, also under autocast.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.float() / epsilon
        q = torch.exp(logits - all_reduce(logits.max().detach(), "max")).t()
        num_prototypes = q.shape[0]
        num_rows = all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
        q /= all_reduce(q.sum())
        for _ in range(iterations):
            q /= all_reduce(q.sum(dim=1, keepdim=True))
            q /= num_prototypes
            q /= q.sum(dim=0, keepdim=True)
            q /= num_rows
        q *= num_rows
    return q.t()


@torch.no_grad()
def dino_teacher_targets(
    teacher_logits: torch.Tensor,
    temperature: float,
    center: torch.Tensor | None = None,
    sinkhorn_iterations: int | None = None,
) -> torch.Tensor:
    """The DINO teacher's target distributions `(M, out)`, computed in float32.

    With `center`: DINO's centring, softmax((teacher - center) / temperature). With `sinkhorn_iterations`:
    DINOv2's Sinkhorn-Knopp centring, which balances the targets over the global batch so that they cannot all be
    the same distribution (see `docs/pretraining.md`). Give exactly one of the two.
    """
    if (center is None) == (sinkhorn_iterations is None):
        raise ValueError("Give exactly one of `center` (DINO centring) or `sinkhorn_iterations` (Sinkhorn-Knopp)")
    if center is not None:
        return F.softmax((teacher_logits.float() - center) / temperature, dim=-1)
    return sinkhorn(teacher_logits, temperature, sinkhorn_iterations)


def dino_cross_entropy(
    student_logits: torch.Tensor, teacher_targets: torch.Tensor, student_temperature: float
) -> torch.Tensor:
    """Mean over samples and views of H(teacher_targets, softmax(student / t_S)).

    `student_logits` is `(M, V, out)` (V masked views of each sample), `teacher_targets` is `(M, out)`
    (see `dino_teacher_targets`).
    """
    student = F.log_softmax(student_logits.float() / student_temperature, dim=-1)
    return -(teacher_targets.detach().unsqueeze(1) * student).sum(dim=-1).mean()


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DINOv2's KoLeo regulariser: -mean log(distance to the nearest neighbour) of L2-normalised features.

    `features` is `(G, N, D)`: G groups (views) of N samples, each group scored on its own. It grows without bound
    as two samples coincide, so minimising it spreads the features apart (against representation collapse).
    """
    normalized = F.normalize(features.float(), dim=-1, eps=eps)
    similarity = normalized @ normalized.transpose(1, 2)
    similarity.diagonal(dim1=1, dim2=2).fill_(-2.0)  # never one's own neighbour
    nearest = similarity.argmax(dim=-1)
    neighbours = normalized.gather(1, nearest.unsqueeze(-1).expand_as(normalized))
    distances = (normalized - neighbours).norm(dim=-1)
    return -(distances + eps).log().mean()


@torch.no_grad()
def update_center(center: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> None:
    """c <- m * c + (1 - m) * mean over the global batch (processes hold equal batch sizes, as under DDP)."""
    if distributed_world():
        batch_mean = all_reduce(batch_mean.clone()) / dist.get_world_size()
    center.mul_(momentum).add_(batch_mean.reshape(center.shape).to(center.dtype), alpha=1 - momentum)


__all__ = ["sinkhorn", "dino_cross_entropy", "dino_teacher_targets", "koleo_loss", "update_center", "all_reduce"]
