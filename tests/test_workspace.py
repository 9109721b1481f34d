"""Workspace resolution precedence, run folders and what --resume picks."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from salign_cli import workspace as workspace_module
from salign_cli.errors import InputError
from salign_cli.workspace import Workspace


def test_explicit_beats_environment_beats_user_data_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(workspace_module, "default_workspace_root", lambda: tmp_path / "default")
    monkeypatch.delenv("SALIGN_HOME", raising=False)
    assert Workspace.resolve().root == tmp_path / "default"
    monkeypatch.setenv("SALIGN_HOME", str(tmp_path / "env"))
    assert Workspace.resolve().root == tmp_path / "env"
    assert Workspace.resolve(tmp_path / "explicit").root == tmp_path / "explicit"


def test_resolving_creates_nothing_until_ensure(tmp_path: Path):
    ws = Workspace.resolve(tmp_path / "ws")
    assert not ws.root.exists()
    ws.ensure()
    assert ws.cache_dir.is_dir() and ws.runs_dir.is_dir()
    assert ws.index_path == tmp_path / "ws" / "index.sqlite"


def test_run_folders_are_unique_within_one_second(tmp_path: Path):
    ws = Workspace(tmp_path)
    moment = datetime(2026, 11, 27, 1, 2, 3, tzinfo=timezone.utc)
    first = ws.new_run_dir("pretrain", now=moment)
    second = ws.new_run_dir("pretrain", now=moment)
    assert first.name == "pretrain-20261127-010203"
    assert second.name == "pretrain-20261127-010203-2"
    with pytest.raises(ValueError):
        ws.new_run_dir("nonsense")


def test_latest_run_prefers_finished_bundles_and_resume_falls_back_to_newest(tmp_path: Path):
    ws = Workspace(tmp_path)
    finished = ws.new_run_dir("finetune", now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    (finished / "bundle").mkdir()
    (finished / "bundle" / "salign.json").write_text("{}")
    unfinished = ws.new_run_dir("finetune", now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert ws.latest_run("finetune") == finished
    assert ws.latest_run("finetune", with_bundle=False) == unfinished
    assert ws.run_to_resume("finetune", True) == unfinished
    assert ws.run_to_resume("finetune", finished) == finished.resolve()
    with pytest.raises(InputError, match="no pretrain run to resume"):
        ws.run_to_resume("pretrain", True)
    with pytest.raises(InputError, match="no such run folder"):
        ws.run_to_resume("finetune", tmp_path / "missing")
