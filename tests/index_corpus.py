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


# DICOM storage classes: CT Image, MR Image, Secondary Capture
SOP_CLASS_OF = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    None: "1.2.840.10008.5.1.4.1.1.7",
}


def write_dicom_series(
    source: Path,
    folder: Path,
    *,
    series_uid: str,
    file_name: str = "{uid}",
    modality: str | None = None,
    series_number: int = 1,
) -> list[Path]:
    """Write a NIfTI scan as a DICOM series (int16, one file per slice along its third axis).

    ``file_name`` is formatted with ``uid`` (the slice's SOPInstanceUID, dots included) and
    ``k`` (its index): ``"{uid}"`` gives UID-named files, ``"IM{k:04d}.IMA"`` Siemens-style ones.
    With ``modality=None`` the series is Secondary Capture, which GDCM tags "OT" (other).
    """
    import SimpleITK as sitk

    image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkInt16)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # by name: UID-named files have no ending to choose by
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()  # row-major 3x3; columns are the voxel axes' directions (LPS)
    orientation = "\\".join(f"{v:g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    sx, sy, _ = image.GetSpacing()
    written = []
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        uid = f"{series_uid}.{k + 1}"
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": SOP_CLASS_OF[modality],  # GDCM derives Modality from it when absent
            "0008|0018": uid,
            "0020|000d": f"{series_uid}.0",
            "0020|000e": series_uid,
            "0020|0011": str(series_number),
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0028|0030": f"{sy}\\{sx}",
        }
        if modality is not None:
            tags["0008|0060"] = modality
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        path = folder / file_name.format(uid=uid, k=k)
        writer.SetFileName(str(path))
        writer.Execute(plane)
        written.append(path)
    return written
