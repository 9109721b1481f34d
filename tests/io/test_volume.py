"""Tests for :mod:`salign_cli.io.volume`: geometry survives every read/write exactly.

Expected answers come from first principles: affines built by hand from axis codes, rotations
and zooms; ITK's own ``TransformIndexToPhysicalPoint`` converted LPS -> RAS by flipping x and y;
header fields compared bit for bit with the file that was read.
"""

from __future__ import annotations

import gzip
import itertools
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import write_dicom_series

from salign_cli.errors import InputError
from salign_cli.io.atomic import PARTIAL_MARKER
from salign_cli.io.naming import scan_name
from salign_cli.io.volume import (
    Volume,
    from_canonical,
    labels_image,
    orientation_code,
    read_header,
    read_volume,
    require_finite,
    to_canonical,
    volume_from_array,
    volume_from_image,
    write_labels,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
ZOOMS = (0.5, 1.5, 2.5)
ORIGIN = (10.0, -20.0, 30.0)
SHAPE = (4, 5, 6)


# ---------------------------------------------------------------------------------------------
# builders


def rotation(axis: int, degrees: float) -> np.ndarray:
    """Right-handed rotation by ``degrees`` about world axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    angle = np.deg2rad(degrees)
    first, second = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[first, first] = matrix[second, second] = np.cos(angle)
    matrix[first, second] = -np.sin(angle)
    matrix[second, first] = np.sin(angle)
    return matrix


def make_affine(linear: np.ndarray, origin=ORIGIN) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


def oblique_affine(zooms=(0.7, 1.1, 2.5)) -> np.ndarray:
    """30 degrees about x, then 30 degrees about y, with anisotropic voxels."""
    return make_affine(rotation(1, 30) @ rotation(0, 30) @ np.diag(zooms))


def affine_for_axcodes(axcodes: str, zooms=ZOOMS, origin=ORIGIN) -> np.ndarray:
    """Voxel axis ``i`` steps ``zooms[i]`` mm towards the world direction named ``axcodes[i]``."""
    linear = np.zeros((3, 3))
    for voxel_axis, code in enumerate(axcodes):
        world_axis, sign = world_axis_and_sign(code)
        linear[world_axis, voxel_axis] = sign * zooms[voxel_axis]
    return make_affine(linear, origin)


def world_axis_and_sign(code: str) -> tuple[int, int]:
    if code in "RAS":
        return "RAS".index(code), 1
    return "LPI".index(code), -1


def all_axcodes() -> list[str]:
    """The 48 orientations: every permutation of the world axes times every flip."""
    codes = []
    for world_axes in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            codes.append(
                "".join(
                    ("RAS" if sign > 0 else "LPI")[axis]
                    for axis, sign in zip(world_axes, signs, strict=True)
                )
            )
    return codes


def distinct_values(shape, dtype=np.int16) -> np.ndarray:
    """Every voxel a different value, so any misplaced voxel shows up."""
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


def labels_for(shape) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 5).reshape(shape).astype(np.int64)


def save_nifti(
    path: Path,
    data: np.ndarray,
    sform: np.ndarray,
    *,
    sform_code: int = 2,
    qform: np.ndarray | None = None,
    qform_code: int = 1,
) -> Path:
    """Save with nibabel, choosing qform and sform (and their codes) independently."""
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_qform(sform if qform is None else qform, code=qform_code)
    header.set_sform(sform, code=sform_code)
    nib.save(nib.Nifti1Image(data, header.get_best_affine(), header=header), path)
    return path


def save_raw_nifti(
    path: Path,
    raw: np.ndarray,
    affine: np.ndarray,
    *,
    slope: float = 1.0,
    inter: float = 0.0,
    endianness: str = "<",
) -> Path:
    """Write a single-file NIfTI-1 byte by byte (header, 4-byte extension flag, voxels in F order).

    nibabel's writer recomputes scl_slope/scl_inter from the data, so a file with chosen
    scaling has to be assembled by hand.
    """
    header = nib.Nifti1Header(endianness=endianness)
    header.set_data_shape(raw.shape)
    header.set_data_dtype(raw.dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=2)
    header["scl_slope"], header["scl_inter"] = slope, inter
    header["vox_offset"] = 352
    with open(path, "wb") as stream:
        header.write_to(stream)
        stream.write(b"\0" * (352 - stream.tell()))
        stream.write(raw.astype(raw.dtype.newbyteorder(endianness)).tobytes(order="F"))
    return path


def itk_image(direction: np.ndarray, spacing, origin, size=(5, 4, 3)) -> sitk.Image:
    array_zyx = distinct_values(tuple(reversed(size)))
    image = sitk.GetImageFromArray(array_zyx)
    image.SetDirection(tuple(direction.ravel()))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    return image


def homogeneous(index) -> np.ndarray:
    return np.array([*index, 1.0])


def assert_single_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


def assert_same_nifti_geometry(written: Path, source: Path) -> None:
    """Shape, affine, qform/sform (codes and stored numbers) identical bit for bit."""
    before, after = nib.load(source), nib.load(written)
    assert after.shape == before.shape
    assert np.array_equal(after.affine, before.affine)
    assert nib.aff2axcodes(after.affine) == nib.aff2axcodes(before.affine)
    for key in (
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
        "srow_x",
        "srow_y",
        "srow_z",
        "pixdim",
        "dim",
    ):
        assert np.array_equal(after.header[key], before.header[key]), key


def assert_labels_written(written: Path, labels: np.ndarray, dtype) -> None:
    image = nib.load(written)
    assert image.get_data_dtype() == dtype
    stored = np.asarray(image.dataobj)
    assert stored.dtype == dtype
    assert np.array_equal(stored.reshape(labels.shape), labels)


# ---------------------------------------------------------------------------------------------
# 1. NIfTI round trips keep the input's exact geometry

REAL_FIXTURES = {
    "totalseg_example_ct_sm.nii.gz": ("RAS", (3.0, 3.0, 3.0)),
    "totalseg_example_mr_sm.nii.gz": ("LPS", (3.0, 3.0, 3.0)),
    "spleen2_ct.nii.gz": ("RAS", (0.794922, 0.794922, 5.0)),
}


@pytest.mark.parametrize("name", sorted(REAL_FIXTURES))
@pytest.mark.parametrize("highest_label", [4, 300], ids=["uint8", "uint16"])
def test_real_scan_round_trip_keeps_geometry(
    fixtures_dir: Path, tmp_path: Path, name: str, highest_label: int
) -> None:
    source = fixtures_dir / name
    volume = read_volume(source)
    orientation, spacing_mm = REAL_FIXTURES[name]
    assert volume.orientation == orientation
    np.testing.assert_allclose(volume.spacing_mm, spacing_mm, atol=1e-5)

    labels = labels_for(volume.shape)
    labels[0, 0, 0] = highest_label
    written = write_labels(labels, volume, tmp_path / "mask.nii.gz")

    assert_same_nifti_geometry(written, source)
    assert_labels_written(written, labels, np.uint8 if highest_label <= 255 else np.uint16)
    assert read_volume(written).orientation == orientation


def test_oblique_scan_keeps_distinct_qform_and_sform(tmp_path: Path) -> None:
    sform = oblique_affine()
    qform = make_affine(rotation(2, 10) @ np.diag((0.7, 1.1, 2.5)), origin=(1.0, 2.0, 3.0))
    source = save_nifti(
        tmp_path / "oblique.nii.gz", distinct_values(SHAPE), sform, qform=qform, qform_code=1
    )

    volume = read_volume(source)
    np.testing.assert_allclose(volume.affine, sform, atol=1e-5)  # sform wins (code 2 > 0)
    np.testing.assert_allclose(volume.spacing_mm, (0.7, 1.1, 2.5), atol=1e-6)

    written = write_labels(labels_for(SHAPE), volume, tmp_path / "mask.nii.gz")
    assert_same_nifti_geometry(written, source)
    header = nib.load(written).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(header.get_qform(), qform, atol=1e-5)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PIR", "ILA", "SPL"])
def test_flipped_and_permuted_scans_round_trip(tmp_path: Path, axcodes: str) -> None:
    affine = affine_for_axcodes(axcodes)
    source = save_nifti(tmp_path / f"{axcodes}.nii.gz", distinct_values(SHAPE), affine)

    volume = read_volume(source)
    assert volume.orientation == axcodes
    assert np.array_equal(volume.affine, affine)  # small binary fractions: exact in float32
    assert np.array_equal(volume.array, distinct_values(SHAPE))

    written = write_labels(labels_for(SHAPE), volume, tmp_path / "mask.nii.gz")
    assert_same_nifti_geometry(written, source)
    assert orientation_code(nib.load(written).affine) == axcodes


def test_sheared_sform_round_trips_through_nifti(tmp_path: Path) -> None:
    """A non-orthonormal sform (ITK refuses it; nibabel reads it) is kept as stored."""
    sheared = make_affine(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.25], [0.0, 0.0, 2.0]]))
    source = save_nifti(tmp_path / "sheared.nii.gz", distinct_values(SHAPE), sheared, qform_code=0)

    volume = read_volume(source)
    assert np.array_equal(volume.affine, sheared)

    written = write_labels(labels_for(SHAPE), volume, tmp_path / "mask.nii.gz")
    assert_same_nifti_geometry(written, source)


def test_sheared_sform_cannot_become_itk_and_says_where(tmp_path: Path) -> None:
    sheared = make_affine(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))
    volume = read_volume(save_nifti(tmp_path / "sheared.nii.gz", distinct_values(SHAPE), sheared))
    target = tmp_path / "mask.nrrd"

    with pytest.raises(InputError, match="orthonormal") as error:
        write_labels(labels_for(SHAPE), volume, target)
    assert_single_line_naming(error, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheared.nii.gz"]


@pytest.mark.parametrize(
    ("stored_shape", "grid_shape"),
    [((5, 4), (5, 4, 1)), ((5, 4, 3, 1), (5, 4, 3))],
    ids=["2D", "4D-one-frame"],
)
def test_2d_and_single_frame_4d_keep_their_stored_shape(
    tmp_path: Path, stored_shape: tuple[int, ...], grid_shape: tuple[int, ...]
) -> None:
    source = save_nifti(tmp_path / "scan.nii.gz", distinct_values(stored_shape), oblique_affine())

    volume = read_volume(source)
    assert volume.shape == grid_shape
    assert volume.stored_shape == stored_shape
    assert np.array_equal(volume.array, distinct_values(stored_shape).reshape(grid_shape))

    labels = labels_for(grid_shape)
    written = write_labels(labels, volume, tmp_path / "mask.nii.gz")
    assert nib.load(written).shape == stored_shape
    assert_same_nifti_geometry(written, source)
    assert_labels_written(written, labels, np.uint8)


def test_4d_with_several_frames_is_refused(tmp_path: Path) -> None:
    source = save_nifti(tmp_path / "series.nii.gz", distinct_values((4, 3, 2, 3)), oblique_affine())
    with pytest.raises(InputError, match="3 frames") as error:
        read_volume(source)
    assert_single_line_naming(error, source)


def test_scaled_nifti_reads_as_float32_and_masks_are_not_rescaled(tmp_path: Path) -> None:
    raw = distinct_values(SHAPE, np.int16)
    source = save_raw_nifti(
        tmp_path / "scaled.nii", raw, affine_for_axcodes("RAS"), slope=2, inter=-5
    )

    volume = read_volume(source)
    assert volume.array.dtype == np.float32
    assert np.array_equal(volume.array, raw.astype(np.float32) * 2 - 5)

    labels = labels_for(SHAPE)
    written = write_labels(labels, volume, tmp_path / "mask.nii.gz")
    header = nib.load(written).header
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    assert slope == 1 or np.isnan(slope)
    assert inter == 0 or np.isnan(inter)
    assert_labels_written(written, labels, np.uint8)
    assert read_volume(written).array.dtype == np.uint8


def test_big_endian_scan_reads_in_native_byte_order(tmp_path: Path) -> None:
    raw = distinct_values(SHAPE, np.int16)
    source = save_raw_nifti(tmp_path / "big.nii", raw, affine_for_axcodes("PIR"), endianness=">")

    volume = read_volume(source)
    assert volume.array.dtype == np.dtype("=i2")  # torch.from_numpy refuses big-endian data
    assert np.array_equal(volume.array, raw)
    assert read_header(source).dtype == volume.array.dtype


def test_label_values_beyond_uint16_are_refused(tmp_path: Path) -> None:
    volume = Volume(array=np.zeros(SHAPE, np.int16), affine=affine_for_axcodes("RAS"))
    for bad in (65536, -1):
        labels = np.zeros(SHAPE, np.int64)
        labels[1, 2, 3] = bad
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            write_labels(labels, volume, tmp_path / "mask.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_labels_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    volume = Volume(array=np.zeros(SHAPE, np.int16), affine=affine_for_axcodes("RAS"))
    with pytest.raises(ValueError, match="shape"):
        write_labels(np.zeros((6, 5, 4), np.uint8), volume, tmp_path / "mask.nii.gz")


# ---------------------------------------------------------------------------------------------
# 2. to_canonical / from_canonical


def canonical_index_by_hand(axcodes: str, index, shape) -> tuple[int, ...]:
    """Where voxel ``index`` lands once every axis points R, A or S: reversed axes count back."""
    canonical = [0, 0, 0]
    for voxel_axis, code in enumerate(axcodes):
        world_axis, sign = world_axis_and_sign(code)
        position = index[voxel_axis]
        canonical[world_axis] = position if sign > 0 else shape[voxel_axis] - 1 - position
    return tuple(canonical)


@pytest.mark.parametrize("axcodes", all_axcodes())
def test_to_canonical_puts_a_marker_at_the_same_world_point(axcodes: str) -> None:
    marker = (1, 3, 2)
    array = np.zeros(SHAPE, np.int16)
    array[marker] = 7
    affine = affine_for_axcodes(axcodes)

    canonical = to_canonical(Volume(array=array, affine=affine))

    expected_index = canonical_index_by_hand(axcodes, marker, SHAPE)
    assert [tuple(i) for i in np.argwhere(canonical.array == 7)] == [expected_index]
    np.testing.assert_allclose(
        canonical.affine @ homogeneous(expected_index), affine @ homogeneous(marker), atol=1e-12
    )
    # The canonical grid steps +zoom along R, A, S: a diagonal affine with positive zooms.
    zooms_by_world_axis = np.zeros(3)
    for voxel_axis, code in enumerate(axcodes):
        zooms_by_world_axis[world_axis_and_sign(code)[0]] = ZOOMS[voxel_axis]
    np.testing.assert_allclose(canonical.affine[:3, :3], np.diag(zooms_by_world_axis), atol=1e-12)
    assert orientation_code(canonical.affine) == "RAS"
    assert canonical.spacing_mm == pytest.approx(tuple(zooms_by_world_axis))


@pytest.mark.parametrize("axcodes", all_axcodes())
def test_from_canonical_undoes_to_canonical_exactly(axcodes: str) -> None:
    volume = Volume(array=distinct_values(SHAPE), affine=affine_for_axcodes(axcodes))
    canonical = to_canonical(volume)

    restored = from_canonical(canonical.array, volume)
    assert restored.dtype == volume.array.dtype
    assert np.array_equal(restored, volume.array)

    channels = np.stack([canonical.array, 2 * canonical.array], axis=-1)
    assert np.array_equal(
        from_canonical(channels, volume), np.stack([volume.array, 2 * volume.array], axis=-1)
    )


def test_oblique_canonical_keeps_world_points_and_inverts() -> None:
    affine = oblique_affine()
    volume = Volume(array=distinct_values(SHAPE), affine=affine)
    canonical = to_canonical(volume)

    for index in itertools.product(*(range(n) for n in SHAPE)):
        value = volume.array[index]
        (canonical_index,) = np.argwhere(canonical.array == value)
        np.testing.assert_allclose(
            canonical.affine @ homogeneous(canonical_index),
            affine @ homogeneous(index),
            atol=1e-9,
        )
    assert np.array_equal(from_canonical(canonical.array, volume), volume.array)


def test_from_canonical_refuses_a_foreign_grid() -> None:
    volume = Volume(array=np.zeros(SHAPE, np.int16), affine=affine_for_axcodes("PIR"))
    with pytest.raises(ValueError, match="does not fit"):
        from_canonical(np.zeros(SHAPE, np.int16), volume)


# ---------------------------------------------------------------------------------------------
# 3. ITK formats (NRRD, MHA, MHD, DICOM series)

ITK_DIRECTION = rotation(2, 30) @ rotation(0, -20)
ITK_SPACING = (0.7, 1.3, 2.9)
ITK_ORIGIN = (-10.5, 20.25, 3.0)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_scan_reads_with_ras_affine_and_xyz_order(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(itk_image(ITK_DIRECTION, ITK_SPACING, ITK_ORIGIN), str(path))
    on_disk = sitk.ReadImage(str(path))

    volume = read_volume(path)
    assert volume.shape == tuple(on_disk.GetSize())
    assert volume.name == "scan"
    for index in itertools.product(*(range(n) for n in on_disk.GetSize())):
        world_lps = np.array(on_disk.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(
            volume.affine @ homogeneous(index), [*(LPS_TO_RAS @ world_lps), 1.0], atol=1e-9
        )
        assert volume.array[index] == on_disk.GetPixel(index)


def test_itk_identity_direction_is_lps(tmp_path: Path) -> None:
    """Identity direction in ITK's LPS space: voxel x and y step towards left and posterior."""
    path = tmp_path / "scan.mha"
    sitk.WriteImage(itk_image(np.eye(3), ITK_SPACING, ITK_ORIGIN), str(path))

    expected = np.eye(4)
    expected[:3, :3] = np.diag([-0.7, -1.3, 2.9])
    expected[:3, 3] = [10.5, -20.25, 3.0]
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, expected, atol=1e-12)
    assert volume.orientation == "LPS"


