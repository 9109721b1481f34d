"""Write-then-rename, so that an interrupted or failed write never leaves a partial file behind.

The temporary file is flushed to the disk (``fsync``) before the rename and the folder after it,
so a power cut leaves either the old file or the complete new one, never a truncated one under
the final name. Temporary names carry the writer's process id: `remove_stale_partials` deletes
the ones whose writer is gone (killed with -9), and only those — a live writer in another
process keeps its file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTIAL_MARKER = ".partial-"
_PARTIAL_PID = re.compile(re.escape(PARTIAL_MARKER) + r"(\d+)-")


def full_suffix(path: Path) -> str:
    """``.nii.gz`` for ``a.nii.gz`` (libraries pick the format from the whole ending)."""
    name = path.name
    for compound in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(compound):
            return name[-len(compound) :]
    return path.suffix


@contextlib.contextmanager
def atomic_path(final_path: Path | str) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``final_path``; rename it into place on success.

    The temporary file lives in the same folder (so the rename is atomic on POSIX and Windows)
    and keeps the final file's ending, so writers that choose the format by suffix still work.
    On any exception the temporary file is removed and the exception propagates; an existing
    file at ``final_path`` is untouched until the very last step.
    """
    final_path = Path(final_path)
    suffix = full_suffix(final_path)
    stem = final_path.name[: len(final_path.name) - len(suffix)] if suffix else final_path.name
    temporary = final_path.with_name(
        f".{stem}{PARTIAL_MARKER}{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
    )
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, final_path)
        _fsync(final_path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk; folders cannot be opened on Windows."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or we cannot tell: keep its file
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete temporary files in ``folder`` whose writing process no longer exists.

    Returns what was removed. Files of a live process (this one or another), and temporaries
    from before process ids were part of the name, are left alone.
    """
    removed = []
    for path in Path(folder).glob(f".*{PARTIAL_MARKER}*"):
        match = _PARTIAL_PID.search(path.name)
        if match and path.is_file() and not _writer_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def write_json(path: Path | str, payload: Any) -> None:
    """Write JSON atomically, pretty-printed, with a trailing newline."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
