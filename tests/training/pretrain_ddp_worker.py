"""Run `discovr-pretrain` under `accelerate launch`, checking after every step that all ranks hold the same weights.

The check wraps `update_teachers` (called once per optimiser step, after it) from the outside, so the training
script itself carries no test hooks. Each rank appends its per-step checksums to REPLICA_LOG.rank<N>.jsonl.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training.pretrain import main

original_update_teachers = DiscovrForPreTraining.update_teachers


def checked_update_teachers(self, momentum):
    original_update_teachers(self, momentum)
    if momentum == 0.0:
        return  # the model's own copy of students into teachers at construction, not a training step
    with torch.no_grad():
        local = torch.stack([p.double().sum() for p in self.parameters()])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    identical = all(torch.equal(gathered[0], other) for other in gathered[1:])
    with open(f"{os.environ['REPLICA_LOG']}.rank{dist.get_rank()}.jsonl", "a") as handle:
        handle.write(json.dumps({"world_size": dist.get_world_size(), "identical": identical}) + "\n")


DiscovrForPreTraining.update_teachers = checked_update_teachers

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
