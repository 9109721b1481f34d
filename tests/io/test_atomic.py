"""Atomic writes: the file and its folder reach the disk before and after the rename; a failed
write leaves nothing; the temporary's name says which process writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from salign_cli.io import atomic
from salign_cli.io.atomic import atomic_path, remove_stale_partials


def test_the_file_is_synced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        events.append(f"fsync {Path(target).name}")
        real_fsync(descriptor)

    def replace(source, destination) -> None:
        events.append("rename")
        real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "mask.nii.gz"
    with atomic_path(target) as temporary:
        assert f".partial-{os.getpid()}-" in temporary.name  # the writer is named
        temporary.write_bytes(b"complete")
    assert events[0].startswith("fsync .mask.partial-")
    assert events[1:] == ["rename", f"fsync {tmp_path.name}"]
    assert target.read_bytes() == b"complete"


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_only_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    dead = tmp_path / f".a.partial-{dead_pid}-0123456789ab.nii.gz"
    mine = tmp_path / f".b.partial-{os.getpid()}-0123456789ab.nii.gz"
    legacy = tmp_path / ".c.partial-0123456789ab.nii.gz"  # before pids were in the name
    for path in (dead, mine, legacy):
        path.write_bytes(b"x")
    assert remove_stale_partials(tmp_path) == [dead]
    assert mine.exists() and legacy.exists()
