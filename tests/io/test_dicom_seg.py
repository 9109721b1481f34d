"""Tests for :mod:`salign_cli.io.dicom_seg`: a known mask survives the trip into a DICOM-SEG.

The expected frames come from first principles, not from the writer: a DICOM series is built
from a real fixture with SimpleITK, slice ``k`` in a file of its own, and the fixture's own label
map plays the prediction. SimpleITK's ``(z, y, x)`` array of the label image holds, at ``[k]``,
exactly the ``(Rows, Columns)`` frame that belongs to slice ``k``'s file, and slice ``k``'s
ImagePositionPatient is ITK's ``TransformIndexToPhysicalPoint((0, 0, k))``.
"""

from __future__ import annotations

import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series import SERIES_UID, write_dicom_series

from salign_cli import __version__
from salign_cli.errors import InputError
from salign_cli.io.dicom_seg import (
    SEGMENTATION_STORAGE,
    dicom_seg_problem,
    frames_for_sources,
    read_source_headers,
    write_dicom_seg,
)
from salign_cli.io.volume import read_volume

# (image, label, slices kept): RAS CT (ITK direction diag(-1, -1, 1)) with one class, and LPS MR
# (ITK identity) with a 24-value label map; both non-square in-plane, so a transpose shows.
CASES = {
    "spleen-ct-ras": ("spleen2_ct.nii.gz", "spleen2_ct_seg.nii.gz", slice(8, 20)),
    "mr-lps-multiclass": (
        "totalseg_example_mr_sm.nii.gz",
        "totalseg_example_seg_mr.nii.gz",
        slice(4, 14),
    ),
}


def fixture_series(
    fixtures_dir: Path, case: str, folder: Path
) -> tuple[sitk.Image, sitk.Image, list[Path]]:
    """The case's image (as int16) written as a series, its label image on the same grid, the files."""
    image_name, label_name, kept = CASES[case]
    image = sitk.ReadImage(str(fixtures_dir / image_name))
    label = sitk.ReadImage(str(fixtures_dir / label_name))
    image = sitk.Cast(image[:, :, kept], sitk.sitkInt16)
    label = sitk.Cast(label[:, :, kept], sitk.sitkUInt8)
    return image, label, write_dicom_series(folder, image)


