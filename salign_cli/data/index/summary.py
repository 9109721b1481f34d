"""Counts and ranges over indexed scans, for display."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from salign_cli.data.index.queries import usable_scans
from salign_cli.data.index.records import Problem, ScanRecord


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
