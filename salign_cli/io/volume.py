"""Read and write scans with their exact geometry; the one place where orientation changes happen.

Conventions every caller can rely on:

- :class:`Volume` ``.array`` is always 3D ``(i, j, k)`` in the file's own voxel order (nibabel's
  convention; ITK images are transposed from ``(z, y, x)``), and ``.affine`` maps voxel indices to
  RAS+ world millimetres. ``.stored_shape`` keeps what the file declared (2D, or 4D with one
  frame), so a mask written with :func:`write_labels` has exactly the input's shape.
- :func:`to_canonical` permutes/flips the voxel axes to the closest RAS orientation (exact: no
  interpolation), and :func:`from_canonical` undoes it. Nothing else in salign reorients.
- Every write is atomic (temp file beside the target, then rename).
- One "same grid?" rule (:func:`same_grid`) and one label type rule (:func:`label_dtype`).

Why one module of about 800 lines (over the house's 600): reading and writing share the NIfTI
and ITK header helpers that make geometry round-trip exactly; split apart, the orientation code
would live in two places. Finding DICOM series lives in :mod:`salign_cli.io.dicom`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations

from salign_cli.errors import InputError
from salign_cli.io.atomic import atomic_path
from salign_cli.io.dicom import MODALITY_TAG, is_dicom_file, is_dicom_folder, series_files
from salign_cli.io.naming import (
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    SCAN_SUFFIXES,
    scan_name,
)

# Mask endings: single-file formats only (.mhd/.nhdr keep voxels in a second file, which one
# atomic rename cannot publish).
LABEL_SUFFIXES = (*NIFTI_SUFFIXES, ".nrrd", ".mha")
MAX_VOXELS = 2**31  # refuse to allocate more than this; real CT tops out near 1e9 voxels

# ITK's physical space is LPS; NIfTI's affine is RAS. Flipping x and y converts either way.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# Two grids are one when every affine entry agrees within this (mm): float32 headers round-trip
# to about 1e-5 mm and tools that rewrite a label's header drift by about 1e-4 mm, while a real
# misregistration is a sizeable fraction of a voxel (0.1 mm and up). One number for every
# "same grid?" question: label vs image, prediction vs reference, mask vs input.
GRID_ATOL_MM = 1e-3
MAX_LABEL_VALUE = 65535  # labels are written as uint8, or uint16 beyond 255
PROBABILITY_LEVELS = 65535  # stored probabilities are uint16 steps of 1/65535
SAMPLE_PER_AXIS = 32  # sample_voxels keeps at most this many voxels along each axis
# NIfTI voxel data up to this size is decoded whole and strided in memory: nibabel's strided
# proxy reads cost more than a whole read for small gzip files (measured 7-34 ms vs 1-9 ms on
# the fixtures), while for large ones they bound memory to the sample.
_SAMPLE_WHOLE_BYTES = 8 << 20


@dataclass(frozen=True)
class ItkGeometry:
    """An ITK image's geometry exactly as read, so ITK formats are written back bit-identical."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class VolumeHeader:
    """What a scan's header says, read without touching voxel data."""

    path: Path
    shape: tuple[int, ...]  # as stored (may be 2D or 4D)
    affine: np.ndarray
    dtype: np.dtype
    dicom_modality: str | None = None  # the DICOM Modality tag as written (e.g. "CT"), if any

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return spatial_shape_of(self.shape, self.path)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    @property
    def orientation(self) -> str:
        return orientation_code(self.affine)


@dataclass(frozen=True, eq=False)
class Volume:
    """A scan's voxels (3D, file voxel order) plus everything needed to write a mask back exactly."""

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    stored_shape: tuple[int, ...] | None = None
    nifti_header: nib.Nifti1Header | None = field(default=None, repr=False)
    itk_geometry: ItkGeometry | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        height_width_depth = self.array.shape
        return (int(height_width_depth[0]), int(height_width_depth[1]), int(height_width_depth[2]))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    @property
    def orientation(self) -> str:
        return orientation_code(self.affine)

    @property
    def name(self) -> str:
        return scan_name(self.path) if self.path else "<memory>"

    @property
    def location(self) -> str:
        """What messages call this volume: its file, or ``<memory>`` for an in-memory image."""
        return str(self.path) if self.path else "<memory>"


