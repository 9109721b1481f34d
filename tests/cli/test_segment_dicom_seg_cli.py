"""`salign segment --output-type dicom-seg` on the command line: a SEG beside the series, and a
one-line exit-2 refusal for a NIfTI input that loads no model."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from dicom_series import SERIES_UID, write_dicom_series


def test_a_series_gets_a_seg_beside_it(cli, tmp_path: Path, make_bundle) -> None:
    image = sitk.GetImageFromArray(
        np.random.default_rng(0).normal(0, 300, size=(3, 12, 10)).astype(np.int16)
    )
    image.SetSpacing((0.8, 0.8, 2.5))
    write_dicom_series(tmp_path / "CT", image)
    bundle = make_bundle(modality="CT", classes=("background", "liver", "spleen"))
    result = cli(
        "segment", str(tmp_path / "CT"), "--output-type", "dicom-seg", "--model", str(bundle)
    )
    assert result.exit_code == 0, result.output
    seg = pydicom.dcmread(tmp_path / "CT_seg.dcm")
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    assert (seg.Rows, seg.Columns) == (12, 10)


def test_a_nifti_input_is_one_line_and_exit_2(cli, tmp_path: Path, workspace: Path) -> None:
    scan = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), scan)
    result = cli("segment", str(scan), "--output-type", "dicom-seg")
    assert result.exit_code == 2
    assert "DICOM-SEG needs a DICOM series as input" in result.output
    assert "--output-type nifti" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]
