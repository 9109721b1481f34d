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
# DICOM storage classes: CT Image, MR Image, Secondary Capture (GDCM reads its modality as "OT")
SOP_CLASS_OF = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    None: "1.2.840.10008.5.1.4.1.1.7",
}


def write_dicom_series(
    folder: Path,
    image: sitk.Image | Path,
    *,
    series_uid: str = SERIES_UID,
    modality: str | None = "CT",
    series_number: int = 1,
    file_name: str | None = None,
    frame_of_reference: bool = True,
    spacing_between_slices_tag: float | None = None,
) -> list[Path]:
    """One file per slice ``k`` of ``image`` with the tags a reader needs for the 3D geometry.

    ``image``: a SimpleITK image, or a scan file (read and cast to int16). ImageOrientationPatient
    comes from the image's direction (row cosine = its x axis, column cosine = its y axis),
    ImagePositionPatient from voxel ``(0, 0, k)``. ``file_name`` is formatted with ``uid`` (the
    slice's SOPInstanceUID, dots included) and ``k``: ``"{uid}"`` gives UID-named files,
    ``"IM{k:04d}.IMA"`` Siemens-style ones; by default the names run against the slice order
    (``NNN.dcm``), so a reader must sort by position. ``modality=None`` writes a Secondary
    Capture without a Modality tag. ``frame_of_reference=False`` leaves out the Frame of
    Reference UID (as some exports do); ``spacing_between_slices_tag`` writes that
    SpacingBetweenSlices instead of the true one. Returns the files, slice ``k`` at ``[k]``.
    """
    if not isinstance(image, sitk.Image):
        image = sitk.Cast(sitk.ReadImage(str(image)), sitk.sitkInt16)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # by name: UID-named files have no ending to choose by
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = (*direction[0:9:3], *direction[1:9:3])
    sx, sy, sz = image.GetSpacing()
    depth = image.GetDepth()
    files = []
    for k in range(depth):
        plane = image[:, :, k]
        uid = f"{series_uid}.{k + 1}"
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": SOP_CLASS_OF[modality],  # GDCM derives Modality from it when absent
            "0008|0018": uid,
            "0020|000d": STUDY_UID,
            "0020|000e": series_uid,
            "0020|0011": str(series_number),
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{value:.6f}" for value in position),
            "0020|0037": "\\".join(f"{value:.6f}" for value in orientation),
            "0028|0030": f"{sy}\\{sx}",  # row spacing (y) first, then column spacing (x)
            "0018|0050": str(sz),
        }
        if modality is not None:
            tags["0008|0060"] = modality
        if frame_of_reference:
            tags["0020|0052"] = FRAME_OF_REFERENCE_UID
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        name = f"{depth - k:03d}.dcm" if file_name is None else file_name.format(uid=uid, k=k)
        path = folder / name
        writer.SetFileName(str(path))
        writer.Execute(plane)
        # GDCM writes SpacingBetweenSlices itself, sometimes a stale value from an earlier
        # series read in the same process: set it afterwards, so every run writes the same files
        dataset = pydicom.dcmread(path)
        dataset.SpacingBetweenSlices = spacing_between_slices_tag or sz
        dataset.save_as(path)
        files.append(path)
    return files