@dataclass(frozen=True, eq=False)
class CanonicalVolume:
    """A volume with voxel axes permuted/flipped to the closest RAS orientation."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)


# ---------------------------------------------------------------------------------------------
# geometry helpers (pure functions)


def same_grid(a: Volume | VolumeHeader, b: Volume | VolumeHeader) -> bool:
    """True when ``a`` and ``b`` put their voxels at the same places: the same 3D voxel grid and
    affines that agree within `GRID_ATOL_MM` in every entry (no relative slack).

    Orientation is part of the affine: the same voxels stored LPS and RAS are different grids,
    because one array would need flipping to overlay the other.

    Example: ``same_grid(read_header("ct.nii.gz"), read_volume("ct_seg.nii.gz"))``.
    """
    return grid_shape(a) == grid_shape(b) and bool(
        np.allclose(a.affine, b.affine, rtol=0.0, atol=GRID_ATOL_MM)
    )


def grid_shape(grid: Volume | VolumeHeader) -> tuple[int, int, int]:
    return grid.spatial_shape if isinstance(grid, VolumeHeader) else grid.shape


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each voxel axis: the norms of the affine's first three columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def orientation_code(affine: np.ndarray) -> str:
    """Closest axis codes, e.g. ``"RAS"`` or ``"LPS"``."""
    return "".join(code or "?" for code in nib.aff2axcodes(affine))


def spatial_shape_of(stored_shape: tuple[int, ...], path: Path | None) -> tuple[int, int, int]:
    """The 3D grid of a stored shape: 2D images get one slice; 4D with one frame is squeezed.

    Raises :class:`InputError` for true 4D data (several frames) and for >4D or <2D arrays.
    """
    where = path or "<memory>"
    if len(stored_shape) == 2:
        return (stored_shape[0], stored_shape[1], 1)
    if len(stored_shape) == 3:
        return tuple(stored_shape)  # type: ignore[return-value]
    if len(stored_shape) >= 4 and all(size == 1 for size in stored_shape[3:]):
        return tuple(stored_shape[:3])  # type: ignore[return-value]
    if len(stored_shape) >= 4:
        raise InputError(
            f"{where}: 4D image with {int(np.prod(stored_shape[3:]))} frames (shape "
            f"{tuple(stored_shape)}); salign segments 3D scans: split it into 3D files first"
        )
    raise InputError(
        f"{where}: {len(stored_shape)}D data (shape {tuple(stored_shape)}) is not a scan"
    )


# ---------------------------------------------------------------------------------------------
# reading


def _unreadable(path: Path | str, reason: object) -> InputError:
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    # ITK stacks its messages outermost first (a C++ source location); the last line is the cause.
    text = lines[-1] if lines else type(reason).__name__
    return InputError(
        f"{path}: cannot read this scan ({text}); check that it is a complete NIfTI, NRRD, "
        "MHA/MHD file or DICOM series folder, and re-export or re-copy it"
    )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if path.is_dir() and path.name.lower().endswith(SCAN_SUFFIXES):
        raise InputError(f"{path}: is a folder, not a scan file; point salign at the file inside")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes); re-copy or re-export the scan")
    if not os.access(path, os.R_OK):
        raise InputError(
            f"{path}: permission denied; make it readable for this user (chmod/chown) "
            "or run salign as a user who may read it"
        )


def _check_size(path: Path | str, shape: tuple[int, ...]) -> None:
    voxels = int(np.prod([max(int(s), 0) for s in shape], dtype=np.float64))
    if voxels <= 0 or voxels > MAX_VOXELS:
        raise InputError(
            f"{path}: header declares shape {tuple(shape)} ({voxels} voxels), which is empty or "
            "implausibly large; the header is probably corrupt: re-copy or re-export the scan"
        )


def read_header(path: Path | str) -> VolumeHeader:
    """Read only a scan's header: shape, affine, dtype and, for DICOM, the Modality tag.

    No NIfTI/NRRD/MHA voxel data is decoded.
    """
    path = Path(path)
    _check_path(path)
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            image = _load_nifti(path)
            dtype = working_dtype(image.get_data_dtype(), scaled=_is_scaled(image))
            _check_size(path, tuple(image.shape))
            return VolumeHeader(path, tuple(image.shape), image.affine.copy(), dtype)
        reader = _itk_reader(path)
        reader.ReadImageInformation()
        itk_shape = tuple(int(s) for s in reader.GetSize())
        _check_size(path, itk_shape)
        geometry = ItkGeometry(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection())
        import SimpleITK as sitk

        stored_dtype = sitk.GetArrayViewFromImage(
            sitk.Image([1] * len(itk_shape), reader.GetPixelID())
        ).dtype
        modality = (
            reader.GetMetaData(MODALITY_TAG).strip() if reader.HasMetaDataKey(MODALITY_TAG) else ""
        )
        return VolumeHeader(
            path, itk_shape, _itk_affine(geometry), working_dtype(stored_dtype), modality or None
        )
    except InputError:
        raise
    except Exception as error:
        raise _unreadable(path, error) from error


def _itk_reader(path: Path) -> Any:
    import SimpleITK as sitk

    if is_dicom_folder(path) or is_dicom_file(path):
        files = [str(file) for file in series_files(path)]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return _SeriesInfoAdapter(reader, files)
    file_reader = sitk.ImageFileReader()
    file_reader.SetFileName(str(path))
    return file_reader


class _SeriesInfoAdapter:
    """Gives a DICOM series reader the ImageFileReader methods read_header needs."""

    def __init__(self, series_reader: Any, files: list[str]) -> None:
        import SimpleITK as sitk

        self._series_reader = series_reader
        self._first = sitk.ImageFileReader()
        self._first.SetFileName(files[0])
        self._count = len(files)

    def ReadImageInformation(self) -> None:
        self._first.ReadImageInformation()

    def GetSize(self) -> Any:
        size = list(self._first.GetSize())
        return (*size[:2], self._count)

    def GetOrigin(self) -> Any:
        return self.Execute().GetOrigin()

    def GetSpacing(self) -> Any:
        return self.Execute().GetSpacing()

    def GetDirection(self) -> Any:
        return self.Execute().GetDirection()

    def GetPixelID(self) -> Any:
        return self._first.GetPixelID()

    def HasMetaDataKey(self, key: str) -> bool:
        return bool(self._first.HasMetaDataKey(key))

    def GetMetaData(self, key: str) -> str:
        return str(self._first.GetMetaData(key))

    def Execute(self) -> Any:
        if not hasattr(self, "_image"):
            self._image = self._series_reader.Execute()
        return self._image


def _resized_square(matrix: np.ndarray, size: int) -> np.ndarray:
    """``matrix``'s top-left block inside an identity of ``size``: ITK 2D/4D <-> 3D geometry."""
    resized = np.eye(size)
    shared = min(size, len(matrix))
    resized[:shared, :shared] = np.asarray(matrix, dtype=np.float64)[:shared, :shared]
    return resized


