"""Choosing among indexed scans: the usable ones, labelled or not, and why others are skipped."""

from __future__ import annotations

from collections.abc import Iterable

from salign_cli.data.index.records import ScanRecord


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
