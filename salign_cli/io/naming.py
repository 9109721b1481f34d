"""File naming rules shared by every command; free of heavy imports so the CLI starts fast."""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
MASK_SUFFIX = "_seg"  # `salign segment` writes <case>_seg.nii.gz beside each input by default


def is_scan_path(path: Path) -> bool:
    """True for file names salign reads as scans (NIfTI, NRRD, MHA/MHD)."""
    return path.name.lower().endswith(SCAN_SUFFIXES)


def scan_name(path: Path) -> str:
    """A case name without the scan ending: ``hippocampus_001`` for ``hippocampus_001.nii.gz``."""
    lower = path.name.lower()
    for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name
