"""The index's rows: a scan (:class:`ScanRecord`), its problems, and what one run found.

``COLUMNS`` are the SQLite table's columns, one per :class:`ScanRecord` field, so that the store
and the records cannot disagree on a field; ``JSON_COLUMNS`` are stored as JSON text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from salign_cli.data.dataset_json import DatasetInfo
from salign_cli.io.modality import Modality

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; ``message`` is one line that names the file and the fix."""

    severity: Severity
    path: Path
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "path": str(self.path), "message": self.message}

    @classmethod
    def from_dict(cls, payload: Mapping[str, str]) -> Problem:
        return cls(payload["severity"], Path(payload["path"]), payload["message"])  # type: ignore[arg-type]


def error_at(path: Path, what: str) -> Problem:
    """An error about ``path``; ``what`` says what is wrong and the fix."""
    return Problem("error", path, f"{path}: {what}")


def warning_at(path: Path, what: str) -> Problem:
    """A warning about ``path``; ``what`` says what is odd and what to do."""
    return Problem("warning", path, f"{path}: {what}")


@dataclass(frozen=True)
class ScanRecord:
    """One scan in the index: where it is, what its header says, its label, its problems.

    ``shape`` is the 3D voxel grid in the file's own order and ``spacing_mm`` its voxel size;
    both are ``None`` when the header could not be read (the scan then has an error).
    ``content_hash`` identifies the image's content (see :func:`content_hash`), ``label_hash``
    the label's. ``label_values`` are the classes present when labels were read.
    ``file_problems`` are what reading the files found; ``problems`` adds what comparing the scan
    with the rest of the index found (duplicates, label values missing from ``dataset.json``).
    """

    image_path: Path
    label_path: Path | None
    dataset_root: Path
    case_name: str
    size_bytes: int
    mtime_ns: int
    label_size_bytes: int | None = None
    label_mtime_ns: int | None = None
    content_hash: str | None = None
    label_hash: str | None = None
    shape: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    orientation: str | None = None
    dtype: str | None = None
    intensity_range: tuple[float, float] | None = None  # all finite voxels ("stats" check)
    sampled_range: tuple[float, float] | None = None  # a strided sample's, without "stats"
    dicom_modality: str | None = None  # the DICOM Modality tag as written ("CT", "PT", ...)
    label_values: tuple[int, ...] | None = None
    label_matches: bool | None = None
    file_problems: tuple[Problem, ...] = ()
    checks: tuple[
        str, ...
    ] = ()  # extra readings done: "labels" (label voxels), "stats" (image voxels)
    case_id: str = ""
    modality: Modality = "MR"
    modality_source: str = (
        "default"  # "--modality", "DICOM", "dataset.json", "intensities", "default"
    )
    problems: tuple[Problem, ...] = ()

    @property
    def is_labelled(self) -> bool:
        return self.label_path is not None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def is_usable(self) -> bool:
        """True when the scan (and its label, if any) can be trained on: no errors."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists, problems as dicts."""
        payload = {name: getattr(self, name) for name in COLUMNS}  # asdict deep-copies: slow
        for name in _PATH_FIELDS:
            payload[name] = None if payload[name] is None else str(payload[name])
        for name in _PROBLEM_FIELDS:
            payload[name] = [problem.to_dict() for problem in getattr(self, name)]
        for name in _TUPLE_FIELDS:
            payload[name] = None if payload[name] is None else list(payload[name])
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ScanRecord:
        values = dict(payload)
        for name in _PATH_FIELDS:
            values[name] = None if values[name] is None else Path(values[name])
        for name in _PROBLEM_FIELDS:
            values[name] = tuple(Problem.from_dict(p) for p in values[name])
        for name in _TUPLE_FIELDS:
            values[name] = None if values[name] is None else tuple(values[name])
        if values["label_matches"] is not None:
            values["label_matches"] = bool(values["label_matches"])
        return cls(**values)


_PATH_FIELDS = ("image_path", "label_path", "dataset_root")
_PROBLEM_FIELDS = ("file_problems", "problems")
_TUPLE_FIELDS = (
    "shape",
    "spacing_mm",
    "intensity_range",
    "sampled_range",
    "label_values",
    "checks",
)
JSON_COLUMNS = frozenset(_PROBLEM_FIELDS + _TUPLE_FIELDS)
COLUMNS = tuple(f.name for f in fields(ScanRecord))


@dataclass(frozen=True)
class IndexResult:
    """What one ``index_folders`` run found: the scans under its folders and what changed."""

    records: list[ScanRecord]  # under the folders of this run, sorted by case id
    notes: list[Problem]  # about the collection, not one scan: orphan labels, mixed orientations
    datasets: list[DatasetInfo]
    skipped_labels: list[Path]  # label maps no image claims: never indexed as images
    new: int
    changed: int
    unchanged: int
    rechecked: int  # unchanged files read again for checks the earlier run skipped
    removed: int  # rows dropped because their file left the disk
    index_path: Path
    seconds: float

    @property
    def problems(self) -> list[Problem]:
        return [p for record in self.records for p in record.problems] + self.notes

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)
