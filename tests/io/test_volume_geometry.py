"""`salign_cli.io.volume`: one "same grid?" rule, one label type rule, probabilities on the grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from salign_cli.errors import InputError
from salign_cli.io.volume import (
    GRID_ATOL_MM,
    Volume,
    canonical_grid,
    label_dtype,
    label_values,
    read_header,
    read_volume,
    same_grid,
    to_canonical,
    volume_from_array,
    write_probabilities,
)

SHAPE = (4, 5, 6)
AFFINE = np.array(
    [[0.8, 0.0, 0.0, -90.0], [0.0, 0.8, 0.0, 120.0], [0.0, 0.0, 2.5, -40.0], [0, 0, 0, 1]]
)


def shifted(offset_mm: float) -> np.ndarray:
    moved = AFFINE.copy()
    moved[0, 3] += offset_mm
    return moved


def test_identical_grids_are_the_same() -> None:
    a = volume_from_array(np.zeros(SHAPE), AFFINE)
    assert same_grid(a, volume_from_array(np.ones(SHAPE, np.uint8), AFFINE.copy()))


def test_an_origin_shift_within_the_tolerance_is_the_same_grid() -> None:
    a = volume_from_array(np.zeros(SHAPE), AFFINE)
    assert same_grid(a, volume_from_array(np.zeros(SHAPE), shifted(0.5 * GRID_ATOL_MM)))
    assert same_grid(a, volume_from_array(np.zeros(SHAPE), shifted(-0.9e-3)))


def test_an_origin_shift_beyond_the_tolerance_is_another_grid() -> None:
    # -90 mm: a relative tolerance (numpy's default 1e-5 * 90 mm) would let 1.5e-3 mm pass
    a = volume_from_array(np.zeros(SHAPE), AFFINE)
    assert not same_grid(a, volume_from_array(np.zeros(SHAPE), shifted(1.5e-3)))
    assert not same_grid(a, volume_from_array(np.zeros(SHAPE), shifted(1.0)))


def test_a_different_shape_is_another_grid() -> None:
    a = volume_from_array(np.zeros(SHAPE), AFFINE)
    assert not same_grid(a, volume_from_array(np.zeros((4, 5, 7)), AFFINE))
    assert not same_grid(a, volume_from_array(np.zeros((5, 4, 6)), AFFINE))


def test_a_different_direction_is_another_grid() -> None:
    # the same voxel sizes and origin, the first axis pointing left instead of right
    flipped = AFFINE.copy()
    flipped[0, 0] = -0.8
    a = volume_from_array(np.zeros(SHAPE), AFFINE)
    assert not same_grid(a, volume_from_array(np.zeros(SHAPE), flipped))


def test_a_header_and_a_volume_of_one_file_are_the_same_grid(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), AFFINE), path)
    assert same_grid(read_header(path), read_volume(path))
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), shifted(0.1)), other)
    assert not same_grid(read_header(path), read_header(other))


@pytest.mark.parametrize(
    ("highest", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16)]
)
def test_label_dtype_is_uint8_up_to_255_then_uint16(highest: int, dtype: type) -> None:
    assert label_dtype(highest) == np.dtype(dtype)


@pytest.mark.parametrize("highest", [-1, 65536])
def test_label_dtype_refuses_values_no_label_type_holds(highest: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        label_dtype(highest)


def test_probabilities_are_a_5d_uint16_vector_image_on_the_inputs_grid(tmp_path: Path) -> None:
    source = tmp_path / "scan.nii.gz"
    scan = nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE)
    scan.header.set_qform(AFFINE, code=1)
    scan.header.set_sform(AFFINE, code=2)  # aligned: kept, as for masks
    nib.save(scan, source)
    like = read_volume(source)
    probabilities = np.zeros((*SHAPE, 3), np.float16)
    probabilities[..., 0] = 0.25
    probabilities[..., 1] = 0.75
    probabilities[0, 0, 0] = (0.0, 0.0, 1.0)
    (tmp_path / "out").mkdir()
    path = write_probabilities(probabilities, like, tmp_path / "out" / "p.nii.gz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.nii.gz"]  # no partial left
    image = nib.load(path)
    assert image.shape == (*SHAPE, 1, 3)
    assert image.get_data_dtype() == np.uint16
    assert image.header.get_intent()[0] == "vector"
    assert image.dataobj.slope == pytest.approx(1 / 65535)  # nibabel moves scl_slope here
    raw = np.asarray(image.dataobj.get_unscaled())
    assert raw[1, 1, 1, 0].tolist() == [16384, 49151, 0]  # rint(0.25 * 65535), rint(0.75 * 65535)
    assert raw[0, 0, 0, 0].tolist() == [0, 0, 65535]
    np.testing.assert_allclose(image.get_fdata()[1, 1, 1, 0], [0.25, 0.75, 0.0], atol=1e-5)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-6)
    assert int(image.header["sform_code"]) == 2 and int(image.header["qform_code"]) == 1


def test_probabilities_of_an_in_memory_volume_get_scanner_codes(tmp_path: Path) -> None:
    like = volume_from_array(np.zeros(SHAPE), AFFINE)
    path = write_probabilities(np.full((*SHAPE, 2), 0.5), like, tmp_path / "p.nii.gz")
    header = nib.load(path).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)


def test_probabilities_off_the_grid_are_refused(tmp_path: Path) -> None:
    like = volume_from_array(np.zeros(SHAPE), AFFINE)
    with pytest.raises(ValueError, match="probabilities shape"):
        write_probabilities(np.zeros((4, 5, 7, 2)), like, tmp_path / "p.nii.gz")
    assert not (tmp_path / "p.nii.gz").exists()


def test_label_values_are_class_numbers_or_one_clear_error() -> None:
    def volume(values) -> Volume:
        return volume_from_array(np.asarray(values).reshape(1, 1, -1), np.eye(4))

    stored_as_float = label_values(volume(np.array([0.0, 1.0, 2.0], np.float32)))
    assert stored_as_float.dtype == np.int64 and stored_as_float.ravel().tolist() == [0, 1, 2]
    assert label_values(volume(np.array([0, 3], np.uint8))).ravel().tolist() == [0, 3]
    assert label_values(volume(np.array([False, True]))).ravel().tolist() == [0, 1]
    with pytest.raises(InputError, match=r"non-integer.*whole numbers.*0\.5"):
        label_values(volume(np.array([0.0, 0.5])))
    with pytest.raises(InputError, match="non-integer"):
        label_values(volume(np.array([0.0, np.nan])))
    with pytest.raises(InputError, match="negative values; classes start at 0"):
        label_values(volume(np.array([0, -1], np.int16)))


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([0.8, 0.9, 5.0, 1.0]),  # RAS
        np.diag([-0.8, -0.9, 5.0, 1.0]),  # LPS
        np.array([[0, 0, 2.0, 0], [0.5, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1]]),  # permuted
    ],
)
def test_canonical_grid_is_what_to_canonical_gives_without_moving_voxels(affine) -> None:
    volume = volume_from_array(np.zeros((2, 3, 4), np.int16), affine)
    moved = to_canonical(volume)
    shape, spacing = canonical_grid(volume)
    assert shape == moved.array.shape
    assert spacing == pytest.approx(moved.spacing_mm)
    if affine[0, 2] == 2.0:  # the permuted grid by hand: x <- k (2 mm), y <- i, z <- j
        assert shape == (4, 2, 3) and spacing == pytest.approx((2.0, 0.5, 3.0))
