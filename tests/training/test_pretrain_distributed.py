"""`discovr-pretrain` on two processes: one machine (DDP over gloo) and two "machines" on this host.

Two machines are launched as Accelerate launches them on a cluster (`--num_machines 2`, `--machine_rank 0/1`,
`--main_process_ip 127.0.0.1`), one process each. They must train exactly as two processes on one machine do, and a
run that loses a machine mid-training must resume from its last complete checkpoint to the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from discovr.training.pretrain import latest_checkpoint
from pretrain_launch import (
    launch_two_machines,
    launch_two_processes,
    pretrain_args,
    read_log,
    read_replica_log,
    start_two_machines,
)

pytestmark = pytest.mark.distributed

SHORT_RUN = ("--max_steps", "3", "--save_steps", "2", "--deterministic")


def assert_same_weights(expected_dir, actual_dir, atol=0.0, rtol=0.0):
    """Every tensor of the exported pretraining model (students, teachers, prototypes, DINO centres)."""
    expected = load_file(expected_dir / "pretrained" / "model.safetensors")
    actual = load_file(actual_dir / "pretrained" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert {"video_center", "image_center", "prototypes"} <= expected.keys()
    assert any(key.startswith("video_teacher.") for key in expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=rtol, msg=key)


def steps_taken(replica_log) -> int:
    """Optimiser steps a launch took, the same on both ranks."""
    counts = {sum(e["event"] == "step" for e in read_replica_log(replica_log, rank)) for rank in (0, 1)}
    assert len(counts) == 1
    return counts.pop()


@pytest.fixture(scope="module")
def two_process_run(synthetic_echonet, tiny_config_file, tmp_path_factory):
    """A 3-step run of two processes on one machine: (output dir, replica log)."""
    root = tmp_path_factory.mktemp("one_machine")
    launch_two_processes(pretrain_args(synthetic_echonet, tiny_config_file, root / "run", *SHORT_RUN),
                         root / "replicas")
    return root / "run", root / "replicas"


def test_two_processes_stay_in_sync_and_resume(synthetic_echonet, tiny_config_file, tmp_path, two_process_run):
    output_dir, replica_log = two_process_run
    for rank in (0, 1):
        steps = [event for event in read_replica_log(replica_log, rank) if event["event"] == "step"]
        assert len(steps) == 3 and all(s["world_size"] == 2 and s["identical"] for s in steps)
    assert [row["step"] for row in read_log(output_dir)] == [1, 2, 3]

    # Resuming the 2-process run from step 2 reproduces step 3.
    launch_two_processes(
        pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "resumed", *SHORT_RUN,
                      "--resume_from_checkpoint", str(output_dir / "checkpoints" / "step_2")),
        tmp_path / "replicas_resumed",
    )
    assert_same_weights(output_dir, tmp_path / "resumed", atol=1e-6, rtol=1e-5)
    assert steps_taken(tmp_path / "replicas_resumed") == 1  # resumed, not retrained from scratch


def test_two_machines_train_as_two_processes_on_one(synthetic_echonet, tiny_config_file, tmp_path, two_process_run):
    output_dir, replica_log = two_process_run
    launch_two_machines(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "run", *SHORT_RUN),
                        tmp_path / "replicas", tmp_path / "nodes")
    assert [row["step"] for row in read_log(tmp_path / "run")] == [1, 2, 3]
    for rank in (0, 1):
        one_machine, two_machines = read_replica_log(replica_log, rank), read_replica_log(tmp_path / "replicas", rank)
        # The same events in the same order: 3 forwards, each followed by its step.
        assert [e["event"] for e in two_machines] == [e["event"] for e in one_machine] == ["forward", "step"] * 3
        for reference, event in zip(one_machine, two_machines):
            if event["event"] == "forward":
                assert event["scd_codes"] == reference["scd_codes"]  # the codes of this rank's share, per step
            else:
                assert event["world_size"] == 2 and event["identical"]
                torch.testing.assert_close(torch.tensor(event["checksums"]), torch.tensor(reference["checksums"]),
                                           atol=1e-6, rtol=1e-9)
    assert_same_weights(output_dir, tmp_path / "run", atol=1e-6, rtol=1e-5)
    # The checkpoint holds both processes' RNG states, written before its completion marker.
    checkpoint = tmp_path / "run" / "checkpoints" / "step_2"
    assert {"random_states_0.pkl", "random_states_1.pkl", "training_state.json"} <= {p.name for p in checkpoint.iterdir()}


def test_machines_that_do_not_share_the_output_dir_stop_together(synthetic_echonet, tiny_config_file, tmp_path):
    nodes = start_two_machines(
        pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "seen_by_machine_0", *SHORT_RUN),
        tmp_path / "replicas", tmp_path / "nodes",
        second_machine_args=pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "seen_by_machine_1",
                                          *SHORT_RUN),
    )
    for rank, node in enumerate(nodes):
        node.wait(timeout=300)
        assert node.returncode != 0
        assert "must be on a file system shared by every machine" in (tmp_path / "nodes" / f"node{rank}.log").read_text()
    assert not (tmp_path / "seen_by_machine_0" / "checkpoints").exists()


@pytest.mark.slow
def test_killed_machine_resumes_from_latest(synthetic_echonet, tiny_config_file, tmp_path):
    # 8 steps in all (4 epochs of 2); machine 1 dies after step 5, so `latest` is step 3, mid-epoch.
    common = ("--save_steps", "3", "--deterministic")
    launch_two_processes(pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "uninterrupted", *common),
                         tmp_path / "replicas_uninterrupted")

    run_args = pretrain_args(synthetic_echonet, tiny_config_file, tmp_path / "run", *common)
    nodes = start_two_machines(run_args, tmp_path / "replicas", tmp_path / "nodes",
                               second_machine_env={"DIE_AFTER_STEP": "5"})
    nodes[1].wait(timeout=300)
    assert nodes[1].returncode == -signal.SIGKILL, (tmp_path / "nodes" / "node1.log").read_text()[-3000:]
    # Machine 0 loses its peer in its next collective and fails; a launcher that lingers is killed.
    try:
        nodes[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(nodes[0].pid, signal.SIGKILL)
        nodes[0].wait(timeout=60)
    assert nodes[0].returncode != 0
    assert not (tmp_path / "run" / "pretrained").exists()
    latest = latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name == "step_3"
    assert json.loads((latest / "training_state.json").read_text())["batches_in_epoch"] == 1

    launch_two_machines([*run_args, "--resume_from_checkpoint", "latest"], tmp_path / "replicas_resumed",
                        tmp_path / "nodes_resumed")
    assert steps_taken(tmp_path / "replicas_resumed") == 5  # steps 4 to 8, from the checkpoint
    assert_same_weights(tmp_path / "uninterrupted", tmp_path / "run", atol=1e-6, rtol=1e-5)
    assert [row["step"] for row in read_log(tmp_path / "run")] == list(range(1, 9))