def itk_resave(image: sitk.Image, path: Path) -> sitk.Image:
    """What ITK itself reads back after writing ``image``: the best any writer can do.

    NRRD stores direction x spacing and the reader re-normalises, so a read-write-read cycle in
    ITK alone can move a direction cosine by one unit in the last place.
    """
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("source_suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("target_suffix", [".nrrd", ".mha"])
def test_itk_labels_round_trip_geometry_exactly(
    tmp_path: Path, source_suffix: str, target_suffix: str
) -> None:
    source = tmp_path / f"scan{source_suffix}"
    sitk.WriteImage(itk_image(ITK_DIRECTION, ITK_SPACING, ITK_ORIGIN), str(source))
    on_disk = sitk.ReadImage(str(source))
    reference = itk_resave(on_disk, tmp_path / f"reference{target_suffix}")
    volume = read_volume(source)
    labels = labels_for(volume.shape)

    written = sitk.ReadImage(str(write_labels(labels, volume, tmp_path / f"mask{target_suffix}")))

    assert written.GetSize() == on_disk.GetSize()
    assert written.GetOrigin() == reference.GetOrigin() == on_disk.GetOrigin()
    assert written.GetSpacing() == reference.GetSpacing() == on_disk.GetSpacing()
    assert written.GetDirection() == reference.GetDirection()
    np.testing.assert_allclose(written.GetDirection(), on_disk.GetDirection(), rtol=0, atol=1e-15)
    assert written.GetPixelID() == sitk.sitkUInt8
    for index in [(0, 0, 0), (4, 3, 2), (1, 2, 0), (3, 0, 1)]:
        assert written.GetPixel(index) == labels[index]


def embed(direction: np.ndarray, ndim: int) -> np.ndarray:
    full = np.eye(ndim)
    spatial = min(ndim, 3)
    full[:spatial, :spatial] = direction[:spatial, :spatial]
    return full


@pytest.mark.parametrize(
    ("itk_size", "grid_shape"),
    [((5, 4), (5, 4, 1)), ((5, 4, 3, 1), (5, 4, 3))],
    ids=["2D", "4D-one-frame"],
)
def test_itk_2d_and_single_frame_4d_keep_their_stored_shape(
    tmp_path: Path, itk_size: tuple[int, ...], grid_shape: tuple[int, ...]
) -> None:
    ndim = len(itk_size)
    frame = sitk.GetImageFromArray(distinct_values(tuple(reversed(itk_size[:3]))))
    image = sitk.JoinSeries([frame]) if ndim == 4 else frame
    rotation_2d = rotation(2, 30)  # in-plane only, so a 2D image can carry it
    image.SetDirection(tuple(embed(rotation_2d, ndim).ravel()))
    image.SetSpacing((0.7, 1.3, 2.9, 1.0)[:ndim])
    image.SetOrigin((-10.5, 20.25, 3.0, 0.0)[:ndim])
    source = tmp_path / "scan.mha"
    sitk.WriteImage(image, str(source))

    volume = read_volume(source)
    assert volume.shape == grid_shape
    assert volume.stored_shape == itk_size
    expected = np.eye(4)
    spacing = (0.7, 1.3, 2.9) if ndim == 4 else (0.7, 1.3, 1.0)
    expected[:3, :3] = LPS_TO_RAS @ rotation_2d @ np.diag(spacing)
    expected[:3, 3] = LPS_TO_RAS @ np.array([-10.5, 20.25, 3.0 if ndim == 4 else 0.0])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-12)
    assert read_header(source).shape == itk_size

    labels = labels_for(grid_shape)
    written = sitk.ReadImage(str(write_labels(labels, volume, tmp_path / "mask.mha")))
    assert written.GetSize() == itk_size
    assert written.GetNumberOfComponentsPerPixel() == 1
    assert written.GetDirection() == image.GetDirection()
    assert written.GetOrigin() == image.GetOrigin()
    assert written.GetSpacing() == image.GetSpacing()
    assert written.GetPixel((4, 3, 2, 0)[:ndim]) == labels[4, 3, 2 if ndim == 4 else 0]


