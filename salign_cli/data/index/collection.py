"""What needs the whole collection, not one file: modality, duplicates, labels unknown to
``dataset.json``, mixed orientations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from salign_cli.data.dataset_json import DatasetInfo
from salign_cli.data.index.records import Problem, ScanRecord, error_at, warning_at
from salign_cli.io.modality import CT_AIR_THRESHOLD_HU, MODALITIES, Modality


def guess_modality(
    record: ScanRecord, dataset: DatasetInfo | None, override: Modality | None
) -> tuple[Modality, str]:
    """(modality, where it came from): override > DICOM Modality tag (CT or MR) > dataset.json >
    intensities (the exact range with ``stats``, else a sample's) > "MR"."""
    if override:
        return override, "--modality"
    for known in MODALITIES:
        if record.dicom_modality == known:
            return known, "DICOM"
    if dataset is not None and dataset.modality:
        return dataset.modality, "dataset.json"
    intensities = record.intensity_range or record.sampled_range
    if intensities is not None:
        return ("CT" if intensities[0] < CT_AIR_THRESHOLD_HU else "MR"), "intensities"
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
                error_at(
                    record.label_path,
                    f"label values {unknown} are not among dataset.json labels {sorted(known)}; "
                    "fix the label map or add them to dataset.json",
                )
            )
    original = first_with_hash.get(record.content_hash or "")
    if original is not None and original != record.image_path:
        problems.append(
            warning_at(
                record.image_path,
                f"same content as {original}; duplicates leak between training and held-out "
                "cases: remove one",
            )
        )
    return problems


def orientation_note(records: Sequence[ScanRecord], roots: Sequence[Path]) -> list[Problem]:
    """A warning when usable scans come in several orientations (labels exported wrongly?)."""
    counts = Counter(r.orientation for r in records if r.orientation)
    if len(counts) < 2:
        return []
    listing = ", ".join(f"{code}: {n}" for code, n in counts.most_common())
    return [
        warning_at(
            roots[0],
            f"scans come in {len(counts)} orientations ({listing}); salign reorients each to RAS "
            "itself, but check that every label was exported in its image's orientation",
        )
    ]


def default_modality_note(records: Sequence[ScanRecord], roots: Sequence[Path]) -> list[Problem]:
    """A warning counting scans whose modality nothing told: they were assumed MR."""
    guessed = sum(1 for r in records if r.modality_source == "default")
    if not guessed:
        return []
    return [
        warning_at(
            roots[0],
            f"modality of {guessed} scan(s) assumed MR (no DICOM tag, dataset.json or "
            "readable voxels); pass --modality CT if they are CT",
        )
    ]


def finish_records(
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
