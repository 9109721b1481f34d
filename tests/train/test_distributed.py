"""DDP plumbing without torchrun: one process is rank 0 of 1, and the launcher's command line."""

from __future__ import annotations

import sys

import torch

from salign_cli.train.distributed import (
    DistributedContext,
    any_rank,
    distributed_from_env,
    on_main_first,
    shared_run_dir,
    torchrun_command,
)
from salign_cli.workspace import Workspace


def test_without_torchrun_this_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed_from_env()
    assert (context.rank, context.world_size, context.is_main, context.active) == (
        0,
        1,
        True,
        False,
    )


def test_torchrun_environment_gives_the_process_its_place(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_from_env() == DistributedContext(rank=3, world_size=4, local_rank=1)


def test_single_process_collectives_are_identities():
    single = DistributedContext()
    assert any_rank(True, single, torch.device("cpu")) is True
    assert any_rank(False, single, torch.device("cpu")) is False
    assert on_main_first(single, lambda: 42) == 42


def test_shared_run_dir_uses_the_given_folder_or_makes_one(tmp_path):
    given = tmp_path / "given"
    single, cpu = DistributedContext(), torch.device("cpu")
    workspace = Workspace(tmp_path / "ws").ensure()
    assert shared_run_dir(workspace, "pretrain", given, single, cpu) == given
    assert given.is_dir()
    made = shared_run_dir(workspace, "pretrain", None, single, cpu)
    assert made.parent == workspace.runs_dir and made.name.startswith("pretrain-")


def test_launcher_reruns_salign_under_torch_distributed_run():
    assert torchrun_command(2, ["pretrain", "--steps=10", "scans"]) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "salign_cli",
        "pretrain",
        "--steps=10",
        "scans",
    ]