@pytest.mark.parametrize("stored_shape", [(5, 4), (5, 4, 3, 1)], ids=["2D", "4D-one-frame"])
def test_nifti_2d_and_4d_labels_can_be_written_as_itk(
    tmp_path: Path, stored_shape: tuple[int, ...]
) -> None:
    affine = affine_for_axcodes("LPS")
    volume = read_volume(
        save_nifti(tmp_path / "scan.nii.gz", distinct_values(stored_shape), affine)
    )

    written = sitk.ReadImage(
        str(write_labels(labels_for(volume.shape), volume, tmp_path / "m.nrrd"))
    )

    spatial = min(len(stored_shape), 3)
    assert written.GetSize() == stored_shape
    assert written.GetSpacing()[:spatial] == ZOOMS[:spatial]
    lps_origin = (-ORIGIN[0], -ORIGIN[1], ORIGIN[2])  # the LPS affine's origin, seen from ITK
    assert written.GetOrigin()[:spatial] == lps_origin[:spatial]
    assert written.GetDirection() == tuple(np.eye(len(stored_shape)).ravel())


def test_nifti_scan_labels_written_as_nrrd_keep_world_geometry(tmp_path: Path) -> None:
    affine = oblique_affine()
    volume = read_volume(save_nifti(tmp_path / "scan.nii.gz", distinct_values(SHAPE), affine))
    labels = labels_for(SHAPE)

    written = sitk.ReadImage(str(write_labels(labels, volume, tmp_path / "mask.nrrd")))
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        world_ras = LPS_TO_RAS @ np.array(written.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose([*world_ras, 1.0], affine @ homogeneous(index), atol=1e-4)
        assert written.GetPixel(index) == labels[index]


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr", ".png"])
def test_non_single_file_formats_are_refused_as_mask_targets(tmp_path: Path, suffix: str) -> None:
    """.mhd/.nhdr keep voxels in a second file, which a single atomic rename cannot publish."""
    volume = Volume(array=np.zeros(SHAPE, np.int16), affine=affine_for_axcodes("LPS"))
    target = tmp_path / f"mask{suffix}"
    with pytest.raises(InputError, match=r"\.nii\.gz") as error:
        write_labels(labels_for(SHAPE), volume, target)
    assert_single_line_naming(error, target)
    assert list(tmp_path.iterdir()) == []


def test_dicom_series_folder_reads_sorted_with_its_geometry(tmp_path: Path) -> None:
    image = itk_image(
        np.eye(3), spacing=(0.75, 0.5, 2.5), origin=(-40.0, 12.0, 10.0), size=(6, 5, 4)
    )
    folder = tmp_path / "series"
    write_dicom_series(folder, image)

    volume = read_volume(folder)
    assert volume.shape == (6, 5, 4)
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-0.75, -0.5, 2.5])  # LPS identity -> x, y point left/posterior
    expected[:3, 3] = [40.0, -12.0, 10.0]
    np.testing.assert_allclose(volume.affine, expected, atol=1e-5)
    assert volume.orientation == "LPS"
    expected_array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    assert np.array_equal(volume.array, expected_array)

    header = read_header(folder)
    assert header.shape == (6, 5, 4)
    np.testing.assert_allclose(header.affine, volume.affine, atol=1e-9)
    assert header.dtype == volume.array.dtype


