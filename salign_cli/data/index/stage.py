"""The ``salign index`` stage: discover, read what changed on a thread pool, merge, store."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from salign_cli.data.index.case_ids import assign_case_ids
from salign_cli.data.index.checks import fingerprint, read_scan, unexpected_failure
from salign_cli.data.index.collection import default_modality_note, finish_records, orientation_note
from salign_cli.data.index.discovery import Candidate, discover
from salign_cli.data.index.paths import folder_key, lies_under
from salign_cli.data.index.records import IndexResult, ScanRecord
from salign_cli.data.index.store import (
    index_path_of,
    open_for_writing,
    save_records,
    stored_datasets,
    stored_records,
    write_transaction,
)
from salign_cli.errors import InputError, OptionError
from salign_cli.io.modality import Modality, parse_modality
from salign_cli.workspace import Workspace


def default_workers() -> int:
    """Threads for header reads: I/O and zlib release the GIL, so a few per core pay off."""
    return min(16, 4 * (os.cpu_count() or 1))


def _resolve_roots(folders: Sequence[Path | str]) -> list[Path]:
    if not folders:
        raise InputError("no folder given; usage: salign index DIR [DIR...]")
    roots = []
    for folder in folders:
        root = folder_key(folder)
        if not root.exists():
            raise InputError(f"{folder}: no such folder; check the path")
        if not root.is_dir():
            raise InputError(f"{folder}: is a file; salign index takes folders: pass its folder")
        roots.append(root)
    return roots


def _needs_reading(old: ScanRecord | None, candidate: Candidate, checks: tuple[str, ...]) -> str:
    """``"new"``, ``"changed"``, ``"recheck"`` or ``"unchanged"`` for one candidate."""
    if old is None:
        return "new"
    try:
        image_now = fingerprint(candidate.image_path)
        label_now = fingerprint(candidate.label_path) if candidate.label_path else (None, None)
    except OSError:
        return "changed"
    if (
        image_now != (old.size_bytes, old.mtime_ns)
        or candidate.label_path != old.label_path
        or label_now != (old.label_size_bytes, old.label_mtime_ns)
        or candidate.dataset_root != old.dataset_root
    ):
        return "changed"
    return "unchanged" if set(checks) <= set(old.checks) else "recheck"


def index_folders(
    folders: Sequence[Path | str],
    workspace: Workspace | Path | str | None = None,
    *,
    stats: bool = False,
    check_labels: bool = True,
    modality: str | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IndexResult:
    """Index the scans under ``folders`` into the workspace's ``index.sqlite``.

    Bad scans never raise: they are stored with their problems (see :class:`ScanRecord`) and the
    good ones are indexed. :class:`InputError` is raised only when a folder is missing or holds
    no scans, or ``modality`` is not CT/MR; nothing is written then.
    ``on_progress(done, total)`` is called from this thread after each scan that is read.

    Example: ``result = index_folders(["scans/"], "ws/"); result.has_errors``.
    """
    started = time.perf_counter()
    override = _parse_modality(modality)
    roots = _resolve_roots(folders)
    candidates, notes, datasets, skipped_labels = discover(roots)
    checks = tuple(name for name, wanted in (("labels", check_labels), ("stats", stats)) if wanted)
    index_path = index_path_of(workspace)
    connection = open_for_writing(index_path)
    try:
        old = stored_records(connection)
        status = {
            c.image_path: _needs_reading(old.get(c.image_path), c, checks) for c in candidates
        }
        to_read = [c for c in candidates if status[c.image_path] != "unchanged"]
        # the slow part (reading headers) runs outside any lock; the merge below re-reads the
        # table under the write lock, so rows another process wrote meanwhile are kept
        fresh = _read_all(to_read, checks, workers or default_workers(), on_progress)
        with write_transaction(connection):
            stored = stored_records(connection)
            current = [
                fresh.get(c.image_path) or stored.get(c.image_path) or old[c.image_path]
                for c in candidates
            ]
            seen = {c.image_path for c in candidates}
            kept = [
                r
                for path, r in stored.items()
                if path not in seen and not lies_under(path, roots) and path.exists()
            ]
            removed = sum(1 for path in stored if path not in seen) - len(kept)
            finished = finish_records(current, datasets, override)
            ids = assign_case_ids([(r.image_path, r.case_name) for r in [*finished, *kept]])
            finished = [replace(r, case_id=ids[r.image_path]) for r in finished]
            kept = [replace(r, case_id=ids[r.image_path]) for r in kept]
            kept_roots = {r.dataset_root for r in kept}
            kept_datasets = {
                root: dataset
                for root, dataset in stored_datasets(connection).items()
                if root in kept_roots and (root / "dataset.json").is_file()
            }
            save_records(connection, [*finished, *kept], {**kept_datasets, **datasets}.values())
    finally:
        connection.close()
    usable = [r for r in finished if r.is_usable]
    counts = Counter(status.values())
    return IndexResult(
        records=sorted(finished, key=lambda r: r.case_id),
        notes=notes + orientation_note(usable, roots) + default_modality_note(usable, roots),
        datasets=list(datasets.values()),
        skipped_labels=skipped_labels,
        new=counts["new"],
        changed=counts["changed"],
        unchanged=counts["unchanged"],
        rechecked=counts["recheck"],
        removed=removed,
        index_path=index_path,
        seconds=time.perf_counter() - started,
    )


def _parse_modality(modality: str | None) -> Modality | None:
    if modality is None:
        return None
    parsed = parse_modality(modality)
    if parsed is None:
        raise OptionError("modality", f"must be CT or MR, got {modality!r}")
    return parsed


def _read_all(
    candidates: Sequence[Candidate],
    checks: tuple[str, ...],
    workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> dict[Path, ScanRecord]:
    """Read scans on a thread pool (no processes: nothing to spawn, nothing to orphan)."""
    results: dict[Path, ScanRecord] = {}
    if not candidates:
        return results
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(read_scan, candidate, checks): candidate for candidate in candidates}
        for done, future in enumerate(as_completed(futures), start=1):
            candidate = futures[future]
            try:
                results[candidate.image_path] = future.result()
            except Exception as error:  # a reader failing in a way nobody foresaw: one bad file
                results[candidate.image_path] = unexpected_failure(candidate, checks, error)
            if on_progress is not None:
                on_progress(done, len(candidates))
    return results
