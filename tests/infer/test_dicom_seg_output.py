"""``segment(..., output_type="dicom-seg")``: naming, refusals before the model loads, resume,
and a SEG whose frames carry the same labels as the NIfTI mask of the same run."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series import SERIES_UID, write_dicom_series

from salign_cli.errors import InputError
from salign_cli.infer.jobs import SegmentOptions, plan_jobs
from salign_cli.infer.pipeline import segment
from salign_cli.io.volume import read_volume

DICOM_SEG = SegmentOptions(output_type="dicom-seg")


def small_series(fixtures_dir: Path, folder: Path) -> list[Path]:
    """Six slices of the spleen CT, cropped in-plane (non-square) so a random model runs fast."""
    image = sitk.ReadImage(str(fixtures_dir / "spleen2_ct.nii.gz"))
    return write_dicom_series(folder, sitk.Cast(image[20:100, 30:94, 10:16], sitk.sitkInt16))


def test_seg_outputs_are_named_like_nifti_masks_but_end_in_dcm(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "CT_A", tmp_path / "y" / "CT_B"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    beside = plan_jobs([a, b], output_type="dicom-seg")
    assert [job.output for job in beside] == [
        tmp_path / "x" / "CT_A_seg.dcm",
        tmp_path / "y" / "CT_B_seg.dcm",
    ]
    in_folder = plan_jobs([a, b], tmp_path / "out", suffix="_ai", output_type="dicom-seg")
    assert [job.output for job in in_folder] == [
        tmp_path / "out" / "CT_A_ai.dcm",
        tmp_path / "out" / "CT_B_ai.dcm",
    ]
    assert (
        plan_jobs([a], tmp_path / "one.dcm", output_type="dicom-seg")[0].output
        == tmp_path / "one.dcm"
    )
    # extras stay NIfTI/PNG beside the SEG
    assert beside[0].probabilities_path == tmp_path / "x" / "CT_A_seg_probabilities.nii.gz"
    # NIfTI naming for the same folders is unchanged
    assert plan_jobs([a])[0].output == tmp_path / "x" / "CT_A_seg.nii.gz"


def test_seg_plans_that_cannot_work_are_refused_in_one_line(tmp_path: Path) -> None:
    series = tmp_path / "CT"
    series.mkdir()
    scan = tmp_path / "in.nii.gz"
    with pytest.raises(InputError) as error:
        plan_jobs([series, scan], output_type="dicom-seg")
    assert str(error.value) == (
        f"{scan}: DICOM-SEG needs a DICOM series as input (it references the source images); "
        "use --output-type nifti"
    )
    with pytest.raises(InputError, match=r"writes \.dcm files"):
        plan_jobs([series], tmp_path / "mask.nii.gz", output_type="dicom-seg")
    with pytest.raises(InputError, match="inside the DICOM series folder"):
        plan_jobs([series], series, output_type="dicom-seg")
    with pytest.raises(InputError, match="inside the DICOM series folder"):
        plan_jobs([series], series / "seg.dcm", output_type="dicom-seg")
    with pytest.raises(InputError, match="choose one of nifti, dicom-seg"):
        plan_jobs([series], output_type="rtstruct")  # type: ignore[arg-type]


def test_a_nifti_input_is_refused_before_any_model_loads(tmp_path: Path, workspace: Path) -> None:
    scan = tmp_path / "in.nii.gz"
    scan.write_bytes(b"not read")
    # the workspace has no model: the DICOM-SEG refusal must come first
    with pytest.raises(InputError, match="DICOM-SEG needs a DICOM series"):
        segment([scan], options=DICOM_SEG)


def test_segmenting_a_series_writes_a_seg_with_the_nifti_masks_labels(
    fixtures_dir: Path, tmp_path: Path, make_bundle
) -> None:
    files = small_series(fixtures_dir, tmp_path / "CT")
    # seed 3 gives a random network that marks some pixels "spleen" and leaves others background
    bundle = make_bundle(modality="CT", classes=("background", "spleen"), seed=3)
    nifti = segment(
        [tmp_path / "CT"],
        tmp_path / "nifti",
        model=str(bundle),
        options=SegmentOptions(device="cpu"),
    )
    summary = segment(
        [tmp_path / "CT"],
        model=str(bundle),
        options=SegmentOptions(device="cpu", output_type="dicom-seg"),
    )
    (result,) = summary.results
    assert result.status == "written", result.error
    assert result.output == tmp_path / "CT_seg.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT", "CT_seg.dcm", "bundle-0", "nifti"]

    mask = read_volume(nifti.results[0].output).array  # (i, j, k) on the series' grid
    assert 0 < int(mask.sum()) < mask.size, "the test needs a mask with both labels"
    seg = hd.seg.segread(result.output)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["spleen"]
    assert [item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence] == [SERIES_UID]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert str(bundle) in algorithm.AlgorithmParameters
    for k, file in enumerate(files):  # write_dicom_series: files[k] holds slice k
        uid = pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID
        (frame,) = seg.get_pixels_by_source_instance([uid], combine_segments=True, relabel=False)
        assert np.array_equal(frame, mask[:, :, k].T), f"slice {k}"

    again = segment([tmp_path / "CT"], model=str(bundle), options=DICOM_SEG)
    assert [r.status for r in again.results] == ["skipped"] and again.model is None
    result.output.write_bytes(result.output.read_bytes()[:-64])  # a crash-truncated SEG
    redone = segment([tmp_path / "CT"], model=str(bundle), options=DICOM_SEG)
    assert [r.status for r in redone.results] == ["written"]
    assert hd.seg.segread(result.output).NumberOfFrames == seg.NumberOfFrames


def test_a_parent_holding_only_seg_outputs_is_not_a_series(tmp_path: Path) -> None:
    from salign_cli.infer.jobs import expand_inputs

    (tmp_path / "CT").mkdir()
    (tmp_path / "CT_seg.dcm").write_bytes(b"a SEG from an earlier run")
    with pytest.raises(InputError, match="no scans found"):
        expand_inputs([tmp_path])