def test_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here\n")
    with pytest.raises(InputError, match="no DICOM series") as error:
        read_volume(folder)
    assert_single_line_naming(error, folder)


# ---------------------------------------------------------------------------------------------
# 4. read_header: geometry without voxel data


def oblique_nifti(folder: Path) -> Path:
    return save_nifti(folder / "oblique.nii.gz", distinct_values(SHAPE), oblique_affine())


def flat_nifti(folder: Path) -> Path:
    return save_nifti(folder / "flat.nii.gz", distinct_values((5, 4)), affine_for_axcodes("PIR"))


def scaled_nifti(folder: Path) -> Path:
    raw = distinct_values(SHAPE)
    return save_raw_nifti(folder / "scaled.nii", raw, affine_for_axcodes("LPS"), slope=2, inter=-5)


def oblique_nrrd(folder: Path) -> Path:
    path = folder / "scan.nrrd"
    sitk.WriteImage(itk_image(ITK_DIRECTION, ITK_SPACING, ITK_ORIGIN), str(path))
    return path


def assert_header_matches_volume(path: Path) -> None:
    header, volume = read_header(path), read_volume(path)
    assert header.shape == volume.stored_shape
    assert header.spatial_shape == volume.shape
    assert np.array_equal(header.affine, volume.affine)
    assert header.dtype == volume.array.dtype
    assert header.orientation == volume.orientation
    assert header.spacing_mm == volume.spacing_mm


