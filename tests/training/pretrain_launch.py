"""Running `discovr-pretrain` in tests: its arguments, its log, and launches under `accelerate launch`.

Distributed launches run `pretrain_ddp_worker.py`, which records, per rank and optimiser step, whether all ranks
hold the same weights, a checksum of those weights and the step's SCD codes (`read_replica_log`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("pretrain_ddp_worker.py")


def pretrain_args(data_root, config_file, output_dir, *extra) -> list[str]:
    return [
        "--data_root", str(data_root), "--config", str(config_file), "--output_dir", str(output_dir),
        "--epochs", "4", "--warmup_epochs", "1", "--warmup_teacher_temperature_epochs", "2",
        "--per_device_batch_size", "2", "--num_workers", "0", "--logging_steps", "1", "--frame_stride", "2",
        "--seed", "0", *extra,
    ]


def read_log(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "logs" / "pretrain_log.jsonl").read_text().splitlines()]


def read_replica_log(replica_log: Path, rank: int) -> list[dict]:
    path = Path(f"{replica_log}.rank{rank}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(replica_log: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "REPLICA_LOG": str(replica_log), "OMP_NUM_THREADS": "1"}


def launch_two_processes(args: list[str], replica_log: Path) -> None:
    """One machine, two processes (DDP over gloo); fails the test with the launch's stderr if it fails."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(WORKER), *args,
    ]
    result = subprocess.run(command, env=_environment(replica_log), cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def start_two_machines(args: list[str], replica_log: Path, log_dir: Path, second_machine_args: list[str] | None = None,
                       second_machine_env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Two "machines" of one process each on this host: Accelerate's multi-node launch, one command per node.

    Both run `args`, unless `second_machine_args` gives machine 1 its own; `second_machine_env` adds to machine 1's
    environment. Each node runs in its own session (so a test can kill one node's launcher and worker together) and writes its
    output to `log_dir/node<rank>.log`.
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    nodes = []
    for machine_rank in (0, 1):
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "2", "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
            str(WORKER), *(second_machine_args if machine_rank == 1 and second_machine_args else args),
        ]
        with (log_dir / f"node{machine_rank}.log").open("w") as log:
            env = {**_environment(replica_log), **((second_machine_env or {}) if machine_rank == 1 else {})}
            nodes.append(subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    return nodes


def launch_two_machines(args: list[str], replica_log: Path, log_dir: Path) -> None:
    """`start_two_machines`, waited for; fails the test with each failed node's output."""
    nodes = start_two_machines(args, replica_log, log_dir)
    for node in nodes:
        node.wait(timeout=600)
    for rank, node in enumerate(nodes):
        assert node.returncode == 0, (log_dir / f"node{rank}.log").read_text()[-4000:]