def _resized_vector(values: Sequence[float] | np.ndarray, size: int, *, fill: float) -> np.ndarray:
    resized = np.full(size, fill)
    shared = min(size, len(values))
    resized[:shared] = np.asarray(values, dtype=np.float64)[:shared]
    return resized


def _itk_affine(geometry: ItkGeometry) -> np.ndarray:
    """RAS affine of an ITK (LPS) image whose array is transposed to (x, y, z) voxel order.

    2D images get a third axis of 1 mm along the slice normal; 4D images (one frame) keep only
    their spatial 3x3 block.
    """
    dim = len(geometry.spacing)
    direction = _resized_square(np.reshape(geometry.direction, (dim, dim)), 3)
    spacing = _resized_vector(geometry.spacing, 3, fill=1.0)
    origin = _resized_vector(geometry.origin, 3, fill=0.0)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def read_volume(path: Path | str) -> Volume:
    """Read a scan (NIfTI via nibabel; NRRD/MHA/MHD/DICOM via SimpleITK) with its geometry.

    A DICOM scan is a folder holding one series, or one file of a series (see `series_files`).

    Raises :class:`InputError` naming the file for anything unreadable: missing, empty, truncated,
    not a scan, 4D with several frames, or a header declaring an implausible size. Scaled NIfTI
    data (scl_slope) and float64 come back as float32; unscaled integers keep their dtype.
    """
    path = Path(path)
    _check_path(path)
    if is_dicom_folder(path) or path.name.lower().endswith(ITK_SUFFIXES) or is_dicom_file(path):
        return _read_itk(path)
    return _read_nifti(path)