@pytest.mark.parametrize(
    "make_scan",
    [oblique_nifti, flat_nifti, scaled_nifti, oblique_nrrd],
    ids=lambda f: f.__name__,
)
def test_read_header_agrees_with_read_volume(tmp_path: Path, make_scan) -> None:
    assert_header_matches_volume(make_scan(tmp_path))


@pytest.mark.parametrize("name", sorted(REAL_FIXTURES))
def test_read_header_agrees_with_read_volume_on_real_scans(fixtures_dir: Path, name: str) -> None:
    assert_header_matches_volume(fixtures_dir / name)


def test_read_header_does_not_touch_voxels(tmp_path: Path) -> None:
    complete = save_nifti(tmp_path / "full.nii.gz", distinct_values((40, 40, 40)), oblique_affine())
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])

    header = read_header(truncated)
    assert header.shape == (40, 40, 40)
    np.testing.assert_allclose(header.affine, oblique_affine(), atol=1e-5)
    with pytest.raises(InputError) as error:
        read_volume(truncated)
    assert_single_line_naming(error, truncated)


# ---------------------------------------------------------------------------------------------
# 5. bad input: one-line InputError naming the file


def truncated_gzip(folder: Path) -> Path:
    complete = save_nifti(folder / "full.nii.gz", distinct_values((30, 30, 30)), oblique_affine())
    path = folder / "truncated.nii.gz"
    path.write_bytes(complete.read_bytes()[:-200])
    return path


