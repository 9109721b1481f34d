"""Reading one scan and its label, never raising for a bad file: what the index records about it
and the problems found (runs in worker threads)."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from salign_cli.data.index.discovery import Candidate
from salign_cli.data.index.records import Problem, ScanRecord, error_at, warning_at
from salign_cli.errors import InputError
from salign_cli.io.dicom import is_dicom_scan
from salign_cli.io.hashing import HASH_CHUNK_BYTES, content_hash
from salign_cli.io.naming import NIFTI_SUFFIXES, is_hidden
from salign_cli.io.volume import (
    MAX_LABEL_VALUE,
    Volume,
    VolumeHeader,
    grid_shape,
    read_header,
    read_volume,
    require_finite,
    same_grid,
    sample_voxels,
)

ANISOTROPY_LIMIT = 3.0  # largest / smallest voxel size above this earns a warning
_USUAL_DTYPES = frozenset(
    np.dtype(t).name
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
)


def fingerprint(path: Path) -> tuple[int, int]:
    """``(size_bytes, mtime_ns)``; a DICOM series sums its folder's files and takes the newest
    mtime (every file, not only the series': a listing and ``stat`` are cheap, GDCM is not)."""
    if is_dicom_scan(path):
        folder = path if path.is_dir() else path.parent
        files = [e for e in folder.iterdir() if not is_hidden(e.name) and e.is_file()]
        stats = [file.stat() for file in files] + [folder.stat()]
        return sum(s.st_size for s in stats[:-1]), max(s.st_mtime_ns for s in stats)
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def _nifti_truncation(path: Path, size_bytes: int) -> Problem | None:
    """An error when a NIfTI file holds fewer voxel bytes than its header declares.

    Reading only the header cannot see a cut-off download. For ``.nii`` the file size tells; for
    ``.nii.gz`` the gzip trailer stores the uncompressed size (mod 2**32), and only when it
    disagrees is the stream decompressed to be sure (multi-member gzip files also disagree).
    """
    expected = _declared_nifti_bytes(path)
    found: int | None
    if not path.name.lower().endswith(".gz"):
        found = size_bytes
    else:
        with path.open("rb") as handle:
            handle.seek(max(size_bytes - 4, 0))
            if int.from_bytes(handle.read(4), "little") == expected % 2**32:
                return None
        found = _gunzipped_size(path)
    if found is not None and found >= expected:
        return None
    got = "its gzip stream is cut off or corrupt" if found is None else f"it holds {found}"
    return error_at(
        path,
        f"truncated: the header declares {expected} bytes but {got}; re-copy or re-download it",
    )


def _declared_nifti_bytes(path: Path) -> int:
    """Data offset + voxel bytes from a NIfTI-1/2 header parsed without nibabel's checks.

    ``read_header`` has validated the header already; parsing it again unchecked costs an
    eighth of a second ``nib.load`` (it dominated indexing time).
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(nib.Nifti2Header.sizeof_hdr)
    nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
    header_class = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    # only the fixed-size block: header extensions (which vox_offset already skips) are not read
    block = io.BytesIO(raw[: header_class.sizeof_hdr])
    header = header_class.from_fileobj(block, check=False)
    offset = max(int(header.get_data_offset()), header_class.single_vox_offset)
    return offset + int(np.prod(header.get_data_shape())) * int(header.get_data_dtype().itemsize)


def _gunzipped_size(path: Path) -> int | None:
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES * 4):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return None
    return total


def _header_problems(header: VolumeHeader, size_bytes: int) -> list[Problem]:
    path, shape = header.path, header.spatial_shape
    problems: list[Problem] = []
    if len(header.shape) < 3 or min(shape) == 1:
        problems.append(
            error_at(
                path,
                f"2D image (shape {tuple(header.shape)}); salign index collects 3D scans: stack "
                "the slices into one 3D file or move this one out of the folder",
            )
        )
    spacing = np.asarray(header.spacing_mm)
    if not np.all(np.isfinite(header.affine)) or np.any(spacing <= 0):
        problems.append(
            error_at(path, "the affine has zero or non-finite voxel sizes; fix pixdim/sform")
        )
    elif spacing.max() / spacing.min() > ANISOTROPY_LIMIT:
        mm = " x ".join(f"{s:.3g}" for s in spacing)
        problems.append(
            warning_at(
                path,
                f"anisotropic voxels ({mm} mm, ratio {spacing.max() / spacing.min():.1f} > "
                f"{ANISOTROPY_LIMIT:g}); salign slices across the coarsest axis, nothing to do "
                "unless the scan should be isotropic",
            )
        )
    if header.dtype.name not in _USUAL_DTYPES:
        problems.append(
            warning_at(
                path,
                f"unusual voxel type {header.dtype.name}; re-export as int16 or float32 if "
                "results look wrong",
            )
        )
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        truncation = _nifti_truncation(path, size_bytes)
        problems += [truncation] if truncation else []
    return problems


def _label_value_problems(
    path: Path, array: np.ndarray
) -> tuple[tuple[int, ...] | None, list[Problem]]:
    """The classes present in a label map, or the errors that make it no label map."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            return None, [error_at(path, "label map holds NaN or infinite values; re-export it")]
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            return None, [
                error_at(
                    path,
                    f"label map holds non-integer values (e.g. {example:g}); labels must be "
                    "whole class numbers: was it resampled with linear interpolation? use "
                    "nearest neighbour",
                )
            ]
    elif array.dtype.kind not in "iub":
        return None, [error_at(path, f"label voxel type {array.dtype} is not a number type")]
    if array.size == 0:
        return (), []
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > MAX_LABEL_VALUE:
        return None, [
            error_at(
                path,
                f"label values span {low:g}..{high:g}; classes must lie in 0..{MAX_LABEL_VALUE}: "
                "is this an image rather than a label map?",
            )
        ]
    counts = np.bincount(array.ravel().astype(np.intp, copy=False))
    values = tuple(int(v) for v in np.flatnonzero(counts))
    if values == (0,):
        return values, [
            warning_at(path, "label map is empty (background only); fix it or remove the label")
        ]
    return values, []


def _label_facts(
    label: Path, image_header: VolumeHeader | None, read_values: bool
) -> tuple[dict[str, Any], list[Problem]]:
    """Hash, values and grid match of a label (voxels decoded only when ``read_values``)."""
    facts: dict[str, Any] = {"label_hash": content_hash(label)}
    problems: list[Problem] = []
    grid: Volume | VolumeHeader
    try:
        if read_values:
            grid = read_volume(label)
            facts["label_values"], problems = _label_value_problems(label, grid.array)
        else:
            grid = read_header(label)
            grid.spatial_shape  # raises for true 4D  # noqa: B018
    except InputError as error:
        return facts, [Problem("error", label, str(error))]
    if image_header is None:
        return facts, problems
    facts["label_matches"] = same_grid(grid, image_header)
    if facts["label_matches"]:
        return facts, problems
    return facts, [*problems, error_at(label, _grid_mismatch(grid, image_header))]


def _grid_mismatch(label: Volume | VolumeHeader, image: VolumeHeader) -> str:
    """How a label's grid differs from its image's, and the fix."""
    if grid_shape(label) != image.spatial_shape:
        return (
            f"label shape {grid_shape(label)} differs from its image {image.path} "
            f"(shape {image.spatial_shape}); re-export the label on the image's grid"
        )
    offset = float(np.abs(np.asarray(label.affine) - image.affine).max())
    orientations = (label.orientation, image.orientation)
    turned = " (orientation {} vs {})".format(*orientations) if len(set(orientations)) > 1 else ""
    return (
        f"label affine differs from its image {image.path} by up to {offset:.3g} "
        f"mm{turned}; re-export the label on the image's grid, or copy the image's header "
        "into it if only the header is wrong"
    )


def _intensity_facts(path: Path) -> tuple[tuple[float, float] | None, list[Problem]]:
    """(min, max) of the finite voxels, and an error when some are NaN/Inf."""
    try:
        volume = read_volume(path)
    except InputError as error:
        return None, [Problem("error", path, str(error))]
    array = volume.array
    problems: list[Problem] = []
    try:
        require_finite(volume)
    except InputError as error:
        problems.append(Problem("error", path, str(error)))
        array = array[np.isfinite(array)]
    if array.size == 0:
        return None, problems
    return (float(array.min()), float(array.max())), problems


def _sampled_facts(path: Path) -> tuple[tuple[float, float] | None, list[Problem]]:
    """(min, max) of the finite voxels of a strided sample (see `sample_voxels`)."""
    try:
        sample = sample_voxels(path)
    except InputError as error:
        return None, [Problem("error", path, str(error))]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if finite.size == 0:
        return None, []
    return (float(finite.min()), float(finite.max())), []


def _has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def _image_facts(
    image: Path, size_bytes: int, checks: tuple[str, ...]
) -> tuple[dict[str, Any], list[Problem], VolumeHeader | None]:
    """Hash, geometry and (with ``"stats"``) intensities of an image; the header if it has a 3D grid."""
    facts: dict[str, Any] = {}
    try:
        header = read_header(image)  # first: it names folders and unreadable files clearly
        facts["content_hash"] = content_hash(image)
        header.spatial_shape  # raises for true 4D  # noqa: B018
    except InputError as error:
        return facts, [Problem("error", image, str(error))], None
    except (OSError, ValueError) as error:  # nibabel's own checks of a damaged header
        return (
            facts,
            [error_at(image, f"cannot read this scan ({error}); re-export or re-copy it")],
            None,
        )
    facts.update(
        shape=header.spatial_shape,
        spacing_mm=header.spacing_mm,
        orientation=header.orientation,
        dtype=header.dtype.name,
        dicom_modality=header.dicom_modality,
    )
    problems = _header_problems(header, size_bytes)
    if _has_errors(problems):
        return facts, problems, header
    if "stats" in checks:
        facts["intensity_range"], voxel_problems = _intensity_facts(image)
    else:
        facts["sampled_range"], voxel_problems = _sampled_facts(image)
    return facts, problems + voxel_problems, header


def read_scan(candidate: Candidate, checks: tuple[str, ...]) -> ScanRecord:
    """Everything the index records about one image and its label, never raising for bad files.

    ``checks`` may hold ``"labels"`` (decode label voxels: values, integer check) and ``"stats"``
    (decode image voxels: intensity range, NaN/Inf).
    """
    image, label = candidate.image_path, candidate.label_path
    facts: dict[str, Any] = {"checks": checks, "size_bytes": -1, "mtime_ns": -1}
    problems: list[Problem] = []
    try:
        facts["size_bytes"], facts["mtime_ns"] = fingerprint(image)
        image_facts, problems, header = _image_facts(image, facts["size_bytes"], checks)
        facts.update(image_facts)
    except OSError as error:
        problems.append(error_at(image, f"cannot open ({_reason(error)}); fix or remove it"))
        header = None
    if label is not None:
        try:
            facts["label_size_bytes"], facts["label_mtime_ns"] = fingerprint(label)
            label_facts, label_problems = _label_facts(label, header, "labels" in checks)
            facts.update(label_facts)
            problems += label_problems
        except OSError as error:
            problems.append(
                error_at(label, f"cannot open label ({_reason(error)}); fix or remove it")
            )
    return ScanRecord(
        image_path=image,
        label_path=label,
        dataset_root=candidate.dataset_root,
        case_name=candidate.case_name,
        file_problems=tuple(problems),
        **facts,
    )


def unexpected_failure(
    candidate: Candidate, checks: tuple[str, ...], error: Exception
) -> ScanRecord:
    """A row for a scan whose reading raised something unforeseen, so the other scans go on."""
    problem = error_at(
        candidate.image_path,
        f"unexpected failure while reading it ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}); re-export it, and please report it",
    )
    return ScanRecord(
        image_path=candidate.image_path,
        label_path=candidate.label_path,
        dataset_root=candidate.dataset_root,
        case_name=candidate.case_name,
        size_bytes=-1,
        mtime_ns=-1,
        checks=checks,
        file_problems=(problem,),
    )


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
