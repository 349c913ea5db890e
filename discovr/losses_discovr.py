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


def dino_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temperature: float,
    teacher_temperature: float,
) -> torch.Tensor:
    """Mean over samples and views of H(softmax((teacher - center) / t_T), softmax(student / t_S)).

    `student_logits` is `(M, V, out)` (V masked views of each sample), `teacher_logits` is `(M, out)`.
    """
    teacher = F.softmax((teacher_logits.float() - center) / teacher_temperature, dim=-1).detach()
    student = F.log_softmax(student_logits.float() / student_temperature, dim=-1)
    return -(teacher.unsqueeze(1) * student).sum(dim=-1).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> None:
    """c <- m * c + (1 - m) * mean over the global batch (processes hold equal batch sizes, as under DDP)."""
    if distributed_world():
        batch_mean = all_reduce(batch_mean.clone()) / dist.get_world_size()
    center.mul_(momentum).add_(batch_mean.reshape(center.shape).to(center.dtype), alpha=1 - momentum)


__all__ = ["sinkhorn", "dino_cross_entropy", "update_center", "all_reduce"]
