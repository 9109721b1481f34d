"""DICOM Segmentation objects (DICOM-SEG) for masks of DICOM series, written with highdicom.

A DICOM-SEG does not carry its own grid: each of its frames points at one source image
(SOP Instance UID) and repeats that image's ImagePositionPatient. So the writer needs the source
series itself, and must hand highdicom one frame per source file in the order of the files.
salign's mask lives on :func:`~salign_cli.io.volume.read_volume`'s grid, voxel order ``(i, j, k)``
= ITK's ``(x, y, z)``: ``i`` runs along a DICOM row (the column index), ``j`` down the rows,
``k`` across slices. A source image's frame is therefore ``labels[:, :, k].T`` (rows first), with
``k`` found from the image's own ImagePositionPatient through the volume's affine — not assumed
from file order — so a mapping that does not fit exactly is refused instead of written shifted.

What a caller can rely on: one SEG file per series, BINARY segments numbered like the bundle's
classes (class ``c`` = segment ``c``, labelled with its class name; background is no segment),
every frame's ImagePositionPatient equal to its source image's, written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from salign_cli import __version__
from salign_cli.errors import InputError
from salign_cli.io.atomic import atomic_path
from salign_cli.io.dicom import series_files
from salign_cli.io.volume import Volume

if TYPE_CHECKING:
    from pydicom import Dataset

SEG_ENDING = ".dcm"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# Any number works; a high one lists the SEG after the scanner's own series in most viewers.
SEG_SERIES_NUMBER = 9000
GRID_TOLERANCE_VOXELS = 1e-2  # how far a source slice may lie off the volume's grid (rounding)
DIRECTION_TOLERANCE = 1e-3  # cosines: ImageOrientationPatient is stored with few decimals
# DICOM's patient axes are LPS; salign's affines are RAS. Flipping x and y converts either way.
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_NOT_A_SERIES_FIX = "use --output-type nifti"


def write_dicom_seg(
    labels: np.ndarray,
    like: Volume,
    path: Path | str,
    *,
    class_names: Sequence[str],
    model_name: str,
    weights_sha256: str | None = None,
) -> Path:
    """Write ``labels`` (on ``like``'s grid) as a DICOM-SEG referencing ``like``'s source series.

    ``like`` must have been read from a DICOM series folder (``like.path``); ``class_names[c]``
    names label value ``c`` (``class_names[0]`` is the background, not stored). The object's
    algorithm identification says salign, its version and ``model_name``. Raises
    :class:`InputError` (nothing written) when the series cannot be referenced: a multi-frame
    source, slices off the volume's grid, or tags highdicom needs (e.g. Frame of Reference UID).

    Example: ``write_dicom_seg(labels, like=read_volume("CT/"), path="CT_seg.dcm",
    class_names=("background", "spleen"), model_name="org/spleen@v1")``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    if like.path is None:
        raise ValueError("like has no path: DICOM-SEG needs the volume's source series folder")
    if tuple(labels.shape) != like.shape:
        raise ValueError(f"labels shape {labels.shape} != volume shape {like.shape}")
    sources = read_source_headers(like.path)
    frames = frames_for_sources(labels, like, sources)
    for source in sources:
        # highdicom copies this tag into the SEG, and some exports get it wrong; without it,
        # highdicom derives the spacing from the positions, which frames_for_sources checked
        source.pop("SpacingBetweenSlices", None)
    parameters = {"model": model_name}
    if weights_sha256:
        parameters["weights_sha256"] = weights_sha256
    algorithm = hd.AlgorithmIdentificationSequence(
        name="salign",
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        parameters=parameters,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            # A bundle's classes are free text, not coded anatomy: the generic "Tissue" pair
            # keeps the object valid, and the label carries the meaning.
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(class_names[1:], start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="salign",
            manufacturer_model_name=model_name[:64],
            software_versions=__version__,
            device_serial_number=(weights_sha256 or "untracked")[:16],
            content_label="SALIGN",
            content_description=f"salign {__version__} segmentation by {model_name}"[:64],
            series_description="salign segmentation",
            # highdicom keeps every frame of an empty mask anyway; saying so avoids its warning
            omit_empty_frames=bool(frames.any()),
        )
    except (ValueError, AttributeError, TypeError) as error:
        raise InputError(
            f"{like.path}: cannot reference this series in a DICOM-SEG ({_one_line(error)}); "
            f"{_NOT_A_SERIES_FIX}"
        ) from None
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    return path


def read_source_headers(folder: Path) -> list[Dataset]:
    """The series' DICOM headers (no pixel data), in the order SimpleITK stacked the slices."""
    import pydicom

    return [pydicom.dcmread(file, stop_before_pixels=True) for file in series_files(folder)]


def frames_for_sources(labels: np.ndarray, like: Volume, sources: Sequence[Dataset]) -> np.ndarray:
    """One ``(Rows, Columns)`` frame per source header, in the sources' order.

    Each source image is located on ``like``'s grid from its own ImagePositionPatient and
    ImageOrientationPatient; it must sit exactly on a slice ``k`` with its first pixel at voxel
    ``(0, 0, k)`` and its rows along voxel axis ``i``. Anything else raises :class:`InputError`.
    """
    voxel_from_ras = np.linalg.inv(np.asarray(like.affine, dtype=np.float64))
    spacing = np.linalg.norm(like.affine[:3, :3], axis=0)
    row_axis, column_axis = like.affine[:3, 0] / spacing[0], like.affine[:3, 1] / spacing[1]
    frames = np.empty((len(sources), like.shape[1], like.shape[0]), dtype=labels.dtype)
    slice_indices = []
    for index, source in enumerate(sources):
        where = f"{like.path}: {Path(source.filename).name}" if source.filename else like.path
        if int(source.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"{where}: multi-frame source images are not supported for DICOM-SEG; "
                f"{_NOT_A_SERIES_FIX}"
            )
        try:
            size = (int(source.Rows), int(source.Columns))
            orientation = np.asarray(source.ImageOrientationPatient, dtype=np.float64)
            position = np.asarray(source.ImagePositionPatient, dtype=np.float64) * _LPS_TO_RAS
        except AttributeError as error:
            raise InputError(
                f"{where}: cannot place this image ({_one_line(error)}); {_NOT_A_SERIES_FIX}"
            ) from None
        if size != (like.shape[1], like.shape[0]):
            raise InputError(
                f"{where}: {size[0]}x{size[1]} pixels, but the series volume is "
                f"{like.shape[1]}x{like.shape[0]}; {_NOT_A_SERIES_FIX}"
            )
        voxel = (voxel_from_ras @ np.append(position, 1.0))[:3]
        slice_index = round(float(voxel[2]))
        on_grid = np.allclose(voxel, [0.0, 0.0, slice_index], atol=GRID_TOLERANCE_VOXELS)
        aligned = np.allclose(
            orientation[:3] * _LPS_TO_RAS, row_axis, atol=DIRECTION_TOLERANCE
        ) and np.allclose(orientation[3:] * _LPS_TO_RAS, column_axis, atol=DIRECTION_TOLERANCE)
        if not (on_grid and aligned and 0 <= slice_index < like.shape[2]):
            raise InputError(
                f"{where}: this image does not lie on a slice of the series volume (tilted or "
                f"unevenly spaced slices?), so a DICOM-SEG would misplace it; {_NOT_A_SERIES_FIX}"
            )
        frames[index] = labels[:, :, slice_index].T
        slice_indices.append(slice_index)
    if sorted(slice_indices) != list(range(like.shape[2])):
        raise InputError(
            f"{like.path}: its images do not cover each slice of the volume once (repeated "
            f"positions?), so a DICOM-SEG would leave slices out; {_NOT_A_SERIES_FIX}"
        )
    return frames


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def dicom_seg_problem(path: Path, series_folder: Path) -> str | None:
    """Why the SEG at ``path`` is not a complete one for ``series_folder`` (``None``: it is).

    Reads the whole file (a truncated one fails) and checks that it is a Segmentation of the
    series' size that references the series. Used to trust an existing output and to verify
    a fresh one.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        seg = pydicom.dcmread(path)
        first_file = series_files(series_folder)[0]
        source = pydicom.dcmread(first_file, stop_before_pixels=True)
        if seg.SOPClassUID != SEGMENTATION_STORAGE:
            return f"not a DICOM Segmentation (SOP class {seg.SOPClassUID})"
        referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
        if source.SeriesInstanceUID not in referenced:
            return f"references series {sorted(referenced)}, not {source.SeriesInstanceUID}"
        if (seg.Rows, seg.Columns) != (source.Rows, source.Columns):
            return f"frames of {seg.Rows}x{seg.Columns}, not the series' {source.Rows}x{source.Columns}"
        bits = int(seg.NumberOfFrames) * int(seg.Rows) * int(seg.Columns) * seg.BitsAllocated
        if len(seg.PixelData) * 8 < bits:
            return "pixel data is shorter than its frames (truncated file)"
    except (OSError, ValueError, AttributeError, KeyError, InvalidDicomError, InputError) as error:
        return f"unreadable ({error})"
    return None
