"""Fixtures for the reliability suite: one tiny bundle per session, unreadable files, subprocesses."""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from salign_cli.io.atomic import PARTIAL_MARKER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised fine-tuned MR bundle (width 8, depth 2; background + organ)."""
    from salign_cli.bundles.store import untrained_bundle

    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle", ("background", "organ"))


@pytest.fixture
def make_unreadable(monkeypatch: pytest.MonkeyPatch) -> Callable[[Iterable[Path]], None]:
    """Make files unreadable as a non-root user would find them: ``open`` fails with EACCES and
    ``os.access(R_OK)`` says no (the suite runs as root, for whom ``chmod 000`` blocks nothing)."""

    def block(paths: Iterable[Path]) -> None:
        blocked = {str(path) for path in paths}
        if not blocked:
            return
        real_open, real_access = builtins.open, os.access

        def guarded_open(file, *args, **kwargs):
            if str(file) in blocked:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        def guarded_access(path, mode, *args, **kwargs):
            return False if str(path) in blocked else real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "access", guarded_access)

    return block


def partial_files(root: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes under ``root`` (links not followed)."""
    return [
        Path(folder) / name
        for folder, _, names in os.walk(root)
        for name in names
        if PARTIAL_MARKER in name
    ]


def salign_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "salign_cli", *args]


def start_salign(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m salign_cli ARGS`` in its own process (for kill -9, limits, concurrency)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        salign_command(*args),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",  # Rich draws Unicode; never depend on the locale of the test run
        **kwargs,
    )


def run_salign(*args: str, timeout_s: float = 120, **kwargs) -> subprocess.CompletedProcess:
    process = start_salign(*args, **kwargs)
    stdout, stderr = process.communicate(timeout=timeout_s)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