def text_file(folder: Path) -> Path:
    path = folder / "x.nii.gz"
    path.write_text("this is not a scan\nsecond line\n")
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.nii.gz"
    path.touch()
    return path


def folder_named_like_a_scan(folder: Path) -> Path:
    path = folder / "x.nii.gz"
    path.mkdir()
    return path


def missing(folder: Path) -> Path:
    return folder / "absent.nii.gz"


def truncated_nrrd(folder: Path) -> Path:
    complete = folder / "full.nrrd"
    sitk.WriteImage(
        itk_image(ITK_DIRECTION, ITK_SPACING, ITK_ORIGIN, size=(20, 20, 20)), str(complete)
    )
    path = folder / "truncated.nrrd"
    path.write_bytes(complete.read_bytes()[:-500])
    return path


BAD_INPUTS = [
    truncated_gzip,
    text_file,
    empty_file,
    folder_named_like_a_scan,
    missing,
    truncated_nrrd,
]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_is_one_line_input_error_naming_the_file(tmp_path: Path, make_bad) -> None:
    path = make_bad(tmp_path)
    with pytest.raises(InputError) as error:
        read_volume(path)
    assert_single_line_naming(error, path)
    assert ".cxx" not in str(error.value)  # the cause, not ITK's source location


@pytest.mark.parametrize(
    "make_bad", [text_file, empty_file, folder_named_like_a_scan, missing], ids=lambda f: f.__name__
)
def test_bad_input_fails_read_header_too(tmp_path: Path, make_bad) -> None:
    path = make_bad(tmp_path)
    with pytest.raises(InputError) as error:
        read_header(path)
    assert_single_line_naming(error, path)


