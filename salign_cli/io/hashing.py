"""Every digest salign computes, one function per purpose.

- :func:`content_hash`: a fast identity of a scan (blake2b-128 of size, first and last MiB),
  what the index stores and compares to spot duplicates;
- :func:`whole_content_hash`: blake2b-128 of every byte of a scan, what keys cached training
  data (an edit anywhere changes it);
- :func:`text_hash`: blake2b-128 of a string, for keys derived from other keys;
- :func:`file_sha256` / :func:`bytes_sha256`: sha256 of weights and checkpoints, the digest
  bundles and the registry publish (the Hub's own blob names are sha256 too).

Example: ``bytes_sha256(b"abc")`` starts ``"ba7816bf"``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from salign_cli.io.dicom import is_dicom_scan, series_files

HASH_CHUNK_BYTES = 1 << 20  # content hash = size + first MiB + last MiB; files read in MiBs
_BLAKE2B_BYTES = 16  # 128 bits: no collision among any number of scans one person holds


def content_hash(path: Path | str) -> str:
    """A fast identity of a scan's content: blake2b-128 of its size, first MiB and last MiB.

    Files up to 2 MiB are hashed whole. A change confined to the middle of a large file goes
    unnoticed, which is the price of hashing 10 000 CTs in seconds; size and mtime catch edits in
    practice. It identifies scans in the index; training data are keyed by
    :func:`whole_content_hash` instead. A DICOM series hashes its file names and sizes, the first
    file's head and the last file's tail.
    """
    path = Path(path)
    digest = hashlib.blake2b(digest_size=_BLAKE2B_BYTES)
    files = _dicom_files(path)
    if files is not None:
        for file in files:
            digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        if files:
            _hash_ends(digest, files[0])
            _hash_ends(digest, files[-1])
    else:
        _hash_ends(digest, path)
    return digest.hexdigest()


def whole_content_hash(path: Path | str) -> str:
    """blake2b-128 of every byte of a scan (a DICOM folder: every series file in name order).

    What keys cached training data: unlike :func:`content_hash`, an edit anywhere — the middle
    slice of an uncompressed label, with size and mtime kept — changes it. One sequential read
    (about 0.1 s for a 100 MB CT); no voxel is decoded.
    """
    path = Path(path)
    digest = hashlib.blake2b(digest_size=_BLAKE2B_BYTES)
    files = _dicom_files(path) or [path]
    for file in files:
        digest.update(f"{file.name}\0".encode())
        _update_from_file(digest, file)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    """blake2b-128 of ``text`` (UTF-8), as 32 hex digits: a short name for a long key."""
    return hashlib.blake2b(text.encode(), digest_size=_BLAKE2B_BYTES).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (weights can be hundreds of MB)."""
    digest = hashlib.sha256()
    _update_from_file(digest, path)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of bytes already in memory (weights read once, then checked and parsed)."""
    return hashlib.sha256(data).hexdigest()


def _dicom_files(path: Path) -> list[Path] | None:
    """A DICOM scan's series files sorted by name (an order that needs no tag read); ``None``
    for any other scan."""
    return sorted(series_files(path)) if is_dicom_scan(path) else None


def _update_from_file(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        for chunk in iter(functools.partial(handle.read, HASH_CHUNK_BYTES), b""):
            digest.update(chunk)


def _hash_ends(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        head = handle.read(HASH_CHUNK_BYTES)
        digest.update(head)
        if size > len(head):
            handle.seek(max(len(head), size - HASH_CHUNK_BYTES))
            digest.update(handle.read(HASH_CHUNK_BYTES))
