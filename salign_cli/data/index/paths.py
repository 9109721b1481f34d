"""The one rule for "this scan lies under that folder", used by the index and every stage.

A folder is spelt one way: ``~`` expanded and resolved once (`folder_key`), so ``..``, a relative
path or a linked folder name the same rows whatever the working directory. A scan is stored at
the path discovery found it under that folder — links *below* the folder are followed by the
walk but never resolved — and lies under a folder when that stored path does (`lies_under`).
So a folder of symlinks to scans kept elsewhere holds those scans, as its user means; resolving
the files instead put them where the links point and made the folder look empty (issue 24,
bug 1: ``salign pretrain DIR`` said "no readable scan found").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def folder_key(folder: Path | str) -> Path:
    """The spelling of ``folder`` the index stores its scans under."""
    return Path(folder).expanduser().resolve()


def lies_under(path: Path | str, folders: Sequence[Path]) -> bool:
    """Whether the stored ``path`` is one of ``folders`` (each a `folder_key`) or inside one."""
    path = Path(path)
    return any(path == folder or folder in path.parents for folder in folders)