def working_dtype(stored: np.dtype, *, scaled: bool = False) -> np.dtype:
    """The dtype :func:`read_volume` returns for voxels stored as ``stored``.

    Floats and scaled integers (NIfTI scl_slope/scl_inter) become float32; unscaled integers
    keep their type. Byte order becomes native, because torch refuses big-endian arrays.
    """
    stored = np.dtype(stored)
    if scaled or stored.kind == "f":
        return np.dtype(np.float32)
    native: np.dtype = stored.newbyteorder("=")
    return native


def _load_nifti(path: Path) -> Any:
    """``nib.load`` for a NIfTI path; ``Any`` because nibabel types its result as the base
    ``FileBasedImage``, which lacks the NIfTI members (shape, affine, dataobj) used here."""
    return nib.load(path)


def _is_scaled(image: Any) -> bool:
    """True when nibabel will apply scl_slope/scl_inter (it skips the 1/0 and NaN cases)."""
    return float(image.dataobj.slope) != 1.0 or float(image.dataobj.inter) != 0.0


def _as_working_dtype(array: np.ndarray) -> np.ndarray:
    return array.astype(working_dtype(array.dtype), copy=False)


def _read_nifti(path: Path) -> Volume:
    try:
        image = nib.load(path)
    except Exception as error:
        raise _unreadable(path, error) from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise _unreadable(path, f"{type(image).__name__} is not NIfTI")
    return volume_from_image(image, path=path)


def volume_from_image(image: nib.spatialimages.SpatialImage, path: Path | None = None) -> Volume:
    """A :class:`Volume` of an in-memory nibabel image (what ``nib.load`` returns, or one built
    in a notebook), with the same checks and dtypes as :func:`read_volume`.

    A NIfTI image keeps its header, so :func:`labels_image` gives back its qform/sform codes;
    other nibabel images (MGH, ...) keep their affine. ``path`` (default: the image's own file,
    if any) only names the volume in messages.

    >>> volume_from_image(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4))).shape
    (4, 5, 6)
    """
    filename = image.get_filename()
    if path is None and filename:
        path = Path(filename)
    where = path or "<memory>"
    stored_shape = tuple(int(s) for s in image.shape)
    _check_size(where, stored_shape)
    spatial = spatial_shape_of(stored_shape, path)
    try:
        array = np.asarray(image.dataobj)
    except Exception as error:
        raise _unreadable(where, error) from error
    header = image.header
    return Volume(
        array=_as_working_dtype(array).reshape(spatial),
        affine=np.asarray(image.affine, dtype=np.float64).copy(),
        path=path,
        stored_shape=stored_shape,
        nifti_header=header.copy() if isinstance(header, nib.Nifti1Header) else None,
    )


