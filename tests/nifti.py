"""The one NIfTI writer of the tests: a small image on a chosen grid, parent folders made.

A plain module rather than conftest fixtures: test files import it by name (``tests/`` is on the
path, as for ``hub_server.py``), and two conftests exporting helpers would shadow each other
under ``from conftest import``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (6, 7, 5)


def write_nifti(
    path: Path, array: np.ndarray | None = None, affine: np.ndarray | None = None
) -> Path:
    """Save ``array`` (default: an int16 ramp of `SHAPE`) with ``affine`` (default: 1 mm RAS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path