DIM_OFFSET = 40  # NIfTI-1: int16 dim[8] starts at byte 40; dim[1..3] are the spatial sizes


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_enormous_declared_size_is_refused_without_allocating(tmp_path: Path, suffix: str) -> None:
    small = save_nifti(tmp_path / "small.nii", distinct_values((2, 2, 2)), oblique_affine())
    content = bytearray(small.read_bytes())
    largest = 2**15 - 1  # dim is int16: 32767 per axis declares ~3.5e13 voxels
    content[DIM_OFFSET + 2 : DIM_OFFSET + 8] = struct.pack("<3h", largest, largest, largest)
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(bytes(content)) if suffix == ".nii.gz" else bytes(content))

    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="implausibly large") as error:
            read_volume(path)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 50 * 2**20
    assert_single_line_naming(error, path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused(tmp_path: Path, bad_value: float) -> None:
    data = distinct_values(SHAPE).astype(np.float32)
    data[1, 1, 1] = data[2, 3, 4] = bad_value
    path = save_nifti(tmp_path / "scan.nii.gz", data, affine_for_axcodes("RAS"))

    volume = read_volume(path)
    with pytest.raises(InputError, match="2 voxels") as error:
        require_finite(volume)
    assert_single_line_naming(error, path)


def test_finite_and_integer_volumes_pass_require_finite() -> None:
    require_finite(Volume(array=distinct_values(SHAPE), affine=np.eye(4)))
    require_finite(Volume(array=distinct_values(SHAPE).astype(np.float32), affine=np.eye(4)))


# ---------------------------------------------------------------------------------------------
# 6. atomic writes


def write_part_then_fail(_image, target, *args, **kwargs) -> None:
    """A writer that puts half a file on disk, then fails as a full disk would."""
    Path(target).write_bytes(b"half a file")
    raise OSError("No space left on device")


@pytest.mark.parametrize(
    ("module", "writer", "suffix"),
    [(nib, "save", ".nii.gz"), (sitk, "WriteImage", ".nrrd")],
    ids=["nibabel", "itk"],
)
@pytest.mark.parametrize("target_exists", [False, True])
def test_failed_write_leaves_no_partial_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module,
    writer: str,
    suffix: str,
    target_exists: bool,
) -> None:
    volume = Volume(array=np.zeros(SHAPE, np.int16), affine=affine_for_axcodes("LPS"))
    target = tmp_path / f"mask{suffix}"
    if target_exists:
        target.write_bytes(b"previous mask")
    monkeypatch.setattr(module, writer, write_part_then_fail)

    with pytest.raises(OSError, match="No space"):
        write_labels(labels_for(SHAPE), volume, target)

    assert not any(PARTIAL_MARKER in p.name for p in tmp_path.iterdir())
    if target_exists:
        assert target.read_bytes() == b"previous mask"
    else:
        assert not target.exists()


