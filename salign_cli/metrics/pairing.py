"""Prediction files paired with reference (label) files by case name: :func:`match_cases`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from salign_cli.errors import InputError
from salign_cli.io.naming import MASK_SUFFIX, case_name, is_scan_path, scan_name, without_channel


@dataclass(frozen=True)
class CasePair:
    case: str
    prediction: Path
    reference: Path


@dataclass(frozen=True)
class CaseMatch:
    """Predictions paired with references by case name, and what was left over."""

    pairs: tuple[CasePair, ...]
    unmatched_predictions: tuple[Path, ...]
    unmatched_references: tuple[Path, ...]


def _scan_files(folder: Path) -> list[Path]:
    """Scan files directly in ``folder`` (hidden and partial files skipped), sorted by name."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and is_scan_path(path) and not path.name.startswith(".")
    )


def _by_case(files: Iterable[Path], case_of: Callable[[Path], str], what: str) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for path in files:
        case = case_of(path)
        if case in cases:
            raise InputError(
                f"{path}: a second {what} for case {case!r} (also {cases[case].name}); "
                "keep one file per case"
            )
        cases[case] = path
    return cases


def reference_files(folder: Path) -> dict[str, Path]:
    """Label files directly in ``folder`` by case name (``scan_name``: ``case.nii.gz`` →
    ``case``); `InputError` for a missing folder, one without label files, or a case twice."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give the folder of reference label files")
    references = _by_case(_scan_files(folder), scan_name, "label file")
    if not references:
        raise InputError(f"{folder}: no label files (.nii.gz, .nrrd, .mha) in this folder")
    return references


def match_cases(pred: Path, labels: Path) -> CaseMatch:
    """Pair prediction and label files by case name (``scan_name``).

    Two folders: a prediction ``<case>.nii.gz`` or ``<case>_seg.nii.gz`` (``salign segment``'s
    default name; ``<case>_0000`` as nnU-Net names inputs is the same case) matches the label
    ``<case>.nii.gz``; where both ``<case>`` and ``<case>_seg``
    are there (masks written beside their inputs), the mask is the prediction. Two files: paired
    as given.
    """
    for path in (pred, labels):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; check the path")
    if pred.is_file() and labels.is_file():
        return CaseMatch((CasePair(scan_name(labels), pred, labels),), (), ())
    if not (pred.is_dir() and labels.is_dir()):
        raise InputError(f"{pred} and {labels}: give two folders or two files, not one of each")
    references = reference_files(labels)

    def reference_case(path: Path) -> str:
        name = scan_name(path)
        if name in references:
            return name
        if name.endswith(MASK_SUFFIX):
            name = name[: -len(MASK_SUFFIX)]
        return without_channel(name)  # nnU-Net inputs: case_0000 → case

    candidates = _scan_files(pred)
    names = {scan_name(path) for path in candidates}
    # an input with its mask beside it (segment's default layout): the mask is the prediction
    predictions = _by_case(
        (path for path in candidates if case_name(path) + MASK_SUFFIX not in names),
        reference_case,
        "prediction",
    )
    pairs = tuple(
        CasePair(case, predictions[case], references[case])
        for case in sorted(references.keys() & predictions.keys())
    )
    if not pairs:
        example = next(iter(references))
        raise InputError(
            f"{pred}: no prediction matches a label file in {labels} by case name (expected e.g. "
            f"{example}.nii.gz or {example}{MASK_SUFFIX}.nii.gz); check the two folders"
        )
    return CaseMatch(
        pairs,
        tuple(path for case, path in predictions.items() if case not in references),
        tuple(path for case, path in references.items() if case not in predictions),
    )
