"""Finding scans under folders and pairing each image with its label (see the package docstring
for the conventions), and the ``dataset.json`` of each dataset folder."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salign_cli.data.dataset_json import DATASET_JSON, DatasetInfo, read_dataset_json
from salign_cli.data.index.records import Problem, warning_at
from salign_cli.errors import InputError
from salign_cli.io.dicom import dicom_series, is_dicom_file
from salign_cli.io.naming import (
    CHANNEL_NAME,
    DICOM_SUFFIXES,
    SCAN_SUFFIXES,
    case_name,
    is_hidden,
    scan_name,
)
from salign_cli.io.volume import read_header, sample_voxels

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


@dataclass(frozen=True)
class Candidate:
    """A scan found on disk, paired with its label, before any of it is read."""

    image_path: Path
    label_path: Path | None
    case_name: str
    dataset_root: Path


def _may_hold_dicom(folder: Path, filenames: Sequence[str]) -> bool:
    """True for a folder with ``*.dcm``/``*.IMA`` files, or whose first file named like a DICOM
    slice (no extension, or a UID ending in digits: ``1.2.840.1``) has the DICOM magic.

    A cheap filter: only folders it passes are read by GDCM, which opens every file.
    """
    visible = [n for n in filenames if not is_hidden(n) and not n.lower().endswith(SCAN_SUFFIXES)]
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
            if not is_hidden(name) and name.lower().endswith(SCAN_SUFFIXES):
                found[folder].append(folder / name)  # a folder named x.nii.gz: reading says so
            elif not is_hidden(name) and real not in visited:
                visited.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not is_hidden(name) and name.lower().endswith(SCAN_SUFFIXES):
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
                    warning_at(
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
            warning_at(
                orphan,
                "label file with no matching image; name it like its image (MSD labelsTr/, "
                "nnU-Net <case>.nii.gz for <case>_0000.nii.gz, or <image>_seg.nii.gz beside it)",
            )
        )
    return pairs, notes, orphans


def _dataset_info(root: Path) -> tuple[DatasetInfo, list[Problem]]:
    """What ``root/dataset.json`` says; an unreadable one is a warning, not the end of the run."""
    try:
        return read_dataset_json(root), []
    except InputError as error:
        return DatasetInfo(root), [Problem("warning", root / DATASET_JSON, str(error))]


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
        if (candidate / DATASET_JSON).is_file():
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
                    if not is_hidden(entry.name) and entry.name.lower().endswith(SCAN_SUFFIXES)
                )
    return extra


def _walk_root(folder: Path, roots: Sequence[Path]) -> Path:
    """The innermost root that holds ``folder`` (the folder itself when none does)."""
    holding = [root for root in roots if root == folder or root in folder.parents]
    return max(holding, key=lambda root: len(root.parts)) if holding else folder


def discover(
    roots: Sequence[Path],
) -> tuple[list[Candidate], list[Problem], dict[Path, DatasetInfo], list[Path]]:
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
        if dataset_root not in datasets and (dataset_root / DATASET_JSON).is_file():
            datasets[dataset_root], dataset_note = _dataset_info(dataset_root)
            notes += dataset_note
        name = series_names.get(image) or case_name(image)
        candidates.append(Candidate(image, label, name, dataset_root))
    return candidates, notes, datasets, orphans