def volume_from_array(array: np.ndarray, affine: np.ndarray | None) -> Volume:
    """A :class:`Volume` of a bare voxel array in nibabel's ``(i, j, k)`` order and its voxel →
    RAS mm ``affine``: what a NIfTI file would hold, without the file.

    Raises :class:`InputError` (one line, with the fix) for a non-numeric or true 4D array and for
    an affine that is not a finite, invertible 4x4 matrix.

    >>> volume_from_array(np.zeros((4, 5)), np.diag([2.0, 2.0, 3.0, 1.0])).spacing_mm
    (2.0, 2.0, 3.0)
    """
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = f"a {array.dtype} array" if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(
            f"<memory>: expected a numeric numpy array of voxels, got {kind}; "
            "convert it with np.asarray(..., dtype=np.float32)"
        )
    matrix = np.asarray(affine, dtype=np.float64) if affine is not None else None
    if (
        matrix is None
        or matrix.shape != (4, 4)
        or not np.isfinite(matrix).all()
        or abs(np.linalg.det(matrix[:3, :3])) < 1e-12
    ):
        raise InputError(
            "<memory>: affine must be a finite, invertible 4x4 voxel-to-RAS-mm matrix, got "
            f"{'none' if affine is None else np.shape(affine)}; pass the scan's affine "
            "(e.g. nib.load(path).affine)"
        )
    stored_shape = tuple(int(s) for s in array.shape)
    spatial = spatial_shape_of(stored_shape, None)
    _check_size("<memory>", stored_shape)
    voxels = array.astype(np.uint8) if array.dtype.kind == "b" else _as_working_dtype(array)
    return Volume(array=voxels.reshape(spatial), affine=matrix.copy(), stored_shape=stored_shape)


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        reader = _itk_reader(path)
        image = reader.Execute()
    except InputError:
        raise
    except Exception as error:
        raise _unreadable(path, error) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: multi-component (e.g. RGB/vector) image; salign needs a grey-scale scan"
        )
    itk_shape = tuple(int(s) for s in image.GetSize())
    _check_size(path, itk_shape)
    spatial = spatial_shape_of(itk_shape, path)
    array = sitk.GetArrayFromImage(image)  # (z, y, x) for 3D
    array = np.ascontiguousarray(array.transpose(tuple(reversed(range(array.ndim)))))
    geometry = ItkGeometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return Volume(
        array=_as_working_dtype(array).reshape(spatial),
        affine=_itk_affine(geometry),
        path=path,
        stored_shape=itk_shape,
        itk_geometry=geometry,
    )


def sample_voxels(path: Path | str, per_axis: int = SAMPLE_PER_AXIS) -> np.ndarray:
    """A strided sample of a scan's voxels: at most ``per_axis`` evenly spaced along each axis.

    Enough to tell CT (air near -1000 HU) from MR, or a label map (few whole values) from an
    image, at a fraction of a whole read: a large NIfTI is sliced through nibabel's proxy (an
    uncompressed one through a memory map), a DICOM series reads only ``per_axis`` of its slice
    files. Other ITK formats (NRRD, MHA) are read whole, then strided. Values are scaled like
    :func:`read_volume`'s (NIfTI scl_slope, DICOM rescale); the result is 3D, in file voxel order.
    """
    path = Path(path)
    _check_path(path)
    lower = path.name.lower()
    try:
        if lower.endswith(NIFTI_SUFFIXES):
            return _sample_nifti(path, per_axis)
        if is_dicom_folder(path) or is_dicom_file(path):
            return _sample_dicom(path, per_axis)
    except InputError:
        raise
    except Exception as error:
        raise _unreadable(path, error) from error
    array = read_volume(path).array
    return array[tuple(slice(None, None, _stride(n, per_axis)) for n in array.shape)]


