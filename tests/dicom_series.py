"""Write a 3D SimpleITK image as a DICOM series, one file per slice, for tests that need one.

Tests import it as ``from dicom_series import write_dicom_series`` (pytest puts ``tests/`` on
the path, as for ``hub_server``).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import SimpleITK as sitk

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1.4242"
SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.424242"
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.2.1125.1.42424242"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom_series(
    folder: Path,
    image: sitk.Image,
    *,
    series_uid: str = SERIES_UID,
    frame_of_reference: bool = True,
    spacing_between_slices_tag: float | None = None,
) -> list[Path]:
    """One file per slice ``k`` of ``image`` with the tags a reader needs for the 3D geometry.

    ImageOrientationPatient comes from the image's direction (row cosine = its x axis, column
    cosine = its y axis), ImagePositionPatient from voxel ``(0, 0, k)``. File names run against
    the slice order, so a reader must sort by position. Returns the files, slice ``k`` at ``[k]``.
    ``frame_of_reference=False`` leaves out the Frame of Reference UID (as some exports do);
    ``spacing_between_slices_tag`` writes that SpacingBetweenSlices instead of the true one.
    """
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = (*direction[0:9:3], *direction[1:9:3])
    sx, sy, sz = image.GetSpacing()
    depth = image.GetDepth()
    files = []
    for k in range(depth):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": CT_IMAGE_STORAGE,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0060": "CT",
            "0020|000d": STUDY_UID,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{value:.6f}" for value in position),
            "0020|0037": "\\".join(f"{value:.6f}" for value in orientation),
            "0028|0030": f"{sy}\\{sx}",  # row spacing (y) first, then column spacing (x)
            "0018|0050": str(sz),
        }
        if frame_of_reference:
            tags["0020|0052"] = FRAME_OF_REFERENCE_UID
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        path = folder / f"{depth - k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(plane)
        # GDCM writes SpacingBetweenSlices itself, sometimes a stale value from an earlier
        # series read in the same process: set it afterwards, so every run writes the same files
        dataset = pydicom.dcmread(path)
        dataset.SpacingBetweenSlices = spacing_between_slices_tag or sz
        dataset.save_as(path)
        files.append(path)
    return files
