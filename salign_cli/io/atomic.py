"""Write-then-rename, so that an interrupted or failed write never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTIAL_MARKER = ".partial-"


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
    temporary = final_path.with_name(f".{stem}{PARTIAL_MARKER}{uuid.uuid4().hex[:12]}{suffix}")
    try:
        yield temporary
        os.replace(temporary, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def write_json(path: Path | str, payload: Any) -> None:
    """Write JSON atomically, pretty-printed, with a trailing newline."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
