"""``index.sqlite``: the one table of scans and the one of datasets, read and written safely while
other ``salign index`` processes use the same workspace."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from salign_cli.data.dataset_json import DatasetInfo
from salign_cli.data.index.records import COLUMNS, JSON_COLUMNS, ScanRecord
from salign_cli.errors import InputError
from salign_cli.workspace import Workspace

SCHEMA_VERSION = 2  # PRAGMA user_version; an older index is dropped and rebuilt from the scans
BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another process's write to finish
# What makes an index file "damaged" (rebuilt from the scans); a busy or locked file is not.
DAMAGED_FILE_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
BUSY_ERRORS = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})
BUSY_RETRY_S = 0.05


def load_index(workspace: Workspace | Path | str | None = None) -> list[ScanRecord]:
    """Every scan in the workspace's index, sorted by case id (errors included: see ``is_usable``).

    Example: ``cases = labelled_scans(load_index("./ws"))``.
    """
    with read_only(index_path_of(workspace)) as connection:
        rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM scans").fetchall()
    return sorted((_record_from_row(row) for row in rows), key=lambda r: r.case_id)


def load_datasets(workspace: Workspace | Path | str | None = None) -> dict[Path, DatasetInfo]:
    """``dataset.json`` facts per dataset root (label names for fine-tuning, modality)."""
    with read_only(index_path_of(workspace)) as connection:
        return stored_datasets(connection)


def index_path_of(workspace: Workspace | Path | str | None) -> Path:
    """The workspace's ``index.sqlite`` (a folder or ``None`` resolves the workspace)."""
    resolved = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    return resolved.index_path


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """Open an existing index for reading, without ever creating one."""
    if not path.is_file():
        raise InputError(f"{path}: no scan index yet; run `salign index DIR` first")
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise InputError(
                f"{path}: index schema {version}, this salign reads {SCHEMA_VERSION}; run "
                "`salign index DIR` again to rebuild it"
            )
        yield connection
    except sqlite3.DatabaseError as error:
        raise InputError(
            f"{path}: not a readable salign index ({error}); run `salign index DIR` again to "
            "rebuild it"
        ) from error
    finally:
        connection.close()


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (or create) the index; an older schema or a damaged file is rebuilt from scratch.

    Several ``salign index`` processes may write one workspace at once: the journal is WAL (a
    reader never waits for a writer), a writer waits up to `BUSY_TIMEOUT_S` for another to
    finish, and `index_folders` merges its rows with the table as it is *at the moment it
    writes*, inside one write transaction, so no process drops another's rows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection, version = _connect_wal(path)
    except sqlite3.DatabaseError as error:
        if _error_name(error) not in DAMAGED_FILE_ERRORS:
            raise InputError(
                f"{path}: cannot open the index ({error}); check the workspace's permissions "
                "and free space, then run `salign index DIR` again"
            ) from error
        # a derived file: everything in it comes back from the scans; its WAL files go with it
        for damaged in (
            path,
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-shm"),
        ):
            damaged.unlink(missing_ok=True)
        connection, version = _connect_wal(path)
    if version > SCHEMA_VERSION:
        connection.close()
        raise InputError(
            f"{path}: written by a newer salign (index schema {version} > {SCHEMA_VERSION}); "
            "upgrade salign or use another --workspace"
        )
    if version < SCHEMA_VERSION:
        with write_transaction(connection):
            connection.execute("DROP TABLE IF EXISTS scans")
            connection.execute("DROP TABLE IF EXISTS datasets")
            columns = ", ".join(
                f"{name} TEXT PRIMARY KEY" if name == "image_path" else name for name in COLUMNS
            )
            connection.execute(f"CREATE TABLE scans ({columns}, UNIQUE (case_id))")
            connection.execute(
                "CREATE TABLE datasets (root TEXT PRIMARY KEY, name TEXT, modality TEXT, "
                "label_names TEXT)"
            )
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return connection


def _connect_wal(path: Path) -> tuple[sqlite3.Connection, int]:
    """A connection in WAL mode, and the file's schema version.

    Why the retry loop: when two processes open a new file at once, switching it to WAL can
    answer ``SQLITE_BUSY`` at once, without SQLite's busy handler. Reading that as a damaged
    file once made a second ``salign index`` delete the index under the first (a flaky CI
    failure: "no such table: scans"); a busy file is waited for, like a busy write.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return connection, int(connection.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as error:
            connection.close()
            if _error_name(error) not in BUSY_ERRORS or time.monotonic() > deadline:
                raise
        time.sleep(BUSY_RETRY_S)


# SQLite's messages for the codes above: Python 3.10 records no error name, only the message
_NAMES_OF_MESSAGES = {
    "database is locked": "SQLITE_BUSY",
    "database table is locked": "SQLITE_LOCKED",
    "file is not a database": "SQLITE_NOTADB",
    "database disk image is malformed": "SQLITE_CORRUPT",
}


def _error_name(error: sqlite3.Error) -> str | None:
    """SQLite's name for the error (``SQLITE_BUSY``…), from Python ≥ 3.11's record of it or
    from the message."""
    return getattr(error, "sqlite_errorname", None) or _NAMES_OF_MESSAGES.get(str(error))


def _row_from_record(record: ScanRecord) -> tuple[Any, ...]:
    payload = record.to_dict()
    return tuple(
        json.dumps(payload[name]) if name in JSON_COLUMNS else payload[name] for name in COLUMNS
    )


def _record_from_row(row: Sequence[Any]) -> ScanRecord:
    payload = {
        name: json.loads(value) if name in JSON_COLUMNS else value
        for name, value in zip(COLUMNS, row, strict=True)
    }
    return ScanRecord.from_dict(payload)


def stored_datasets(connection: sqlite3.Connection) -> dict[Path, DatasetInfo]:
    """``dataset.json`` facts stored per dataset root."""
    rows = connection.execute("SELECT root, name, modality, label_names FROM datasets")
    return {Path(root): _dataset_from_row(root, n, m, labels) for root, n, m, labels in rows}


def _dataset_from_row(
    root: str, name: str | None, modality: str | None, labels: str | None
) -> DatasetInfo:
    names = {int(k): v for k, v in json.loads(labels).items()} if labels else None
    return DatasetInfo(Path(root), name, modality, names)  # type: ignore[arg-type]


@contextlib.contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken at the start, so what is read
    inside is still true when it is written (``ROLLBACK`` on any error)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def stored_records(connection: sqlite3.Connection) -> dict[Path, ScanRecord]:
    """Every stored row, by image path."""
    return {
        r.image_path: r
        for r in (
            _record_from_row(row)
            for row in connection.execute(f"SELECT {', '.join(COLUMNS)} FROM scans")
        )
    }


def save_records(
    connection: sqlite3.Connection,
    records: Sequence[ScanRecord],
    datasets: Iterable[DatasetInfo],
) -> None:
    """Replace every row (the caller holds a `write_transaction`; readers never see half an
    index)."""
    placeholders = ", ".join("?" for _ in COLUMNS)
    connection.execute("DELETE FROM scans")
    connection.execute("DELETE FROM datasets")
    connection.executemany(
        f"INSERT INTO scans ({', '.join(COLUMNS)}) VALUES ({placeholders})",
        [_row_from_record(r) for r in records],
    )
    connection.executemany(
        "INSERT INTO datasets VALUES (?, ?, ?, ?)",
        [
            (
                str(d.root),
                d.name,
                d.modality,
                json.dumps({str(k): v for k, v in d.label_names.items()})
                if d.label_names
                else None,
            )
            for d in datasets
        ],
    )