# ---------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    ("file_name", "case"),
    [
        ("hippocampus_001.nii.gz", "hippocampus_001"),
        ("Case.NII.GZ", "Case"),
        ("ct.nii", "ct"),
        ("a.b.nrrd", "a.b"),
        ("scan.mha", "scan"),
        ("series", "series"),
    ],
)
def test_scan_name_drops_the_whole_ending(file_name: str, case: str) -> None:
    assert scan_name(Path(file_name)) == case


# -- volumes held in memory --------------------------------------------------------------------


def test_an_image_in_memory_is_the_volume_read_from_its_file(fixtures_dir: Path, tmp_path: Path):
    path = fixtures_dir / "totalseg_example_mr_sm.nii.gz"  # LPS, int16
    read = read_volume(path)
    loaded = volume_from_image(nib.load(path))
    assert loaded.path == path  # messages name the file the image came from
    np.testing.assert_array_equal(loaded.array, read.array)
    assert loaded.array.dtype == read.array.dtype
    np.testing.assert_array_equal(loaded.affine, read.affine)
    assert loaded.stored_shape == read.stored_shape and loaded.orientation == "LPS"
    # The mask image in memory is, byte for byte, the mask file write_labels writes.
    labels = (read.array > np.median(read.array)).astype(np.uint8)
    write_labels(labels, like=read, path=tmp_path / "mask.nii.gz")
    written = nib.load(tmp_path / "mask.nii.gz")
    image = labels_image(labels, like=loaded)
    assert image.header.binaryblock == written.header.binaryblock
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(written.dataobj))


def test_an_array_and_its_affine_make_a_volume_with_that_geometry():
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -5], [0, 1.5, 0, 7], [0, 0, 0, 1]])
    volume = volume_from_array(np.arange(20, dtype=np.float64).reshape(4, 5), affine)
    assert volume.shape == (4, 5, 1) and volume.stored_shape == (4, 5)  # 2D gets one slice
    assert volume.array.dtype == np.float32  # as read_volume gives float64 files
    assert volume.orientation == "LSA" and volume.spacing_mm == (2.0, 1.5, 3.0)
    assert volume.location == "<memory>"
    mask = labels_image(np.ones((4, 5, 1), np.uint8), like=volume)
    assert mask.shape == (4, 5)  # the input's stored shape
    np.testing.assert_array_equal(mask.affine, affine)
    assert mask.header.get_sform(coded=True)[1] == 1 and mask.header.get_qform(coded=True)[1] == 1


def test_a_boolean_array_becomes_uint8():
    volume = volume_from_array(np.eye(3, dtype=bool)[..., None], np.eye(4))
    assert volume.array.dtype == np.uint8 and int(volume.array.sum()) == 3
