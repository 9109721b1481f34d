"""Tiny synthetic scans for the index tests, and a corpus with one file per kind of problem.

Shared by ``tests/data/test_index.py`` and ``tests/cli/test_index_cli.py`` (importable because
``tests/`` holds the root conftest, like ``hub_server.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nifti import SHAPE, write_nifti


def write_label(path: Path, array: np.ndarray | None = None, **kwargs) -> Path:
    if array is None:
        array = np.zeros(SHAPE, dtype=np.uint8)
        array[2:4, 2:4, 1:3] = 1
    return write_nifti(path, array, **kwargs)


def _truncated_gzip(path: Path) -> Path:
    write_nifti(path, np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "truncated.nii.gz": ("error", "truncated"),
    "text.nii.gz": ("error", "cannot read"),
    "flat.nii.gz": ("error", "2D image"),
    "movie.nii.gz": ("error", "4D image"),
    "shape_seg.nii.gz": ("error", "label shape"),
    "affine_seg.nii.gz": ("error", "label affine"),
    "fraction_seg.nii.gz": ("error", "non-integer"),
    "loop.nii.gz": ("error", "cannot open"),
    "thick.nii.gz": ("warning", "anisotropic"),
    "good_copy.nii.gz": ("warning", "same content as"),
    "blank_seg.nii.gz": ("warning", "empty"),
}


def make_bad_corpus(root: Path) -> Path:
    """One good labelled scan and one file per kind of problem in BAD_INPUTS."""
    write_nifti(root / "good.nii.gz")
    write_label(root / "good_seg.nii.gz")
    _truncated_gzip(root / "truncated.nii.gz")
    (root / "text.nii.gz").write_text("this is not a NIfTI file\n")
    write_nifti(root / "flat.nii.gz", np.zeros((8, 9), np.int16))
    write_nifti(root / "movie.nii.gz", np.zeros((4, 4, 4, 3), np.int16))
    for name in ("shape", "affine", "fraction", "blank"):
        write_nifti(root / f"{name}.nii.gz", np.full(SHAPE, len(name), np.int16))
    write_label(root / "shape_seg.nii.gz", np.zeros((6, 7, 4), np.uint8))
    shifted = np.eye(4)
    shifted[0, 3] = 2.5
    write_label(root / "affine_seg.nii.gz", affine=shifted)
    write_label(root / "fraction_seg.nii.gz", np.full(SHAPE, 0.5, np.float32))
    write_label(root / "blank_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    write_nifti(root / "thick.nii.gz", np.full(SHAPE, 7, np.int16), affine=np.diag([1, 1, 5, 1]))
    (root / "good_copy.nii.gz").write_bytes((root / "good.nii.gz").read_bytes())
    (root / "loop.nii.gz").symlink_to(root / "loop.nii.gz")  # a link to itself
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a folder loop
    return root
