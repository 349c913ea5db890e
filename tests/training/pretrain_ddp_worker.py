"""Run `discovr-pretrain` under `accelerate launch`, recording what the distributed tests compare.

After every optimiser step (wrapping `update_teachers`, which the script calls once per step, after it) each rank
checks that all ranks hold the same weights, and records a float64 checksum of every parameter and buffer (students,
teachers, prototypes, DINO centres). Each training forward records its SCD codes. Wrapping from the outside keeps
test hooks out of the training script. Rank r appends one JSON line per event to $REPLICA_LOG.rank<r>.jsonl.

With $DIE_AFTER_STEP=N, the process kills its whole session (its launcher included, as when a machine is lost)
right after optimiser step N.
"""

import json
import os
import signal
import sys

import torch
import torch.distributed as dist

from discovr.modeling_discovr import DiscovrForPreTraining
from discovr.training.pretrain import main

original_update_teachers = DiscovrForPreTraining.update_teachers
original_forward = DiscovrForPreTraining.forward
steps_done = 0


def record(event: dict) -> None:
    with open(f"{os.environ['REPLICA_LOG']}.rank{dist.get_rank()}.jsonl", "a") as handle:
        handle.write(json.dumps(event) + "\n")


def checked_update_teachers(self, momentum):
    original_update_teachers(self, momentum)
    if momentum == 0.0:
        return  # the model's own copy of students into teachers at construction, not a training step
    with torch.no_grad():
        local = torch.stack([t.double().sum() for t in (*self.parameters(), *self.buffers())])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    identical = all(torch.equal(gathered[0], other) for other in gathered[1:])
    record({"event": "step", "world_size": dist.get_world_size(), "identical": identical,
            "checksums": local.tolist()})
    global steps_done
    steps_done += 1
    if steps_done == int(os.environ.get("DIE_AFTER_STEP", "0")):
        # The launcher started this worker in a process group of its own: kill the launcher's group, then itself.
        os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def recording_forward(self, *args, **kwargs):
    outputs = original_forward(self, *args, **kwargs)
    if self.training:
        record({"event": "forward", "scd_codes": outputs.scd_codes.tolist()})
    return outputs


DiscovrForPreTraining.update_teachers = checked_update_teachers
DiscovrForPreTraining.forward = recording_forward

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
