"""Find scans in folders, pair them with labels, check them, and keep the result in ``index.sqlite``.

What the later stages rely on (:func:`load_index` returns :class:`ScanRecord` rows):

- **Headers and a sample by default.** Shape, spacing, orientation and dtype come from
  :func:`salign_cli.io.volume.read_header`; of an image's voxels only a strided sample is read
  (:func:`salign_cli.io.volume.sample_voxels`: CT or MR), all of them with ``stats=True``
  (exact intensity range, NaN/Inf). Label voxels are read whole (values are checked; label files
  are small).
- **DICOM series** are found by GDCM's series reader, whatever their files are called (``*.dcm``,
  ``*.IMA``, UID-named, no extension): a folder with one series is one scan (the folder), a
  folder with several lists each series as a scan, named by its file with the smallest name.
- **Pairing conventions** (first match wins): MSD ``imagesTr/ → labelsTr/`` (and ``imagesTs/ →
  labelsTs/``, ``images/ → labels/``) with the same name, or the nnU-Net name without the
  ``_0000`` channel suffix; else a sibling ``<name>_seg``, ``_label``, ``_labels`` or ``_mask``.
  Files in a label folder or with a label suffix are never listed as images, nor are files with
  a label word inside their name (``ct_seg_mr``) whose voxels look like a label map (integer,
  non-negative, few values); label maps no image claims are skipped and listed
  (``IndexResult.skipped_labels``).
- **Case ids are unique**: the case name (nnU-Net ``_0000`` dropped); names found in several
  folders get the nearest folder names that tell them apart as a prefix (``A_case_001``).
- **Modality is a guess, and says where it came from** (``modality_source``): ``--modality`` >
  the DICOM Modality tag (CT or MR) > ``dataset.json`` > intensities (CT if the minimum of the
  voxels, or of their sample without ``stats``, is below -500, i.e. air in Hounsfield units) >
  ``"MR"`` when no voxel could be read.
- **Incremental.** A scan whose image (and label) path, size and mtime are unchanged, and whose
  earlier reading covered the checks asked for, is not read again. Rows of folders not named in
  this run stay, unless their file is gone.
- **Problems** are one line each, naming the file and the fix. Errors (the scan is unusable:
  unreadable, 2D or 4D, truncated, label grid differs, non-integer labels, NaN/Inf) and warnings
  (anisotropy above 3x, unusual voxel types, empty labels, duplicates) are stored per scan;
  notes about the collection (orphan labels, mixed orientations) come back with each run.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import re
import sqlite3
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from salign_cli.errors import InputError
from salign_cli.io.naming import (
    CHANNEL_NAME,
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    SCAN_SUFFIXES,
    case_name,
    scan_name,
)
from salign_cli.io.volume import (
    VolumeHeader,
    dicom_series,
    is_dicom_file,
    orientation_code,
    read_header,
    read_volume,
    require_finite,
    sample_voxels,
    series_files,
)
from salign_cli.workspace import Workspace

Modality = Literal["CT", "MR"]
Severity = Literal["error", "warning"]

SCHEMA_VERSION = 2  # PRAGMA user_version; an older index is dropped and rebuilt from the scans
HASH_CHUNK_BYTES = 1 << 20  # content hash = size + first MiB + last MiB
BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another process's write to finish
ANISOTROPY_LIMIT = 3.0  # largest / smallest voxel size above this earns a warning
CT_MIN_INTENSITY = -500.0  # a minimum below this is air in Hounsfield units: CT
AFFINE_ATOL_MM = 1e-3  # label and image affines must agree this closely
MAX_LABEL_VALUE = 65535  # what salign writes (uint16); more means it is not a label map
# A label map has at most this many distinct values in its voxel sample (TotalSegmentator's
# largest task has 117 classes); a CT or MR sample has hundreds to thousands.
MAX_SAMPLED_LABEL_VALUES = 256
NO_SCANS_HINT = "salign reads .nii/.nii.gz/.nrrd/.mha/.mhd files and DICOM series folders"

# Image folder -> label folder (names compared case-insensitively).
LABEL_FOLDER_OF = {"imagestr": "labelstr", "imagests": "labelsts", "images": "labels"}
LABEL_FOLDERS = frozenset(LABEL_FOLDER_OF.values())
LABEL_NAME_SUFFIXES = ("seg", "label", "labels", "mask")
_LABEL_NAME = re.compile(rf"^(?P<base>.+)_(?:{'|'.join(LABEL_NAME_SUFFIXES)})$", re.IGNORECASE)
# a label word anywhere between underscores: "ct_seg_mr", "seg_liver"; not "totalseg"
_LABEL_WORD = re.compile(rf"(?:^|_)(?:{'|'.join(LABEL_NAME_SUFFIXES)})(?:_|$)", re.IGNORECASE)
_USUAL_DTYPES = frozenset(
    np.dtype(t).name
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
)


# ---------------------------------------------------------------------------------------------
# the rows


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


def _error(path: Path, what: str) -> Problem:
    return Problem("error", path, f"{path}: {what}")


def _warning(path: Path, what: str) -> Problem:
    return Problem("warning", path, f"{path}: {what}")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset folder's ``dataset.json`` (MSD or nnU-Net v2) says."""

    root: Path
    name: str | None = None
    modality: Modality | None = None
    label_names: Mapping[int, str] | None = None  # class value -> name, e.g. {0: "background"}


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
        payload = {name: getattr(self, name) for name in _COLUMNS}  # asdict deep-copies: slow
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
_JSON_COLUMNS = frozenset(_PROBLEM_FIELDS + _TUPLE_FIELDS)
_COLUMNS = tuple(f.name for f in fields(ScanRecord))


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


# ---------------------------------------------------------------------------------------------
# public query helpers