def _stride(length: int, per_axis: int) -> int:
    return max(1, -(-length // per_axis))  # ceil: at most per_axis samples


def _sample_nifti(path: Path, per_axis: int) -> np.ndarray:
    image = _load_nifti(path)
    spatial = spatial_shape_of(tuple(int(s) for s in image.shape), path)
    strided = tuple(slice(None, None, _stride(n, per_axis)) for n in spatial)
    stored_ndim = len(image.shape)
    if stored_ndim == 2:
        strided = strided[:2]
    index = strided + (0,) * max(0, stored_ndim - 3)
    voxel_bytes = int(np.prod(image.shape)) * image.get_data_dtype().itemsize
    if voxel_bytes <= _SAMPLE_WHOLE_BYTES:
        sample = np.asarray(image.dataobj)[index]
    else:
        sample = np.asarray(image.dataobj[index])
    return sample.reshape(sample.shape + (1,) * (3 - sample.ndim))


def _sample_dicom(path: Path, per_axis: int) -> np.ndarray:
    import SimpleITK as sitk

    files = series_files(path)
    chosen = sorted(
        set(np.linspace(0, len(files) - 1, min(per_axis, len(files))).round().astype(int))
    )
    planes = []
    for position in chosen:
        plane = sitk.GetArrayFromImage(sitk.ReadImage(str(files[position])))  # (1, y, x) or (y, x)
        plane = plane.reshape(plane.shape[-2:]).T  # file voxel order (x, y)
        planes.append(
            plane[:: _stride(plane.shape[0], per_axis), :: _stride(plane.shape[1], per_axis)]
        )
    return np.stack(planes, axis=-1)


# ---------------------------------------------------------------------------------------------
# orientation


def _canonical_transform(affine: np.ndarray) -> np.ndarray:
    transform: np.ndarray = orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.axcodes2ornt("RAS")
    )
    return transform


def to_canonical(volume: Volume) -> CanonicalVolume:
    """Permute/flip voxel axes to the closest RAS orientation (no interpolation; exact)."""
    transform = _canonical_transform(volume.affine)
    array = orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ orientations.inv_ornt_aff(transform, volume.array.shape)
    return CanonicalVolume(array=np.ascontiguousarray(array), affine=affine)


def canonical_grid(
    volume: Volume | VolumeHeader,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The voxel shape and spacing (mm) :func:`to_canonical` gives ``volume``, from the header
    alone: reorienting only permutes and flips axes, so no voxel needs moving to know them."""
    shape, spacing = [0, 0, 0], [0.0, 0.0, 0.0]
    stored = grid_shape(volume)
    for axis, (target, _flip) in enumerate(_canonical_transform(volume.affine)):
        shape[int(target)] = stored[axis]
        spacing[int(target)] = volume.spacing_mm[axis]
    return (shape[0], shape[1], shape[2]), (spacing[0], spacing[1], spacing[2])


def from_canonical(canonical_array: np.ndarray, volume: Volume) -> np.ndarray:
    """Bring an array on ``volume``'s canonical grid back to ``volume``'s own voxel order.

    Extra trailing axes (e.g. class channels) are carried along untouched.
    """
    back = orientations.ornt_transform(
        orientations.axcodes2ornt("RAS"), orientations.io_orientation(volume.affine)
    )
    restored = orientations.apply_orientation(canonical_array, back)
    if restored.shape[:3] != volume.shape:
        raise ValueError(f"array shape {canonical_array.shape} does not fit volume {volume.shape}")
    return np.ascontiguousarray(restored)


# ---------------------------------------------------------------------------------------------
# writing


def label_dtype(highest_label: int) -> np.dtype:
    """The type labels up to ``highest_label`` are stored in: uint8 up to 255, else uint16.

    The one rule for masks, cached labels and predictions alike. Example: ``label_dtype(2)``
    is uint8, ``label_dtype(300)`` uint16; above `MAX_LABEL_VALUE` is a ``ValueError``.
    """
    if not 0 <= highest_label <= MAX_LABEL_VALUE:
        raise ValueError(f"label values must lie in 0..{MAX_LABEL_VALUE}, got {highest_label}")
    return np.dtype(np.uint8) if highest_label <= np.iinfo(np.uint8).max else np.dtype(np.uint16)


def _as_label_data(labels: np.ndarray) -> np.ndarray:
    """Labels in their `label_dtype`; negative labels are a bug upstream."""
    labels = np.asarray(labels)
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"label values must lie in 0..{MAX_LABEL_VALUE}, got {labels.min()}")
    highest = int(labels.max()) if labels.size else 0
    return labels.astype(label_dtype(highest), copy=False)


def write_labels(labels: np.ndarray, like: Volume, path: Path | str) -> Path:
    """Write a label map on ``like``'s grid to ``path`` atomically, with ``like``'s exact geometry.

    ``labels`` must have ``like.shape`` (the 3D voxel grid in the file's voxel order). The output
    has ``like``'s stored shape (2D stays 2D), affine, qform/sform codes and header fields; the
    format follows ``path``'s ending (NIfTI, or NRRD/MHA via SimpleITK). Everything that can be
    refused is checked before a byte is written, so errors name ``path`` and leave no file.

    Example: ``write_labels(scores.argmax(-1), like=volume, path="case_001_mask.nii.gz")``.
    """
    path = Path(path)
    if tuple(labels.shape) != like.shape:
        raise ValueError(f"labels shape {labels.shape} != volume shape {like.shape}")
    lower = path.name.lower()
    if not lower.endswith(LABEL_SUFFIXES):
        raise InputError(
            f"{path}: masks are written as .nii.gz, .nii, .nrrd or .mha; change the output ending"
        )
    if lower.endswith(NIFTI_SUFFIXES):
        image = labels_image(labels, like)
        with atomic_path(path) as temporary:
            nib.save(image, temporary)
    else:
        import SimpleITK as sitk

        data = _as_label_data(labels)
        image = _itk_labels(data.reshape(like.stored_shape or like.shape), like, path)
        with atomic_path(path) as temporary:
            sitk.WriteImage(image, str(temporary), useCompression=True)
    return path


def labels_image(labels: np.ndarray, like: Volume) -> nib.Nifti1Image:
    """A label map on ``like``'s grid as an in-memory NIfTI image, exactly as :func:`write_labels`
    would write it: ``like``'s stored shape (2D stays 2D), affine, header and qform/sform codes,
    uint8 (uint16 beyond 255 labels), unscaled.

    >>> like = volume_from_array(np.zeros((4, 5, 6)), np.eye(4))
    >>> labels_image(np.ones((4, 5, 6), np.int64), like).get_data_dtype()
    dtype('uint8')
    """
    if tuple(labels.shape) != like.shape:
        raise ValueError(f"labels shape {labels.shape} != volume shape {like.shape}")
    data = _as_label_data(labels).reshape(like.stored_shape or like.shape)
    return _nifti_like(data, like)


def write_probabilities(probabilities: np.ndarray, like: Volume, path: Path | str) -> Path:
    """Softmax ``[*like.shape, C]`` as a 5D NIfTI ``[X, Y, Z, 1, C]`` on ``like``'s grid, written
    atomically with the header handling of :func:`write_labels`.

    Classes run along the 5th dimension with the ``vector`` intent, as the NIfTI standard puts
    a vector per voxel (the 4th is time, here 1), so ITK and 3D Slicer read one vector image
    instead of C time points. NIfTI-1 has no float16 type, so values are stored as uint16 with
    ``scl_slope = 1/65535``: the same size as float16, a finer step (1.5e-5) on [0, 1], and
    every reader that honours the scaling (nibabel's ``get_fdata``, ITK, 3D Slicer) gets
    probabilities back.
    """
    path = Path(path)
    if tuple(probabilities.shape[:-1]) != like.shape:
        raise ValueError(f"probabilities shape {probabilities.shape} != {like.shape} + classes")
    quantised = np.rint(np.clip(probabilities, 0.0, 1.0).astype(np.float32) * PROBABILITY_LEVELS)
    vectors = quantised.astype(np.uint16)[..., None, :]  # [X, Y, Z, 1 (time), C]
    image = _nifti_like(vectors, like)
    image.header.set_slope_inter(1.0 / PROBABILITY_LEVELS, 0.0)
    image.header.set_intent("vector", (), "softmax probabilities")
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return path


def write_voxel_map(values: np.ndarray, like: Volume, path: Path | str, intent: str) -> Path:
    """A float32 map of ``like.shape`` (e.g. the uncertainty beside a mask) on ``like``'s grid,
    written atomically with the header handling of :func:`write_labels`; ``intent`` names it in
    the header's intent (NIfTI ``estimate``)."""
    path = Path(path)
    if tuple(values.shape) != like.shape:
        raise ValueError(f"voxel map shape {values.shape} != {like.shape}")
    image = _nifti_like(np.asarray(values, dtype=np.float32), like)
    image.header.set_intent("estimate", (), intent[:15])  # the header holds 15 characters
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return path


def _nifti_like(data: np.ndarray, like: Volume) -> nib.Nifti1Image:
    """``data`` as a NIfTI image with ``like``'s affine and, when ``like`` came from a NIfTI file,
    its header (qform/sform codes, units, description), unscaled; else qform/sform code 1."""
    if like.nifti_header is None:
        image = nib.Nifti1Image(data, like.affine)
        image.header.set_qform(like.affine, code=1)
        image.header.set_sform(like.affine, code=1)
    else:
        header = like.nifti_header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0, 0
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = image_class(data, like.affine, header=header)  # type: ignore[no-untyped-call]
    image.set_data_dtype(data.dtype)
    return image


def _itk_labels(data: np.ndarray, like: Volume, path: Path) -> Any:
    """A SimpleITK image with ``like``'s ITK geometry as read, or one derived from its affine."""
    import SimpleITK as sitk

    # isVector=False: a (x, y, z, 1) array is a 4D image, not a 3D image of 1-vectors.
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(data.transpose(tuple(reversed(range(data.ndim))))), isVector=False
    )
    geometry = like.itk_geometry
    if geometry is None or len(geometry.spacing) != data.ndim:
        geometry = _itk_geometry_from_affine(like.affine, data.ndim, path)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


def _itk_geometry_from_affine(affine: np.ndarray, ndim: int, path: Path) -> ItkGeometry:
    """ITK (LPS) origin/spacing/direction for ``ndim`` axes from a RAS affine.

    ITK stores direction cosines, which must be orthonormal: a sheared NIfTI sform cannot be
    represented, so it is refused rather than silently distorted.
    """
    spacing = np.asarray(spacing_from_affine(affine))
    direction = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(
            f"{path}: the scan's direction cosines are not orthonormal, which ITK formats "
            "cannot store; write the mask as .nii.gz instead"
        )
    origin = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return ItkGeometry(
        tuple(float(v) for v in _resized_vector(origin, ndim, fill=0.0)),
        tuple(float(v) for v in _resized_vector(spacing, ndim, fill=1.0)),
        tuple(float(v) for v in _resized_square(direction, ndim).ravel()),
    )


def label_values(volume: Volume) -> np.ndarray:
    """The volume's voxels as class numbers (int64): the one rule for reading a label map.

    Integer-valued floats (some label files are stored as float32) are cast; fractions, NaN and
    negative values are an :class:`InputError` naming the file, because they mean an image, a
    probability map or labels resampled with linear interpolation.
    """
    array = volume.array
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        whole = rounded == array  # False for NaN as well
        if not whole.all():
            example = float(array[~whole].flat[0])
            raise InputError(
                f"{volume.path}: label map holds non-integer values; label values must be whole "
                f"numbers but it holds {example:g} (an image or probability map, or labels "
                "resampled with linear interpolation? use nearest neighbour)"
            )
        array = rounded
    if array.size and array.min() < 0:
        raise InputError(f"{volume.path}: label map holds negative values; classes start at 0")
    return np.asarray(array, dtype=np.int64)


def require_finite(volume: Volume) -> None:
    """Raise :class:`InputError` when a float volume holds NaN or infinite voxels."""
    if volume.array.dtype.kind == "f" and not np.isfinite(volume.array).all():
        bad = int((~np.isfinite(volume.array)).sum())
        raise InputError(
            f"{volume.location}: {bad} voxels are NaN or infinite; fix or re-export the scan "
            "(e.g. replace them with the background value)"
        )
