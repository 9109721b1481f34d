"""File naming rules shared by every command; free of heavy imports so the CLI starts fast."""

from __future__ import annotations

import re
from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# DICOM slices named like this are DICOM without opening them; others (UID-named "1.2.840.x",
# extension-less) are recognised by the "DICM" magic that follows the 128-byte preamble.
DICOM_SUFFIXES = (".dcm", ".ima")
CHANNEL_NAME = re.compile(r"^(?P<base>.+)_(?P<channel>\d{4})$")  # nnU-Net: case_0000
MASK_SUFFIX = "_seg"  # `salign segment` writes <case>_seg.nii.gz beside each input by default


def is_hidden(name: str) -> bool:
    """Dot files: never scans (macOS ``._x.nii.gz`` shadows, salign's ``.x.partial-*`` temporaries)."""
    return name.startswith(".")


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


def case_name(path: Path) -> str:
    """The case a scan belongs to: its name without nnU-Net's ``_0000`` channel suffix, so
    ``imagesTs/case_0000.nii.gz`` is case ``case`` like ``labelsTs/case.nii.gz``.

    Only channel ``0000`` is dropped: a single-channel nnU-Net image always carries it, while
    ``patient_0001``, ``patient_0002`` in an ordinary folder stay distinct cases.

    >>> case_name(Path("Dataset001/imagesTs/hippo_017_0000.nii.gz"))
    'hippo_017'
    >>> case_name(Path("scans/patient_0002.nii.gz"))
    'patient_0002'
    """
    return without_channel(scan_name(path))


def without_channel(name: str) -> str:
    """``name`` without a trailing nnU-Net ``_0000`` (see `case_name`)."""
    match = CHANNEL_NAME.match(name)
    return match["base"] if match and match["channel"] == "0000" else name