def label_volume_for_series(label: sitk.Image) -> np.ndarray:
    """The label image in read_volume's (i, j, k) = ITK (x, y, z) voxel order."""
    return sitk.GetArrayFromImage(label).transpose(2, 1, 0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_known_mask_reads_back_frame_by_frame_at_its_source_positions(
    fixtures_dir: Path, tmp_path: Path, case: str
) -> None:
    image, label, files = fixture_series(fixtures_dir, case, tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    # the grid the mask lives on is the series' own: the image comes back voxel for voxel
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    labels = label_volume_for_series(label)
    highest = int(labels.max())
    class_names = ("background", *(f"class {value}" for value in range(1, highest + 1)))

    out = tmp_path / "out" / "series_seg.dcm"
    out.parent.mkdir()
    assert (
        write_dicom_seg(
            labels,
            volume,
            out,
            class_names=class_names,
            model_name="org/model@v1",
            weights_sha256="ab" * 32,
        )
        == out
    )
    assert [p.name for p in out.parent.iterdir()] == ["series_seg.dcm"]  # no temp file left

    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.SegmentationType == "BINARY"
    assert [item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence] == [SERIES_UID]
    assert [s.SegmentNumber for s in seg.SegmentSequence] == list(range(1, highest + 1))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(class_names[1:])
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("salign", __version__)
    assert "org/model@v1" in algorithm.AlgorithmParameters
    assert seg.ManufacturerModelName == "org/model@v1"

    expected_frames = sitk.GetArrayFromImage(label)  # [k] = (Rows, Columns) frame of slice k
    positions = {}
    for k, file in enumerate(files):
        source = pydicom.dcmread(file, stop_before_pixels=True)
        positions[source.SOPInstanceUID] = image.TransformIndexToPhysicalPoint((0, 0, k))
        (frame,) = seg.get_pixels_by_source_instance(
            [source.SOPInstanceUID], combine_segments=True, relabel=False
        )
        assert np.array_equal(frame, expected_frames[k]), f"slice {k} ({file.name})"
    for item in seg.PerFrameFunctionalGroupsSequence:
        source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        written = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert written == pytest.approx(positions[source_uid], abs=1e-4)
    assert dicom_seg_problem(out, tmp_path / "series") is None


def test_frames_follow_each_source_position_not_the_list_order(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    _, label, _ = fixture_series(fixtures_dir, "spleen-ct-ras", tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    labels = label_volume_for_series(label)
    sources = read_source_headers(tmp_path / "series")
    shuffled = sources.copy()
    random.Random(0).shuffle(shuffled)
    expected = sitk.GetArrayFromImage(label)
    slice_of = {s.SOPInstanceUID: k for k, s in enumerate(sources)}  # SimpleITK's order = k
    frames = frames_for_sources(labels, volume, shuffled)
    for source, frame in zip(shuffled, frames, strict=True):
        assert np.array_equal(frame, expected[slice_of[source.SOPInstanceUID]])


def test_a_slice_off_the_volume_grid_is_refused_naming_it(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    _, label, _ = fixture_series(fixtures_dir, "spleen-ct-ras", tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    sources = read_source_headers(tmp_path / "series")
    moved = sources[3]
    moved.ImagePositionPatient = [
        *moved.ImagePositionPatient[:2],
        float(moved.ImagePositionPatient[2]) + 2.5,
    ]
    with pytest.raises(InputError, match="does not lie on a slice") as error:
        frames_for_sources(label_volume_for_series(label), volume, sources)
    assert Path(moved.filename).name in str(error.value) and "\n" not in str(error.value)


def test_two_images_at_one_position_are_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    _, label, _ = fixture_series(fixtures_dir, "spleen-ct-ras", tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    sources = read_source_headers(tmp_path / "series")
    sources[1].ImagePositionPatient = sources[0].ImagePositionPatient  # slice 1 never covered
    with pytest.raises(InputError, match="do not cover each slice of the volume once"):
        frames_for_sources(label_volume_for_series(label), volume, sources)


def test_a_series_without_frame_of_reference_is_one_line_input_error_and_no_file(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    image = sitk.Cast(
        sitk.ReadImage(str(fixtures_dir / "spleen2_ct.nii.gz"))[:, :, 8:11], sitk.sitkInt16
    )
    write_dicom_series(tmp_path / "series", image, frame_of_reference=False)
    volume = read_volume(tmp_path / "series")
    out = tmp_path / "out" / "series_seg.dcm"
    out.parent.mkdir()
    with pytest.raises(InputError, match="Frame Of Reference") as error:
        write_dicom_seg(
            np.zeros(volume.shape, np.uint8),
            volume,
            out,
            class_names=("background", "x"),
            model_name="m",
        )
    message = str(error.value)
    assert message.startswith(str(tmp_path / "series")) and "\n" not in message
    assert "--output-type nifti" in message
    assert list(out.parent.iterdir()) == []


def test_an_empty_mask_keeps_every_frame_and_reads_back_empty(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    image = sitk.Cast(
        sitk.ReadImage(str(fixtures_dir / "spleen2_ct.nii.gz"))[:, :, 8:11], sitk.sitkInt16
    )
    write_dicom_series(tmp_path / "series", image)
    volume = read_volume(tmp_path / "series")
    out = tmp_path / "empty_seg.dcm"
    write_dicom_seg(
        np.zeros(volume.shape, np.uint8),
        volume,
        out,
        class_names=("background", "spleen"),
        model_name="m",
    )
    seg = hd.seg.segread(out)
    assert seg.NumberOfFrames == 3  # one per source slice: a SEG cannot have none
    volume_back = seg.get_volume(combine_segments=True)
    assert volume_back.array.shape == (3, image.GetHeight(), image.GetWidth())
    assert not volume_back.array.any()


def test_problem_says_why_an_existing_file_is_not_this_series_seg(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    image = sitk.Cast(
        sitk.ReadImage(str(fixtures_dir / "spleen2_ct.nii.gz"))[:, :, 8:11], sitk.sitkInt16
    )
    write_dicom_series(tmp_path / "series", image)
    write_dicom_series(tmp_path / "other", image, series_uid=f"{SERIES_UID}.9")
    volume = read_volume(tmp_path / "series")
    labels = np.zeros(volume.shape, np.uint8)
    labels[40:60, 50:70, 1] = 1
    out = tmp_path / "series_seg.dcm"
    write_dicom_seg(labels, volume, out, class_names=("background", "spleen"), model_name="m")
    assert dicom_seg_problem(out, tmp_path / "series") is None
    assert "references series" in dicom_seg_problem(out, tmp_path / "other")
    truncated = tmp_path / "truncated_seg.dcm"
    truncated.write_bytes(out.read_bytes()[:-100])
    assert dicom_seg_problem(truncated, tmp_path / "series") is not None
    source_file = next((tmp_path / "series").iterdir())
    assert "not a DICOM Segmentation" in dicom_seg_problem(source_file, tmp_path / "series")


def test_pixel_measures_come_from_the_slice_positions_not_a_wrong_source_tag(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    image = sitk.Cast(
        sitk.ReadImage(str(fixtures_dir / "spleen2_ct.nii.gz"))[:, :, 8:11], sitk.sitkInt16
    )
    # slices lie 5 mm apart, but the files claim 1 mm (some exports write such tags)
    write_dicom_series(tmp_path / "series", image, spacing_between_slices_tag=1.0)
    volume = read_volume(tmp_path / "series")
    out = tmp_path / "series_seg.dcm"
    labels = np.zeros(volume.shape, np.uint8)
    labels[40:60, 50:70, :] = 1
    write_dicom_seg(labels, volume, out, class_names=("background", "spleen"), model_name="m")
    seg = hd.seg.segread(out)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(5.0)
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.794922] * 2, abs=1e-6)
    back = seg.get_volume(combine_segments=True)
    assert back.array.shape == (3, 166, 164)  # 3 slices, not 11 at 1 mm
    assert int(back.array.sum()) == 3 * 20 * 20