def load_index(workspace: Workspace | Path | str | None = None) -> list[ScanRecord]:
    """Every scan in the workspace's index, sorted by case id (errors included: see ``is_usable``).

    Example: ``cases = labelled_scans(load_index("./ws"))``.
    """
    with _read_only(_index_path(workspace)) as connection:
        rows = connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM scans").fetchall()
    return sorted((_record_from_row(row) for row in rows), key=lambda r: r.case_id)


def load_datasets(workspace: Workspace | Path | str | None = None) -> dict[Path, DatasetInfo]:
    """``dataset.json`` facts per dataset root (label names for fine-tuning, modality)."""
    with _read_only(_index_path(workspace)) as connection:
        return _datasets_in(connection)


def usable_scans(records: Iterable[ScanRecord]) -> list[ScanRecord]:
    """Scans without errors (labelled or not): what pre-training may use."""
    return [r for r in records if r.is_usable]


def skipped_scan_notes(records: Iterable[ScanRecord], limit: int = 20) -> list[str]:
    """One line per scan with errors, for stages that skip them: ``skipping <case>: <error>``.

    At most ``limit`` lines, then one that counts the rest (``salign index`` lists them all).
    """
    skipped = [r for r in records if not r.is_usable]
    notes = [f"skipping {r.case_id}: {r.errors[0].message}" for r in skipped[:limit]]
    if len(skipped) > limit:
        notes.append(
            f"... and {len(skipped) - limit} more scans with errors (salign index lists them)"
        )
    return notes


def labelled_scans(records: Iterable[ScanRecord]) -> list[ScanRecord]:
    """Usable scans with a label, in the order given."""
    return [r for r in usable_scans(records) if r.is_labelled]


def unlabelled_scans(records: Iterable[ScanRecord]) -> list[ScanRecord]:
    """Usable scans without a label, in the order given."""
    return [r for r in usable_scans(records) if not r.is_labelled]


# ---------------------------------------------------------------------------------------------
# content hash and fingerprint


