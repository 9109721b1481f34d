"""`salign pretrain --gpus N` relaunches itself under torchrun with the options it parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from salign_cli.train import distributed


def test_gpus_relaunches_the_same_command_with_one_run_folder(cli, workspace, monkeypatch):
    launched: list[tuple[int, list[str]]] = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(
        distributed, "launch", lambda n, arguments: launched.append((n, arguments)) or 0
    )
    scans = workspace.parent / "scans"
    result = cli("pretrain", str(scans), "--gpus", "2", "--steps", "10", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    ((processes, arguments),) = launched
    (run_dir,) = (workspace / "runs").iterdir()  # made once, by the launcher
    assert processes == 2
    assert arguments[0] == "pretrain"
    assert {"--steps=10", "--device=cpu", "--quiet", f"--run-dir={run_dir}"} <= set(arguments)
    assert not any(a.startswith(("--gpus", "--resume")) for a in arguments)
    assert arguments[-1] == str(scans)  # the folders come last, as arguments


def test_under_torchrun_the_launcher_does_not_launch_again(cli, workspace, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(distributed, "launch", lambda *_: pytest.fail("launched twice"))
    result = cli("pretrain", str(Path(workspace.parent / "none")), "--gpus", "2")
    assert result.exit_code == 2  # went on to pre-train, and found no such folder
    assert "no such folder" in result.output
