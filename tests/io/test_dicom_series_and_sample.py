"""`salign_cli.io.volume`: DICOM series by any file name, several per folder, and voxel samples.

Series are written here from the real fixtures (``index_corpus.write_dicom_series``), so each
expected answer — slice counts, series numbers, voxel values — is the NIfTI fixture's own.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK  # noqa: F401  # a core dependency: missing, it fails here instead of skipping
from dicom_series import write_dicom_series

from salign_cli.errors import InputError
from salign_cli.io import volume as volume_module
from salign_cli.io.dicom import dicom_series, is_dicom_file, series_files
from salign_cli.io.volume import read_header, read_volume, sample_voxels

CT_UID = "1.2.826.0.1.3680043.8.498.101"
MR_UID = "1.2.826.0.1.3680043.8.498.202"


@pytest.mark.parametrize("whole_read", [True, False], ids=["whole-then-strided", "strided-proxy"])
def test_nifti_sample_keeps_every_kth_voxel_with_at_most_32_per_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_read: bool
) -> None:
    if not whole_read:
        monkeypatch.setattr(volume_module, "_SAMPLE_WHOLE_BYTES", 0)
    ramp = np.arange(70 * 33 * 5, dtype=np.int16).reshape(70, 33, 5)
    nib.save(nib.Nifti1Image(ramp, np.eye(4)), tmp_path / "ramp.nii.gz")
    # ceil(70 / 32) = 3, ceil(33 / 32) = 2, 5 slices all kept
    assert np.array_equal(sample_voxels(tmp_path / "ramp.nii.gz"), ramp[::3, ::2, :])
    one_frame = ramp[..., None]
    nib.save(nib.Nifti1Image(one_frame, np.eye(4)), tmp_path / "frame.nii")
    assert np.array_equal(sample_voxels(tmp_path / "frame.nii"), ramp[::3, ::2, :])


def test_two_series_in_one_folder_are_listed_apart_and_a_file_names_its_series(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    ct_files = write_dicom_series(
        folder,
        fixtures_dir / "spleen2_ct.nii.gz",
        series_uid=CT_UID,
        modality="CT",
        series_number=3,
        file_name="{uid}",
    )
    mr_files = write_dicom_series(
        folder,
        fixtures_dir / "totalseg_example_mr_sm.nii.gz",
        series_uid=MR_UID,
        modality="MR",
        file_name="IM{k:04d}.IMA",
        series_number=7,
    )
    (tmp_path / "study" / "notes").write_text("not DICOM\n")
    ct, mr = dicom_series(folder)  # sorted by UID; the text file is passed over
    assert (ct.uid, ct.number, len(ct.files)) == (CT_UID, "3", 26)
    assert (mr.uid, mr.number, len(mr.files)) == (MR_UID, "7", 20)
    assert mr.files == tuple(mr_files)  # slice k at z = k * 3 mm: GDCM's order is ours
    assert ct.first_file == min(ct_files)
    assert series_files(mr_files[5]) == tuple(mr_files)
    assert is_dicom_file(ct_files[0]) and is_dicom_file(mr_files[0])  # UID name, .IMA
    assert not is_dicom_file(folder / "notes")
    assert not is_dicom_file(fixtures_dir / "spleen2_ct.nii.gz")
    expected = read_volume(fixtures_dir / "totalseg_example_mr_sm.nii.gz")
    from_file = read_volume(mr_files[0])
    assert np.array_equal(from_file.array, expected.array)
    np.testing.assert_allclose(from_file.affine, expected.affine, atol=1e-4)
    assert read_header(ct_files[0]).dicom_modality == "CT"
    with pytest.raises(InputError, match="folder holds 2 DICOM series") as error:
        read_volume(folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


def test_dicom_sample_reads_a_few_slices_and_equals_the_strided_volume(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    source = read_volume(fixtures_dir / "spleen2_ct.nii.gz")  # 164 x 166 x 26, whole HU
    write_dicom_series(
        tmp_path / "ct",
        fixtures_dir / "spleen2_ct.nii.gz",
        series_uid=CT_UID,
        modality=None,
        file_name="{uid}",
    )
    # ceil(164 / 32) = ceil(166 / 32) = 6 in-plane; 26 slices <= 32: all of them
    expected = source.array.astype(np.int16)[::6, ::6, :]
    assert np.array_equal(sample_voxels(tmp_path / "ct"), expected)
    # 4 per axis: slices 0, 8, 17, 25 (evenly spaced, rounded), every 41st/42nd voxel in-plane
    assert np.array_equal(
        sample_voxels(tmp_path / "ct", per_axis=4),
        source.array.astype(np.int16)[::41, ::42, [0, 8, 17, 25]],
    )