def content_hash(path: Path | str) -> str:
    """A fast identity of a scan's content: blake2b-128 of its size, first MiB and last MiB.

    Files up to 2 MiB are hashed whole. A change confined to the middle of a large file goes
    unnoticed, which is the price of hashing 10 000 CTs in seconds; size and mtime catch edits in
    practice. It identifies scans in the index; training data are keyed by
    :func:`whole_content_hash` instead. A DICOM series hashes its file names and sizes, the first
    file's head and the last file's tail.
    """
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    if _is_dicom(path):
        files = _series_files(path)
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
    digest = hashlib.blake2b(digest_size=16)
    files = _series_files(path) if _is_dicom(path) else [path]
    for file in files:
        digest.update(f"{file.name}\0".encode())
        with file.open("rb") as handle:
            for chunk in iter(functools.partial(handle.read, HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _hash_ends(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        head = handle.read(HASH_CHUNK_BYTES)
        digest.update(head)
        if size > len(head):
            handle.seek(max(len(head), size - HASH_CHUNK_BYTES))
            digest.update(handle.read(HASH_CHUNK_BYTES))


def _fingerprint(path: Path) -> tuple[int, int]:
    """``(size_bytes, mtime_ns)``; a DICOM series sums its folder's files and takes the newest
    mtime (every file, not only the series': a listing and ``stat`` are cheap, GDCM is not)."""
    if _is_dicom(path):
        folder = path if path.is_dir() else path.parent
        files = [e for e in folder.iterdir() if not _is_hidden(e.name) and e.is_file()]
        stats = [file.stat() for file in files] + [folder.stat()]
        return sum(s.st_size for s in stats[:-1]), max(s.st_mtime_ns for s in stats)
    status = path.stat()
    return status.st_size, status.st_mtime_ns


# ---------------------------------------------------------------------------------------------
# discovery: walking, DICOM folders, pairing, dataset.json


@dataclass(frozen=True)
class _Candidate:
    image_path: Path
    label_path: Path | None
    case_name: str
    dataset_root: Path


def _is_hidden(name: str) -> bool:
    # dot files include macOS "._x.nii.gz" shadows and salign's own ".x.partial-*" temporaries
    return name.startswith(".")


def _is_dicom(path: Path) -> bool:
    """A DICOM scan: a series folder, or the file that stands for one series of a folder."""
    return path.is_dir() or is_dicom_file(path)


def _series_files(path: Path) -> list[Path]:
    """The files of a DICOM scan's series, sorted by name (what the hashes read)."""
    return sorted(series_files(path))


def _may_hold_dicom(folder: Path, filenames: Sequence[str]) -> bool:
    """True for a folder with ``*.dcm``/``*.IMA`` files, or whose first file named like a DICOM
    slice (no extension, or a UID ending in digits: ``1.2.840.1``) has the DICOM magic.

    A cheap filter: only folders it passes are read by GDCM, which opens every file.
    """
    visible = [n for n in filenames if not _is_hidden(n) and not n.lower().endswith(SCAN_SUFFIXES)]
    if any(name.lower().endswith(DICOM_SUFFIXES) for name in visible):
        return True
    slice_like = sorted(n for n in visible if not Path(n).suffix or Path(n).suffix[1:].isdigit())
    return bool(slice_like) and is_dicom_file(folder / slice_like[0])


def _dicom_scans(folder: Path) -> list[tuple[Path, str]]:
    """(scan path, case name) per DICOM series in ``folder``: the folder itself when it holds
    one series, else each series' first file, named ``<folder>_series<SeriesNumber>``."""
    series = dicom_series(folder)
    if len(series) == 1:
        return [(folder, folder.name)]
    return [
        (s.first_file, f"{folder.name}_series{s.number or s.uid.rsplit('.', 1)[-1]}")
        for s in series
    ]


def _walk_scans(
    root: Path, visited: set[str], series_names: dict[Path, str]
) -> dict[Path, list[Path]]:
    """Scan paths grouped by the folder that holds them (a DICOM series folder by its parent).

    Folder links are followed, but each real folder is entered once, so link loops end and a
    folder linked twice is not indexed twice. Case names of DICOM scans go into ``series_names``.
    """
    found: dict[Path, list[Path]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(folder / name)
            if not _is_hidden(name) and name.lower().endswith(SCAN_SUFFIXES):
                found[folder].append(folder / name)  # a folder named x.nii.gz: reading says so
            elif not _is_hidden(name) and real not in visited:
                visited.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not _is_hidden(name) and name.lower().endswith(SCAN_SUFFIXES):
                found[folder].append(folder / name)
        if _may_hold_dicom(folder, filenames):
            for path, name in _dicom_scans(folder):
                found[folder.parent if path == folder else folder].append(path)
                series_names[path] = name
    return found


def _is_label_file(path: Path) -> bool:
    """In a label folder, named ``<image>_seg`` (or ``_label``...), or named with a label word
    inside (``ct_seg_mr``) and holding what looks like a label map."""
    name = scan_name(path)
    if path.parent.name.lower() in LABEL_FOLDERS or _LABEL_NAME.match(name):
        return True
    return bool(_LABEL_WORD.search(name)) and looks_like_label_map(path)


def looks_like_label_map(path: Path) -> bool:
    """True when a scan's voxels look like classes: an integer type, and a strided sample holds
    only non-negative values, at most `MAX_SAMPLED_LABEL_VALUES` of them.

    Not enough on its own (a uint8 MR crop passes too), so only names with a label word are
    asked. An unreadable file is no label map: reading it as an image reports why.
    """
    try:
        if read_header(path).dtype.kind not in "iub":
            return False
        sample = sample_voxels(path)
    except InputError:
        return False
    return (
        sample.size > 0 and sample.min() >= 0 and len(np.unique(sample)) <= MAX_SAMPLED_LABEL_VALUES
    )


def _extra_channel_of(path: Path, names_here: Mapping[str, Path]) -> Path | None:
    """For nnU-Net ``case_0001`` beside ``case_0000``: the ``_0000`` file; else ``None``."""
    match = CHANNEL_NAME.match(scan_name(path))
    if not match or match["channel"] == "0000":
        return None
    return names_here.get(f"{match['base']}_0000".lower())


def _label_for(
    image: Path,
    names_by_folder: Mapping[Path, Mapping[str, Path]],
    folder_by_lower: Mapping[tuple[Path, str], Path],
) -> Path | None:
    """The image's label by the first convention that finds one (see the module docstring)."""
    # ordered, without repeats; names compare case-insensitively, like the conventions' folders
    names = dict.fromkeys((scan_name(image).lower(), case_name(image).lower()))
    label_folder_name = LABEL_FOLDER_OF.get(image.parent.name.lower())
    if label_folder_name:
        label_folder = folder_by_lower.get((image.parent.parent, label_folder_name))
        in_label_folder = names_by_folder.get(label_folder, {}) if label_folder else {}
        for name in names:
            if name in in_label_folder:
                return in_label_folder[name]
    siblings = names_by_folder.get(image.parent, {})
    for name in names:
        for suffix in LABEL_NAME_SUFFIXES:
            if f"{name}_{suffix}" in siblings:
                return siblings[f"{name}_{suffix}"]
    return None


def _pair(
    found: Mapping[Path, list[Path]],
) -> tuple[list[tuple[Path, Path | None]], list[Problem], list[Path]]:
    """(image, label or None) pairs, notes on orphan labels and skipped extra channels, and the
    orphan labels themselves."""
    names_by_folder = {
        folder: {scan_name(p).lower(): p for p in paths} for folder, paths in found.items()
    }
    folder_by_lower = {(folder.parent, folder.name.lower()): folder for folder in found}
    pairs: list[tuple[Path, Path | None]] = []
    notes: list[Problem] = []
    labels = {p for paths in found.values() for p in paths if _is_label_file(p)}
    for folder, paths in sorted(found.items()):
        for path in paths:
            if path in labels:
                continue
            first_channel = _extra_channel_of(path, names_by_folder[folder])
            if first_channel is not None:
                notes.append(
                    _warning(
                        path,
                        f"extra input channel of {first_channel.name}; salign uses one channel "
                        "(_0000) and skips this file",
                    )
                )
                continue
            pairs.append((path, _label_for(path, names_by_folder, folder_by_lower)))
    claimed = {label for _, label in pairs}
    orphans = sorted(labels - claimed)
    for orphan in orphans:
        notes.append(
            _warning(
                orphan,
                "label file with no matching image; name it like its image (MSD labelsTr/, "
                "nnU-Net <case>.nii.gz for <case>_0000.nii.gz, or <image>_seg.nii.gz beside it)",
            )
        )
    return pairs, notes, orphans


def _modality_from_text(text: str) -> Modality:
    return "CT" if re.search(r"\bCT\b", text, re.IGNORECASE) else "MR"


def read_dataset_json(root: Path) -> tuple[DatasetInfo, list[Problem]]:
    """Name, modality and label names from ``root/dataset.json`` (MSD or nnU-Net v2 layout).

    MSD writes ``"modality": {"0": "MRI"}`` and ``"labels": {"0": "background", ...}``;
    nnU-Net v2 writes ``"channel_names": {"0": "CT"}`` and ``"labels": {"background": 0, ...}``.
    A file that cannot be read gives a warning and an empty :class:`DatasetInfo`.
    """
    path = root / "dataset.json"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return DatasetInfo(root), [
            _warning(path, f"cannot read dataset.json ({reason}); fix the JSON or remove the file")
        ]
    channels = payload.get("modality") or payload.get("channel_names") or {}
    first_channel = channels.get("0") if isinstance(channels, dict) else None
    labels: dict[int, str] = {}
    declared = payload.get("labels")
    for key, value in (declared if isinstance(declared, dict) else {}).items():
        if str(key).lstrip("-").isdigit():
            labels[int(key)] = str(value)  # MSD: value -> name
        elif isinstance(value, int):
            labels[value] = str(key)  # nnU-Net v2: name -> value (region lists are skipped)
    name = payload.get("name")
    return DatasetInfo(
        root=root,
        name=str(name) if name else None,
        modality=_modality_from_text(str(first_channel)) if first_channel else None,
        label_names=dict(sorted(labels.items())) or None,
    ), []


def _dataset_root(folder: Path, walk_root: Path) -> Path:
    """The nearest folder with a dataset.json from ``folder`` up to the walked root (or, when the
    root is itself an images/labels folder, its parent); else the folder above imagesTr/-style
    folders, else the folder itself."""
    stop = (
        walk_root.parent
        if walk_root.name.lower() in {*LABEL_FOLDER_OF, *LABEL_FOLDERS}
        else walk_root
    )
    for candidate in (folder, *folder.parents):
        if (candidate / "dataset.json").is_file():
            return candidate
        if candidate == stop or stop not in candidate.parents:
            break
    return folder.parent if folder.name.lower() in LABEL_FOLDER_OF else folder


def _label_folders_beside(found: Mapping[Path, list[Path]]) -> dict[Path, list[Path]]:
    """Scans in label folders (``labelsTr/`` ...) beside walked image folders the walk missed,
    so that ``salign index data/imagesTr`` still finds ``data/labelsTr``."""
    extra: dict[Path, list[Path]] = {}
    for folder in found:
        label_name = LABEL_FOLDER_OF.get(folder.name.lower())
        if not label_name:
            continue
        for sibling in folder.parent.iterdir():
            if sibling.name.lower() == label_name and sibling.is_dir() and sibling not in found:
                extra[sibling] = sorted(
                    entry
                    for entry in sibling.iterdir()
                    if not _is_hidden(entry.name) and entry.name.lower().endswith(SCAN_SUFFIXES)
                )
    return extra


def _walk_root(folder: Path, roots: Sequence[Path]) -> Path:
    """The innermost root that holds ``folder`` (the folder itself when none does)."""
    holding = [root for root in roots if root == folder or root in folder.parents]
    return max(holding, key=lambda root: len(root.parts)) if holding else folder


def _discover(
    roots: Sequence[Path],
) -> tuple[list[_Candidate], list[Problem], dict[Path, DatasetInfo], list[Path]]:
    """Walk ``roots``, pair images with labels, read dataset.json files; also the label maps
    that no image claims.

    Raises :class:`InputError` for a root without scans, or when only label files were found.
    """
    visited = {os.path.realpath(root) for root in roots}
    found: dict[Path, list[Path]] = {}
    series_names: dict[Path, str] = {}
    for root in roots:
        walked = _walk_scans(root, visited, series_names)
        if not walked:
            raise InputError(f"no scans found in {root}: {NO_SCANS_HINT}")
        for folder, paths in walked.items():
            found[folder] = sorted({*found.get(folder, []), *paths})
    found.update(_label_folders_beside(found))
    pairs, notes, orphans = _pair(found)
    if not pairs:
        raise InputError(
            f"no images found in {', '.join(map(str, roots))}, only label files; point salign "
            "at the folder that holds the images too"
        )
    datasets: dict[Path, DatasetInfo] = {}
    dataset_roots: dict[Path, Path] = {}  # per folder: thousands of scans share a few folders
    candidates = []
    for image, label in pairs:
        folder = image.parent
        if folder not in dataset_roots:
            dataset_roots[folder] = _dataset_root(folder, _walk_root(folder, roots))
        dataset_root = dataset_roots[folder]
        if dataset_root not in datasets and (dataset_root / "dataset.json").is_file():
            datasets[dataset_root], dataset_notes = read_dataset_json(dataset_root)
            notes += dataset_notes
        name = series_names.get(image) or case_name(image)
        candidates.append(_Candidate(image, label, name, dataset_root))
    return candidates, notes, datasets, orphans


# ---------------------------------------------------------------------------------------------
# reading one scan (runs in worker threads)


def _nifti_truncation(path: Path, size_bytes: int) -> Problem | None:
    """An error when a NIfTI file holds fewer voxel bytes than its header declares.

    Reading only the header cannot see a cut-off download. For ``.nii`` the file size tells; for
    ``.nii.gz`` the gzip trailer stores the uncompressed size (mod 2**32), and only when it
    disagrees is the stream decompressed to be sure (multi-member gzip files also disagree).
    """
    expected = _declared_nifti_bytes(path)
    found: int | None
    if not path.name.lower().endswith(".gz"):
        found = size_bytes
    else:
        with path.open("rb") as handle:
            handle.seek(max(size_bytes - 4, 0))
            if int.from_bytes(handle.read(4), "little") == expected % 2**32:
                return None
        found = _gunzipped_size(path)
    if found is not None and found >= expected:
        return None
    got = "its gzip stream is cut off or corrupt" if found is None else f"it holds {found}"
    return _error(
        path,
        f"truncated: the header declares {expected} bytes but {got}; re-copy or re-download it",
    )


def _declared_nifti_bytes(path: Path) -> int:
    """Data offset + voxel bytes from a NIfTI-1/2 header parsed without nibabel's checks.

    ``read_header`` has validated the header already; parsing it again unchecked costs an
    eighth of a second ``nib.load`` (it dominated indexing time).
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(nib.Nifti2Header.sizeof_hdr)
    nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
    header_class = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    # only the fixed-size block: header extensions (which vox_offset already skips) are not read
    block = io.BytesIO(raw[: header_class.sizeof_hdr])
    header = header_class.from_fileobj(block, check=False)
    offset = max(int(header.get_data_offset()), header_class.single_vox_offset)
    return offset + int(np.prod(header.get_data_shape())) * int(header.get_data_dtype().itemsize)


def _gunzipped_size(path: Path) -> int | None:
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES * 4):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return None
    return total


def _header_problems(header: VolumeHeader, size_bytes: int) -> list[Problem]:
    path, shape = header.path, header.spatial_shape
    problems: list[Problem] = []
    if len(header.shape) < 3 or min(shape) == 1:
        problems.append(
            _error(
                path,
                f"2D image (shape {tuple(header.shape)}); salign index collects 3D scans: stack "
                "the slices into one 3D file or move this one out of the folder",
            )
        )
    spacing = np.asarray(header.spacing_mm)
    if not np.all(np.isfinite(header.affine)) or np.any(spacing <= 0):
        problems.append(
            _error(path, "the affine has zero or non-finite voxel sizes; fix pixdim/sform")
        )
    elif spacing.max() / spacing.min() > ANISOTROPY_LIMIT:
        mm = " x ".join(f"{s:.3g}" for s in spacing)
        problems.append(
            _warning(
                path,
                f"anisotropic voxels ({mm} mm, ratio {spacing.max() / spacing.min():.1f} > "
                f"{ANISOTROPY_LIMIT:g}); salign slices across the coarsest axis, nothing to do "
                "unless the scan should be isotropic",
            )
        )
    if header.dtype.name not in _USUAL_DTYPES:
        problems.append(
            _warning(
                path,
                f"unusual voxel type {header.dtype.name}; re-export as int16 or float32 if "
                "results look wrong",
            )
        )
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        truncation = _nifti_truncation(path, size_bytes)
        problems += [truncation] if truncation else []
    return problems


def _label_value_problems(
    path: Path, array: np.ndarray
) -> tuple[tuple[int, ...] | None, list[Problem]]:
    """The classes present in a label map, or the errors that make it no label map."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            return None, [_error(path, "label map holds NaN or infinite values; re-export it")]
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            return None, [
                _error(
                    path,
                    f"label map holds non-integer values (e.g. {example:g}); labels must be "
                    "whole class numbers: was it resampled with linear interpolation? use "
                    "nearest neighbour",
                )
            ]
    elif array.dtype.kind not in "iub":
        return None, [_error(path, f"label voxel type {array.dtype} is not a number type")]
    if array.size == 0:
        return (), []
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > MAX_LABEL_VALUE:
        return None, [
            _error(
                path,
                f"label values span {low:g}..{high:g}; classes must lie in 0..{MAX_LABEL_VALUE}: "
                "is this an image rather than a label map?",
            )
        ]
    counts = np.bincount(array.ravel().astype(np.intp, copy=False))
    values = tuple(int(v) for v in np.flatnonzero(counts))
    if values == (0,):
        return values, [
            _warning(path, "label map is empty (background only); fix it or remove the label")
        ]
    return values, []


def _label_facts(
    label: Path, image_header: VolumeHeader | None, read_values: bool
) -> tuple[dict[str, Any], list[Problem]]:
    """Hash, values and grid match of a label (voxels decoded only when ``read_values``)."""
    facts: dict[str, Any] = {"label_hash": content_hash(label)}
    problems: list[Problem] = []
    try:
        if read_values:
            volume = read_volume(label)
            shape, affine = volume.shape, volume.affine
            facts["label_values"], problems = _label_value_problems(label, volume.array)
        else:
            header = read_header(label)
            shape, affine = header.spatial_shape, header.affine
    except InputError as error:
        return facts, [Problem("error", label, str(error))]
    if image_header is None:
        return facts, problems
    image_shape = image_header.spatial_shape
    mismatch = None
    if tuple(shape) != tuple(image_shape):
        mismatch = (
            f"label shape {tuple(shape)} differs from its image {image_header.path} "
            f"(shape {tuple(image_shape)}); re-export the label on the image's grid"
        )
    elif not np.allclose(affine, image_header.affine, atol=AFFINE_ATOL_MM):
        offset = float(np.abs(np.asarray(affine) - image_header.affine).max())
        orientations = (orientation_code(affine), image_header.orientation)
        turned = (
            " (orientation {} vs {})".format(*orientations) if len(set(orientations)) > 1 else ""
        )
        mismatch = (
            f"label affine differs from its image {image_header.path} by up to {offset:.3g} "
            f"mm{turned}; re-export the label on the image's grid, or copy the image's header "
            "into it if only the header is wrong"
        )
    facts["label_matches"] = mismatch is None
    return facts, problems + ([_error(label, mismatch)] if mismatch else [])


def _intensity_facts(path: Path) -> tuple[tuple[float, float] | None, list[Problem]]:
    """(min, max) of the finite voxels, and an error when some are NaN/Inf."""
    try:
        volume = read_volume(path)
    except InputError as error:
        return None, [Problem("error", path, str(error))]
    array = volume.array
    problems: list[Problem] = []
    try:
        require_finite(volume)
    except InputError as error:
        problems.append(Problem("error", path, str(error)))
        array = array[np.isfinite(array)]
    if array.size == 0:
        return None, problems
    return (float(array.min()), float(array.max())), problems


def _sampled_facts(path: Path) -> tuple[tuple[float, float] | None, list[Problem]]:
    """(min, max) of the finite voxels of a strided sample (see `sample_voxels`)."""
    try:
        sample = sample_voxels(path)
    except InputError as error:
        return None, [Problem("error", path, str(error))]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if finite.size == 0:
        return None, []
    return (float(finite.min()), float(finite.max())), []


def _has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def _image_facts(
    image: Path, size_bytes: int, checks: tuple[str, ...]
) -> tuple[dict[str, Any], list[Problem], VolumeHeader | None]:
    """Hash, geometry and (with ``"stats"``) intensities of an image; the header if it has a 3D grid."""
    facts: dict[str, Any] = {}
    try:
        header = read_header(image)  # first: it names folders and unreadable files clearly
        facts["content_hash"] = content_hash(image)
        header.spatial_shape  # raises for true 4D  # noqa: B018
    except InputError as error:
        return facts, [Problem("error", image, str(error))], None
    except (OSError, ValueError) as error:  # nibabel's own checks of a damaged header
        return (
            facts,
            [_error(image, f"cannot read this scan ({error}); re-export or re-copy it")],
            None,
        )
    facts.update(
        shape=header.spatial_shape,
        spacing_mm=header.spacing_mm,
        orientation=header.orientation,
        dtype=header.dtype.name,
        dicom_modality=header.dicom_modality,
    )
    problems = _header_problems(header, size_bytes)
    if _has_errors(problems):
        return facts, problems, header
    if "stats" in checks:
        facts["intensity_range"], voxel_problems = _intensity_facts(image)
    else:
        facts["sampled_range"], voxel_problems = _sampled_facts(image)
    return facts, problems + voxel_problems, header


def _read_scan(candidate: _Candidate, checks: tuple[str, ...]) -> ScanRecord:
    """Everything the index records about one image and its label, never raising for bad files.

    ``checks`` may hold ``"labels"`` (decode label voxels: values, integer check) and ``"stats"``
    (decode image voxels: intensity range, NaN/Inf).
    """
    image, label = candidate.image_path, candidate.label_path
    facts: dict[str, Any] = {"checks": checks, "size_bytes": -1, "mtime_ns": -1}
    problems: list[Problem] = []
    try:
        facts["size_bytes"], facts["mtime_ns"] = _fingerprint(image)
        image_facts, problems, header = _image_facts(image, facts["size_bytes"], checks)
        facts.update(image_facts)
    except OSError as error:
        problems.append(_error(image, f"cannot open ({_reason(error)}); fix or remove it"))
        header = None
    if label is not None:
        try:
            facts["label_size_bytes"], facts["label_mtime_ns"] = _fingerprint(label)
            label_facts, label_problems = _label_facts(label, header, "labels" in checks)
            facts.update(label_facts)
            problems += label_problems
        except OSError as error:
            problems.append(
                _error(label, f"cannot open label ({_reason(error)}); fix or remove it")
            )
    return ScanRecord(
        image_path=image,
        label_path=label,
        dataset_root=candidate.dataset_root,
        case_name=candidate.case_name,
        file_problems=tuple(problems),
        **facts,
    )


def _unexpected(candidate: _Candidate, checks: tuple[str, ...], error: Exception) -> ScanRecord:
    """A row for a scan whose reading raised something unforeseen, so the other scans go on."""
    problem = _error(
        candidate.image_path,
        f"unexpected failure while reading it ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}); re-export it, and please report it",
    )
    return ScanRecord(
        image_path=candidate.image_path,
        label_path=candidate.label_path,
        dataset_root=candidate.dataset_root,
        case_name=candidate.case_name,
        size_bytes=-1,
        mtime_ns=-1,
        checks=checks,
        file_problems=(problem,),
    )


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


# ---------------------------------------------------------------------------------------------
# assembling: case ids, modality, problems that need the whole collection


def _distinguishing_prefixes(folders: Sequence[tuple[str, ...]]) -> list[str]:
    """Per path (its folder names, nearest first): the folder names that tell it apart.

    Depths where all share a name are skipped; e.g. ``A/imagesTr`` and ``B/imagesTr`` → ``A``, ``B``.
    """
    chosen: list[list[str]] = [[] for _ in folders]
    for depth in range(max(len(chain) for chain in folders)):
        names = [chain[depth] if depth < len(chain) else "" for chain in folders]
        if len(set(names)) == 1:
            continue
        for parts, name in zip(chosen, names, strict=True):
            parts.insert(0, name)
        if len({tuple(parts) for parts in chosen}) == len(folders):
            break
    return ["_".join(part for part in parts if part) for parts in chosen]


def assign_case_ids(image_paths_and_names: Sequence[tuple[Path, str]]) -> dict[Path, str]:
    """Unique case ids: the case name, prefixed by distinguishing folder names when repeated."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path, name in sorted(image_paths_and_names):
        groups[name].append(path)
    ids: dict[Path, str] = {}
    for name, paths in groups.items():
        if len(paths) == 1:
            ids[paths[0]] = name
            continue
        chains = [tuple(reversed(path.parent.parts[1:])) for path in paths]
        for path, prefix in zip(paths, _distinguishing_prefixes(chains), strict=True):
            ids[path] = f"{prefix}_{name}" if prefix else name
    taken: Counter[str] = Counter()
    for path in sorted(ids):  # last resort (same name, same folder: case.nii.gz and case.nrrd)
        taken[ids[path]] += 1
        if taken[ids[path]] > 1:
            ids[path] = f"{ids[path]}-{taken[ids[path]]}"
    return ids


def guess_modality(
    record: ScanRecord, dataset: DatasetInfo | None, override: Modality | None
) -> tuple[Modality, str]:
    """(modality, where it came from): override > DICOM Modality tag (CT or MR) > dataset.json >
    intensities (the exact range with ``stats``, else a sample's) > "MR"."""
    if override:
        return override, "--modality"
    if record.dicom_modality in ("CT", "MR"):
        return record.dicom_modality, "DICOM"  # type: ignore[return-value]
    if dataset is not None and dataset.modality:
        return dataset.modality, "dataset.json"
    intensities = record.intensity_range or record.sampled_range
    if intensities is not None:
        return ("CT" if intensities[0] < CT_MIN_INTENSITY else "MR"), "intensities"
    return "MR", "default"


def _collection_problems(
    record: ScanRecord, dataset: DatasetInfo | None, first_with_hash: Mapping[str, Path]
) -> list[Problem]:
    problems: list[Problem] = []
    known = set(dataset.label_names) if dataset and dataset.label_names else None
    if known is not None and record.label_values is not None and record.label_path is not None:
        unknown = sorted(set(record.label_values) - known)
        if unknown:
            problems.append(
                _error(
                    record.label_path,
                    f"label values {unknown} are not among dataset.json labels {sorted(known)}; "
                    "fix the label map or add them to dataset.json",
                )
            )
    original = first_with_hash.get(record.content_hash or "")
    if original is not None and original != record.image_path:
        problems.append(
            _warning(
                record.image_path,
                f"same content as {original}; duplicates leak between training and held-out "
                "cases: remove one",
            )
        )
    return problems


def _orientation_note(records: Sequence[ScanRecord], roots: Sequence[Path]) -> list[Problem]:
    counts = Counter(r.orientation for r in records if r.orientation)
    if len(counts) < 2:
        return []
    listing = ", ".join(f"{code}: {n}" for code, n in counts.most_common())
    return [
        _warning(
            roots[0],
            f"scans come in {len(counts)} orientations ({listing}); salign reorients each to RAS "
            "itself, but check that every label was exported in its image's orientation",
        )
    ]


def _default_modality_note(records: Sequence[ScanRecord], roots: Sequence[Path]) -> list[Problem]:
    guessed = sum(1 for r in records if r.modality_source == "default")
    if not guessed:
        return []
    return [
        _warning(
            roots[0],
            f"modality of {guessed} scan(s) assumed MR (no DICOM tag, dataset.json or "
            "readable voxels); pass --modality CT if they are CT",
        )
    ]


def _finish(
    records: Sequence[ScanRecord],
    datasets: Mapping[Path, DatasetInfo],
    modality: Modality | None,
) -> list[ScanRecord]:
    """Attach modality and the problems that depend on other scans or on dataset.json."""
    first_with_hash: dict[str, Path] = {}
    for record in sorted(records, key=lambda r: str(r.image_path)):
        if record.content_hash:
            first_with_hash.setdefault(record.content_hash, record.image_path)
    finished = []
    for record in records:
        dataset = datasets.get(record.dataset_root)
        chosen, source = guess_modality(record, dataset, modality)
        extra = _collection_problems(record, dataset, first_with_hash)
        finished.append(
            replace(
                record,
                modality=chosen,
                modality_source=source,
                problems=record.file_problems + tuple(extra),
            )
        )
    return finished


# ---------------------------------------------------------------------------------------------
# the index database


def _index_path(workspace: Workspace | Path | str | None) -> Path:
    resolved = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    return resolved.index_path


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
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


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (or create) the index; an older schema or a damaged file is rebuilt from scratch.

    Several ``salign index`` processes may write one workspace at once: the journal is WAL (a
    reader never waits for a writer), a writer waits up to `BUSY_TIMEOUT_S` for another to
    finish, and `index_folders` merges its rows with the table as it is *at the moment it
    writes*, inside one write transaction, so no process drops another's rows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError:
        connection.close()
        path.unlink()  # a derived file: everything in it comes back from the scans
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        version = 0
    if version > SCHEMA_VERSION:
        connection.close()
        raise InputError(
            f"{path}: written by a newer salign (index schema {version} > {SCHEMA_VERSION}); "
            "upgrade salign or use another --workspace"
        )
    if version < SCHEMA_VERSION:
        with _write_transaction(connection):
            connection.execute("DROP TABLE IF EXISTS scans")
            connection.execute("DROP TABLE IF EXISTS datasets")
            columns = ", ".join(
                f"{name} TEXT PRIMARY KEY" if name == "image_path" else name for name in _COLUMNS
            )
            connection.execute(f"CREATE TABLE scans ({columns}, UNIQUE (case_id))")
            connection.execute(
                "CREATE TABLE datasets (root TEXT PRIMARY KEY, name TEXT, modality TEXT, "
                "label_names TEXT)"
            )
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return connection


def _row_from_record(record: ScanRecord) -> tuple[Any, ...]:
    payload = record.to_dict()
    return tuple(
        json.dumps(payload[name]) if name in _JSON_COLUMNS else payload[name] for name in _COLUMNS
    )


def _record_from_row(row: Sequence[Any]) -> ScanRecord:
    payload = {
        name: json.loads(value) if name in _JSON_COLUMNS else value
        for name, value in zip(_COLUMNS, row, strict=True)
    }
    return ScanRecord.from_dict(payload)


def _datasets_in(connection: sqlite3.Connection) -> dict[Path, DatasetInfo]:
    rows = connection.execute("SELECT root, name, modality, label_names FROM datasets")
    return {Path(root): _dataset_from_row(root, n, m, labels) for root, n, m, labels in rows}


def _dataset_from_row(
    root: str, name: str | None, modality: str | None, labels: str | None
) -> DatasetInfo:
    names = {int(k): v for k, v in json.loads(labels).items()} if labels else None
    return DatasetInfo(Path(root), name, modality, names)  # type: ignore[arg-type]


@contextlib.contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken at the start, so what is read
    inside is still true when it is written (``ROLLBACK`` on any error)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _stored_records(connection: sqlite3.Connection) -> dict[Path, ScanRecord]:
    return {
        r.image_path: r
        for r in (
            _record_from_row(row)
            for row in connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM scans")
        )
    }


def _save(
    connection: sqlite3.Connection,
    records: Sequence[ScanRecord],
    datasets: Iterable[DatasetInfo],
) -> None:
    """Replace every row (the caller holds a `_write_transaction`; readers never see half an
    index)."""
    placeholders = ", ".join("?" for _ in _COLUMNS)
    connection.execute("DELETE FROM scans")
    connection.execute("DELETE FROM datasets")
    connection.executemany(
        f"INSERT INTO scans ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
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


# ---------------------------------------------------------------------------------------------
# the stage


def default_workers() -> int:
    """Threads for header reads: I/O and zlib release the GIL, so a few per core pay off."""
    return min(16, 4 * (os.cpu_count() or 1))


def _resolve_roots(folders: Sequence[Path | str]) -> list[Path]:
    if not folders:
        raise InputError("no folder given; usage: salign index DIR [DIR...]")
    roots = []
    for folder in folders:
        root = Path(folder).expanduser().resolve()  # one spelling per file, whatever the cwd
        if not root.exists():
            raise InputError(f"{folder}: no such folder; check the path")
        if not root.is_dir():
            raise InputError(f"{folder}: is a file; salign index takes folders: pass its folder")
        roots.append(root)
    return roots


def _needs_reading(old: ScanRecord | None, candidate: _Candidate, checks: tuple[str, ...]) -> str:
    """``"new"``, ``"changed"``, ``"recheck"`` or ``"unchanged"`` for one candidate."""
    if old is None:
        return "new"
    try:
        image_now = _fingerprint(candidate.image_path)
        label_now = _fingerprint(candidate.label_path) if candidate.label_path else (None, None)
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


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


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
    candidates, notes, datasets, skipped_labels = _discover(roots)
    checks = tuple(name for name, wanted in (("labels", check_labels), ("stats", stats)) if wanted)
    index_path = _index_path(workspace)
    connection = _open_for_writing(index_path)
    try:
        old = _stored_records(connection)
        status = {
            c.image_path: _needs_reading(old.get(c.image_path), c, checks) for c in candidates
        }
        to_read = [c for c in candidates if status[c.image_path] != "unchanged"]
        # the slow part (reading headers) runs outside any lock; the merge below re-reads the
        # table under the write lock, so rows another process wrote meanwhile are kept
        fresh = _read_all(to_read, checks, workers or default_workers(), on_progress)
        with _write_transaction(connection):
            stored = _stored_records(connection)
            current = [
                fresh.get(c.image_path) or stored.get(c.image_path) or old[c.image_path]
                for c in candidates
            ]
            seen = {c.image_path for c in candidates}
            kept = [
                r
                for path, r in stored.items()
                if path not in seen and not _under(path, roots) and path.exists()
            ]
            removed = sum(1 for path in stored if path not in seen) - len(kept)
            finished = _finish(current, datasets, override)
            ids = assign_case_ids([(r.image_path, r.case_name) for r in [*finished, *kept]])
            finished = [replace(r, case_id=ids[r.image_path]) for r in finished]
            kept = [replace(r, case_id=ids[r.image_path]) for r in kept]
            kept_roots = {r.dataset_root for r in kept}
            kept_datasets = {
                root: dataset
                for root, dataset in _datasets_in(connection).items()
                if root in kept_roots and (root / "dataset.json").is_file()
            }
            _save(connection, [*finished, *kept], {**kept_datasets, **datasets}.values())
    finally:
        connection.close()
    usable = [r for r in finished if r.is_usable]
    counts = Counter(status.values())
    return IndexResult(
        records=sorted(finished, key=lambda r: r.case_id),
        notes=notes + _orientation_note(usable, roots) + _default_modality_note(usable, roots),
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
    upper = modality.upper()
    if upper not in ("CT", "MR"):
        raise InputError(f"--modality must be CT or MR, got {modality!r}")
    return upper  # type: ignore[return-value]


def _read_all(
    candidates: Sequence[_Candidate],
    checks: tuple[str, ...],
    workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> dict[Path, ScanRecord]:
    """Read scans on a thread pool (no processes: nothing to spawn, nothing to orphan)."""
    results: dict[Path, ScanRecord] = {}
    if not candidates:
        return results
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(_read_scan, candidate, checks): candidate for candidate in candidates
        }
        for done, future in enumerate(as_completed(futures), start=1):
            candidate = futures[future]
            try:
                results[candidate.image_path] = future.result()
            except Exception as error:  # a reader failing in a way nobody foresaw: one bad file
                results[candidate.image_path] = _unexpected(candidate, checks, error)
            if on_progress is not None:
                on_progress(done, len(candidates))
    return results


# ---------------------------------------------------------------------------------------------
# summary for display


@dataclass(frozen=True)
class IndexSummary:
    """Counts and ranges over a set of records (what the CLI's table shows)."""

    scans: int
    labelled: int
    unlabelled: int
    with_errors: int
    shape_range: tuple[tuple[int, ...], tuple[int, ...]] | None  # per-axis min, per-axis max
    spacing_range_mm: tuple[tuple[float, ...], tuple[float, ...]] | None
    orientations: dict[str, int]
    modalities: dict[str, int]  # e.g. {"MR (dataset.json)": 200}
    dtypes: dict[str, int]
    errors: int
    warnings: int


def summarise(records: Sequence[ScanRecord], notes: Sequence[Problem] = ()) -> IndexSummary:
    """Counts over ``records``; shape, spacing, orientation and dtype over the usable ones."""
    usable = usable_scans(records)
    read = [r for r in usable if r.shape is not None and r.spacing_mm is not None]

    def axis_range(values: list[tuple[Any, ...]]) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
        if not values:
            return None
        stacked = np.asarray(values)
        return tuple(stacked.min(0).tolist()), tuple(stacked.max(0).tolist())

    problems = [p for r in records for p in r.problems] + list(notes)
    return IndexSummary(
        scans=len(records),
        labelled=sum(1 for r in usable if r.is_labelled),
        unlabelled=sum(1 for r in usable if not r.is_labelled),
        with_errors=len(records) - len(usable),
        shape_range=axis_range([r.shape for r in read]),  # type: ignore[misc]
        spacing_range_mm=axis_range([r.spacing_mm for r in read]),  # type: ignore[misc]
        orientations=dict(Counter(r.orientation for r in read if r.orientation).most_common()),
        modalities=dict(
            Counter(f"{r.modality} ({r.modality_source})" for r in records).most_common()
        ),
        dtypes=dict(Counter(r.dtype for r in read if r.dtype).most_common()),
        errors=sum(1 for p in problems if p.severity == "error"),
        warnings=sum(1 for p in problems if p.severity == "warning"),
    )
