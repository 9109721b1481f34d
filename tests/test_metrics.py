"""Metrics with answers computed by hand: overlaps counted voxel by voxel, distances by Pythagoras."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from salign_cli.errors import InputError
from salign_cli.metrics.aggregate import MeanSd
from salign_cli.metrics.cases import reference_dice, score_arrays
from salign_cli.metrics.folders import evaluate_folders, write_summary
from salign_cli.metrics.masks import (
    ConfusionCounts,
    confusion_counts,
    dice,
    hd95,
    nsd,
    surface_distances,
)
from salign_cli.metrics.pairing import match_cases


def save_labels(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a label NIfTI with nibabel directly (not with the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), path)
    return path


def voxels(shape: tuple[int, ...], *indices: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for index in indices:
        mask[index] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Dice and confusion counts


def overlap_example() -> tuple[np.ndarray, np.ndarray]:
    """3×3×3: prediction 4 voxels, reference 6, 3 shared."""
    shape = (3, 3, 3)
    shared = [(0, 0, 0), (0, 0, 1), (0, 0, 2)]
    pred = voxels(shape, *shared, (1, 1, 1))
    ref = voxels(shape, *shared, (2, 0, 0), (2, 0, 1), (2, 0, 2))
    return pred, ref


def test_confusion_counts_by_hand() -> None:
    pred, ref = overlap_example()
    # tp 3 shared; fp 4 - 3; fn 6 - 3; tn 27 - (3 + 1 + 3)
    assert confusion_counts(pred, ref) == ConfusionCounts(tp=3, fp=1, fn=3, tn=20)


def test_dice_partial_overlap() -> None:
    pred, ref = overlap_example()
    assert dice(pred, ref) == pytest.approx(2 * 3 / (4 + 6))  # 0.6


def test_dice_empty_rule() -> None:
    empty = np.zeros((3, 3, 3), bool)
    some = voxels((3, 3, 3), (1, 1, 1))
    assert math.isnan(dice(empty, empty))  # empty in both: undefined
    assert dice(some, empty) == 0.0  # reference empty, prediction not
    assert dice(empty, some) == 0.0  # prediction empty, reference not
    assert dice(some, some) == 1.0


def test_shape_mismatch_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_counts(np.zeros((2, 2)), np.zeros((2, 3)))


def test_mean_sd_skips_undefined_values() -> None:
    summary = MeanSd.of([0.6, 1.0, math.nan])
    assert summary.n == 2
    assert summary.mean == pytest.approx(0.8)
    assert summary.sd == pytest.approx(math.sqrt(0.2**2 + 0.2**2))  # sample sd, ddof 1
    single = MeanSd.of([0.5])
    assert (single.mean, single.n) == (0.5, 1) and math.isnan(single.sd)
    assert math.isnan(MeanSd.of([math.nan]).mean)


# ---------------------------------------------------------------------------------------------
# HD95


def test_score_arrays_is_dice_per_class_of_two_label_arrays() -> None:
    # class 1: TP 1 (index 0), FP 1 (index 1) -> 2/3; class 2: TP 1 (index 3), FN 1 (index 4) -> 2/3
    # class 3: absent from both -> NaN (empty-mask rule); class 4 only predicted -> 0
    prediction = np.array([1, 1, 0, 2, 0, 4])
    reference = np.array([1, 0, 0, 2, 2, 0])
    scores = score_arrays(prediction, reference, [1, 2, 3, 4], (1.0,))
    assert scores[1].dice == pytest.approx(2 / 3)
    assert scores[1].counts == ConfusionCounts(tp=1, fp=1, fn=0, tn=4)
    assert scores[2].dice == pytest.approx(2 / 3)
    assert math.isnan(scores[3].dice) and scores[3].counts.empty_both
    assert scores[4].dice == 0.0
    assert all(r.hd95_mm is None and r.nsd is None for r in scores.values())


def test_score_arrays_measures_distances_in_the_given_spacing() -> None:
    # one voxel 3 apart along the last axis at 2 mm: HD95 = 6 mm; NSD within 5 mm = 0, 7 mm = 1
    prediction = np.zeros((1, 1, 6), dtype=np.uint8)
    reference = np.zeros((1, 1, 6), dtype=np.uint8)
    prediction[0, 0, 0], reference[0, 0, 3] = 1, 1
    spacing = (2.0, 2.0, 2.0)
    near = score_arrays(prediction, reference, [1], spacing, with_hd95=True, nsd_tolerance_mm=5)
    far = score_arrays(prediction, reference, [1], spacing, nsd_tolerance_mm=7)
    assert near[1].dice == 0.0 and near[1].hd95_mm == pytest.approx(6.0)
    assert near[1].nsd == 0.0 and far[1].nsd == 1.0 and far[1].hd95_mm is None


def test_hd95_single_voxels_three_apart() -> None:
    pred = voxels((1, 1, 6), (0, 0, 0))
    ref = voxels((1, 1, 6), (0, 0, 3))
    assert hd95(pred, ref, (2.0, 2.0, 2.0)) == pytest.approx(6.0)  # 3 voxels × 2 mm


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_cube_shifted_by_one_voxel(axis: int) -> None:
    # A 4³ cube and the same cube one voxel further along `axis`. Every surface voxel of either
    # cube is 0 or 1 voxel from the other's surface: the leading face (16 voxels) and the
    # trailing face's 2×2 interior lie one voxel away, the side faces coincide. So 20 of 56
    # surface distances are one voxel in each direction, well over 5 %: HD95 = 1 voxel = 1.5 mm.
    pred = np.zeros((8, 8, 8), bool)
    pred[2:6, 2:6, 2:6] = True
    ref = np.roll(pred, 1, axis=axis)
    assert hd95(pred, ref, (1.5, 1.5, 1.5)) == pytest.approx(1.5)


def test_hd95_uses_each_axis_spacing() -> None:
    pred = voxels((4, 4, 4), (0, 0, 0))
    ref = voxels((4, 4, 4), (1, 0, 1))  # one voxel along axis 0 and one along axis 2
    assert hd95(pred, ref, (1.0, 2.0, 3.0)) == pytest.approx(math.sqrt(1.0**2 + 3.0**2))
    assert hd95(pred, ref, (3.0, 2.0, 1.0)) == pytest.approx(math.sqrt(3.0**2 + 1.0**2))
    along_1 = voxels((4, 4, 4), (0, 2, 0))
    assert hd95(pred, along_1, (1.0, 2.0, 3.0)) == pytest.approx(4.0)  # 2 voxels × 2 mm


def test_hd95_is_the_larger_directed_95th_percentile() -> None:
    # In a (1, 1, n) array every mask voxel touches the border, so every voxel is surface.
    # Prediction: voxel 0; reference: voxels 0..9. Prediction → reference: [0]. Reference →
    # prediction: 0, 1, ..., 9, whose 95th percentile (linear) sits at rank 0.95 · 9 = 8.55.
    pred = voxels((1, 1, 20), (0, 0, 0))
    ref = np.zeros((1, 1, 20), bool)
    ref[0, 0, :10] = True
    assert hd95(pred, ref, (1.0, 1.0, 2.0)) == pytest.approx(8.55 * 2.0)
    assert hd95(ref, pred, (1.0, 1.0, 2.0)) == pytest.approx(8.55 * 2.0)  # symmetric


def test_hd95_ignores_a_lone_outlier() -> None:
    # 100 shared voxels plus one stray prediction voxel 51 voxels away: the Hausdorff distance
    # is 51, but the stray is 1 of 101 distances, above the 95th percentile (rank 95 of 0..100).
    ref = np.zeros((1, 1, 160), bool)
    ref[0, 0, :100] = True
    pred = ref.copy()
    pred[0, 0, 150] = True
    assert hd95(pred, ref, (1.0, 1.0, 1.0)) == 0.0


def test_hd95_undefined_when_either_mask_is_empty() -> None:
    empty = np.zeros((3, 3, 3), bool)
    some = voxels((3, 3, 3), (1, 1, 1))
    assert math.isnan(hd95(empty, some, (1, 1, 1)))
    assert math.isnan(hd95(some, empty, (1, 1, 1)))
    assert math.isnan(hd95(empty, empty, (1, 1, 1)))


# ---------------------------------------------------------------------------------------------
# normalised surface Dice


def shifted_cubes(shift: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 4³ cube and the same cube ``shift`` voxels further along ``axis``, with room to spare."""
    cube = np.zeros((12, 12, 12), bool)
    cube[2:6, 2:6, 2:6] = True
    return cube, np.roll(cube, shift, axis=axis)


def test_nsd_of_identical_masks_is_one() -> None:
    cube, _ = shifted_cubes(0)
    assert nsd(cube, cube, (1.0, 1.0, 1.0), 0.0) == 1.0
    assert nsd(cube, cube, (0.7, 2.0, 5.0), 0.0) == 1.0


# A 4³ cube has 56 surface voxels (64 minus the 2³ interior). Shift a copy by 2 voxels along
# axis 0, so it spans rows 4..7 where the cube spans 2..5. A cube voxel whose (y, z) lies on the
# ring of the cross-section (12 of 16) has copy surface voxels in the same (y, z) at rows 4..7:
# row 2 → 2 voxels, row 3 → 1, rows 4 and 5 → 0. The 4 inner (y, z) are surface only on the
# end faces: row 2 → 2 voxels (to the copy's face at row 4; the ring is √(2² + 1) away), row
# 5 → 1 voxel (to the copy's ring in the same row). So per cube, at 1 mm spacing:
# 24 voxels at 0 mm, 16 at 1 mm, 16 at 2 mm; the same for the copy by symmetry.
@pytest.mark.parametrize(
    ("tolerance_mm", "expected"),
    [(0.0, 24 / 56), (0.5, 24 / 56), (1.0, 40 / 56), (1.9, 40 / 56), (2.0, 1.0), (3.0, 1.0)],
)
def test_nsd_cube_shifted_by_two_voxels(tolerance_mm: float, expected: float) -> None:
    cube, copy = shifted_cubes(2)
    assert nsd(cube, copy, (1.0, 1.0, 1.0), tolerance_mm) == pytest.approx(expected)
    assert nsd(copy, cube, (1.0, 1.0, 1.0), tolerance_mm) == pytest.approx(expected)


def test_nsd_counts_the_same_distances_hd95_uses() -> None:
    cube, copy = shifted_cubes(2)
    pred_to_ref, ref_to_pred = surface_distances(cube, copy, (1.0, 1.0, 1.0))
    for distances in (pred_to_ref, ref_to_pred):  # the hand count above, one mask at a time
        values, counts = np.unique(distances, return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
            0.0: 24,
            1.0: 16,
            2.0: 16,
        }


def test_nsd_measures_anisotropic_voxels_in_mm() -> None:
    # The same shift with 2 mm along axis 0 and 1 mm in-plane: ring rows 3 and 2 lie 2 and 4 mm
    # away, the inner row-2 face 4 mm (√(4² + 1) via the ring), the inner row-5 face 1 mm (the
    # copy's ring in the same row, in-plane). Per cube: 24 at 0, 4 at 1, 12 at 2, 16 at 4 mm.
    cube, copy = shifted_cubes(2)
    spacing = (2.0, 1.0, 1.0)
    assert nsd(cube, copy, spacing, 1.0) == pytest.approx(28 / 56)
    assert nsd(cube, copy, spacing, 2.0) == pytest.approx(40 / 56)
    assert nsd(cube, copy, spacing, 3.9) == pytest.approx(40 / 56)
    assert nsd(cube, copy, spacing, 4.0) == 1.0
    # the shift along an in-plane axis: 1 mm voxels, so the isotropic answer at 1 mm again
    cube, along_1 = shifted_cubes(2, axis=1)
    assert nsd(cube, along_1, spacing, 1.0) == pytest.approx(40 / 56)


def test_nsd_empty_mask_rule() -> None:
    empty = np.zeros((3, 3, 3), bool)
    some = voxels((3, 3, 3), (1, 1, 1))
    assert math.isnan(nsd(empty, empty, (1, 1, 1), 2.0))  # nothing to score, like Dice
    assert nsd(empty, some, (1, 1, 1), 2.0) == 0.0  # no surface voxel has a partner
    assert nsd(some, empty, (1, 1, 1), 2.0) == 0.0


def test_nsd_refuses_a_negative_tolerance_and_a_wrong_spacing() -> None:
    cube, _ = shifted_cubes(0)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(cube, cube, (1, 1, 1), -1.0)
    with pytest.raises(ValueError, match="spacing"):
        nsd(cube, cube, (1, 1), 1.0)


def test_nsd_of_a_real_label_against_itself_shifted(hippocampus_dir: Path) -> None:
    # Shifting a mask by k voxels moves every surface voxel by exactly k·spacing onto a surface
    # voxel of the copy: NSD is 1 from that tolerance on. Below one voxel, the copy's leading
    # face has no partner (no reference voxel lies beyond it), so NSD < 1.
    image = nib.load(hippocampus_dir / "labelsTr" / "hippocampus_001.nii.gz")
    labels = np.asarray(image.dataobj).astype(np.int32)
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    for label in (1, 2):
        mask = np.pad(labels == label, 3)
        copy = np.roll(mask, 2, axis=1)
        step = 2 * spacing[1]
        assert nsd(mask, mask, spacing, 0.0) == 1.0
        assert nsd(mask, copy, spacing, step) == 1.0
        below = [nsd(mask, copy, spacing, t) for t in (0.0, 0.5 * spacing[1], step * 0.99)]
        assert all(0.0 < value < 1.0 for value in below)
        assert below == sorted(below)  # a larger tolerance never lowers NSD


def test_nsd_on_files_is_reported_per_class_and_overall(tmp_path: Path) -> None:
    cube, copy = shifted_cubes(2)
    ref = cube.astype(np.uint8)
    pred = copy.astype(np.uint8)
    ref[10, 10, 10] = 2  # class 2 only in the reference: NSD 0
    save_labels(tmp_path / "p" / "c.nii.gz", pred)
    save_labels(tmp_path / "l" / "c.nii.gz", ref)
    summary = evaluate_folders(tmp_path / "p", tmp_path / "l", nsd_tolerance_mm=1.0)
    class_1, class_2 = summary.classes
    assert class_1.nsd.mean == pytest.approx(40 / 56)
    assert class_2.nsd.mean == 0.0
    assert summary.overall_nsd.mean == pytest.approx((40 / 56 + 0.0) / 2)
    payload = summary.to_dict()
    assert payload["nsd_tolerance_mm"] == 1.0
    assert payload["metric_per_case"][0]["metrics"]["1"]["nsd"] == pytest.approx(40 / 56)
    assert "NSD" in payload["empty_mask_rule"]
    without = evaluate_folders(tmp_path / "p", tmp_path / "l").to_dict()
    assert "nsd_tolerance_mm" not in without and "nsd" not in without["overall"]
    with pytest.raises(InputError, match="nsd_tolerance_mm"):
        evaluate_folders(tmp_path / "p", tmp_path / "l", nsd_tolerance_mm=-1.0)


def test_nsd_of_a_class_absent_from_a_case_is_undefined(tmp_path: Path) -> None:
    preds, labels = two_case_folders(tmp_path)
    summary = evaluate_folders(preds, labels, nsd_tolerance_mm=1.0)
    class_2 = summary.classes[1]
    # case_a: class 2 identical → 1; case_b: empty in both → NaN, excluded like its Dice
    assert math.isnan(summary.cases[1].classes[2].nsd)
    assert (class_2.nsd.mean, class_2.nsd.n, class_2.n_empty_both) == (1.0, 1, 1)


# ---------------------------------------------------------------------------------------------
# folders on disk


def two_case_folders(root: Path) -> tuple[Path, Path]:
    """case_a: class 1 is the 0.6 overlap example, class 2 identical (Dice 1).
    case_b (predicted as case_b_seg): class 1 identical, class 2 empty in both, and a stray
    class 3 in the prediction only."""
    pred_a, ref_a = overlap_example()
    ref_a_labels = ref_a.astype(np.uint8)
    pred_a_labels = pred_a.astype(np.uint8)
    ref_a_labels[1, 2, 2] = pred_a_labels[1, 2, 2] = 2
    ref_a_labels[1, 2, 1] = pred_a_labels[1, 2, 1] = 2
    ref_b = np.zeros((3, 3, 3), np.uint8)
    ref_b[0, 1, :2] = 1
    pred_b = ref_b.copy()
    pred_b[2, 2, 2] = 3
    preds, labels = root / "pred", root / "labels"
    save_labels(preds / "case_a.nii.gz", pred_a_labels)
    save_labels(preds / "case_b_seg.nii.gz", pred_b)
    save_labels(labels / "case_a.nii.gz", ref_a_labels)
    save_labels(labels / "case_b.nii.gz", ref_b)
    return preds, labels


def test_evaluate_folders_hand_computed_means(tmp_path: Path) -> None:
    preds, labels = two_case_folders(tmp_path)
    calls: list[tuple[int, int]] = []
    summary = evaluate_folders(preds, labels, progress=lambda *call: calls.append(call))
    assert calls == [(1, 2), (2, 2)]
    assert [case.case for case in summary.cases] == ["case_a", "case_b"]
    class_1, class_2 = summary.classes  # class 3 is in no reference: not scored by default
    assert (class_1.label, class_1.name, class_2.label) == (1, "class 1", 2)
    assert class_1.dice.mean == pytest.approx((0.6 + 1.0) / 2)
    assert class_1.dice.sd == pytest.approx(math.sqrt(2 * 0.2**2))
    assert (class_1.dice.n, class_1.n_empty_both) == (2, 0)
    assert class_2.dice.mean == 1.0
    assert (class_2.dice.n, class_2.n_empty_both) == (1, 1)
    assert math.isnan(summary.cases[1].classes[2].dice)
    # overall: case_a averages 0.6 and 1.0 → 0.8; case_b has only class 1 → 1.0
    assert summary.overall_dice.mean == pytest.approx(0.9)
    assert summary.overall_dice.sd == pytest.approx(math.sqrt(2 * 0.1**2))
    assert summary.overall_hd95_mm is None and class_1.hd95_mm is None
    assert summary.cases[1].classes[2].counts == ConfusionCounts(0, 0, 0, 27)


def test_explicit_classes_score_a_prediction_only_label_as_zero(tmp_path: Path) -> None:
    preds, labels = two_case_folders(tmp_path)
    (class_3,) = evaluate_folders(preds, labels, classes=[3]).classes
    # case_a: empty in both → NaN, counted; case_b: empty reference, 1 predicted voxel → 0
    assert (class_3.dice.mean, class_3.dice.n, class_3.n_empty_both) == (0.0, 1, 1)


@pytest.mark.parametrize("classes", [[0], [-1], []])
def test_bad_classes_are_refused(tmp_path: Path, classes: list[int]) -> None:
    preds, labels = two_case_folders(tmp_path)
    with pytest.raises(InputError, match="classes"):
        evaluate_folders(preds, labels, classes=classes)


def test_hd95_on_files_uses_the_affine_spacing(tmp_path: Path) -> None:
    affine = np.diag([0.5, 1.0, 2.5, 1.0])
    ref = np.zeros((4, 4, 6), np.uint8)
    pred = ref.copy()
    ref[1, 1, 0] = pred[1, 1, 3] = 1  # 3 voxels apart along axis 2 (2.5 mm)
    ref[0, 0, 0] = 2  # class 2 only in the reference: HD95 undefined
    save_labels(tmp_path / "p" / "c.nii.gz", pred, affine)
    save_labels(tmp_path / "l" / "c.nii.gz", ref, affine)
    summary = evaluate_folders(tmp_path / "p", tmp_path / "l", hd95=True)
    class_1, class_2 = summary.classes
    assert class_1.hd95_mm.mean == pytest.approx(7.5)
    assert (class_2.hd95_mm.n, class_2.n_hd95_undefined, class_2.dice.mean) == (0, 1, 0.0)
    assert summary.overall_hd95_mm.mean == pytest.approx(7.5)


def test_geometry_mismatch_names_both_files(tmp_path: Path) -> None:
    ref = np.zeros((3, 3, 3), np.uint8)
    ref[1, 1, 1] = 1
    save_labels(tmp_path / "l" / "c.nii.gz", ref)
    save_labels(tmp_path / "p" / "c.nii.gz", ref, np.diag([1.0, 1.0, 1.01, 1.0]))
    save_labels(tmp_path / "p2" / "c.nii.gz", np.zeros((3, 3, 4), np.uint8))
    with pytest.raises(InputError, match="affine") as error:
        evaluate_folders(tmp_path / "p", tmp_path / "l")
    assert str(tmp_path / "p" / "c.nii.gz") in str(error.value)
    assert str(tmp_path / "l" / "c.nii.gz") in str(error.value)
    with pytest.raises(InputError, match=r"shape \(3, 3, 4\) vs \(3, 3, 3\)"):
        evaluate_folders(tmp_path / "p2", tmp_path / "l")


def test_affine_within_tolerance_is_the_same_grid(tmp_path: Path) -> None:
    ref = np.zeros((3, 3, 3), np.uint8)
    ref[1, 1, 1] = 1
    nudged = np.eye(4)
    nudged[0, 3] = 5e-5
    save_labels(tmp_path / "l" / "c.nii.gz", ref)
    save_labels(tmp_path / "p" / "c.nii.gz", ref, nudged)
    assert evaluate_folders(tmp_path / "p", tmp_path / "l").classes[0].dice.mean == 1.0


def test_fractional_labels_are_refused_and_whole_floats_cast(tmp_path: Path) -> None:
    ref = np.zeros((3, 3, 3), np.uint8)
    ref[1, 1, 1] = 1
    save_labels(tmp_path / "l" / "c.nii.gz", ref)
    save_labels(tmp_path / "whole" / "c.nii.gz", ref.astype(np.float32))
    fractional = ref.astype(np.float32)
    fractional[0, 0, 0] = 0.5
    save_labels(tmp_path / "frac" / "c.nii.gz", fractional)
    assert evaluate_folders(tmp_path / "whole", tmp_path / "l").classes[0].dice.mean == 1.0
    with pytest.raises(InputError, match=r"whole numbers.*0\.5") as error:
        evaluate_folders(tmp_path / "frac", tmp_path / "l")
    assert str(tmp_path / "frac" / "c.nii.gz") in str(error.value)


def test_matching_by_case_name_with_seg_suffix_and_leftovers(tmp_path: Path) -> None:
    one = np.ones((2, 2, 2), np.uint8)
    for name in ("a.nii.gz", "b.nii.gz", "only_ref.nii.gz", "x_seg.nii.gz"):
        save_labels(tmp_path / "l" / name, one)
    for name in ("a_seg.nii.gz", "b.nii.gz", "extra.nii.gz", "x_seg.nii.gz"):
        save_labels(tmp_path / "p" / name, one)
    (tmp_path / "p" / "notes.txt").write_text("not a scan")
    match = match_cases(tmp_path / "p", tmp_path / "l")
    assert [(p.case, p.prediction.name) for p in match.pairs] == [
        ("a", "a_seg.nii.gz"),
        ("b", "b.nii.gz"),
        ("x_seg", "x_seg.nii.gz"),  # an exact name wins over stripping _seg
    ]
    assert [p.name for p in match.unmatched_predictions] == ["extra.nii.gz"]
    assert [p.name for p in match.unmatched_references] == ["only_ref.nii.gz"]


def test_two_predictions_for_one_case_are_refused(tmp_path: Path) -> None:
    one = np.ones((2, 2, 2), np.uint8)
    save_labels(tmp_path / "l" / "a.nii.gz", one)
    save_labels(tmp_path / "p" / "a.nii.gz", one)
    save_labels(tmp_path / "p" / "a.nii", one)
    with pytest.raises(InputError, match="second prediction for case 'a'"):
        match_cases(tmp_path / "p", tmp_path / "l")


def test_a_mask_beside_its_input_is_the_prediction(tmp_path: Path) -> None:
    # `salign segment` writes a_seg.nii.gz beside a.nii.gz; the input image is not a prediction
    one = np.ones((2, 2, 2), np.uint8)
    save_labels(tmp_path / "l" / "a.nii.gz", one)
    save_labels(tmp_path / "p" / "a.nii.gz", one)
    save_labels(tmp_path / "p" / "a_seg.nii.gz", one)
    save_labels(tmp_path / "p" / "b.nii.gz", one)
    match = match_cases(tmp_path / "p", tmp_path / "l")
    assert [(pair.case, pair.prediction.name) for pair in match.pairs] == [("a", "a_seg.nii.gz")]
    assert [path.name for path in match.unmatched_predictions] == ["b.nii.gz"]


def test_no_match_and_mixed_arguments_are_input_errors(tmp_path: Path) -> None:
    one = np.ones((2, 2, 2), np.uint8)
    save_labels(tmp_path / "l" / "a.nii.gz", one)
    save_labels(tmp_path / "p" / "b.nii.gz", one)
    with pytest.raises(InputError, match="no prediction matches"):
        evaluate_folders(tmp_path / "p", tmp_path / "l")
    with pytest.raises(InputError, match="two folders or two files"):
        evaluate_folders(tmp_path / "p" / "b.nii.gz", tmp_path / "l")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no label files"):
        evaluate_folders(tmp_path / "p", tmp_path / "empty")


def test_all_empty_references_need_explicit_classes(tmp_path: Path) -> None:
    save_labels(tmp_path / "l" / "a.nii.gz", np.zeros((2, 2, 2), np.uint8))
    save_labels(tmp_path / "p" / "a.nii.gz", np.ones((2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="every reference is empty"):
        evaluate_folders(tmp_path / "p", tmp_path / "l")
    (class_1,) = evaluate_folders(tmp_path / "p", tmp_path / "l", classes=[1]).classes
    assert (class_1.dice.mean, class_1.n_empty_both) == (0.0, 0)


def test_two_single_files_are_paired_as_given(tmp_path: Path) -> None:
    pred, ref = overlap_example()
    pred_path = save_labels(tmp_path / "prediction.nii.gz", pred.astype(np.uint8))
    ref_path = save_labels(tmp_path / "truth.nii.gz", ref.astype(np.uint8))
    summary = evaluate_folders(pred_path, ref_path)
    assert summary.classes[0].dice.mean == pytest.approx(0.6)


@pytest.mark.parametrize(
    "labels_entry",
    [{"0": "background", "1": "Anterior"}, {"background": 0, "Anterior": 1}],
    ids=["msd", "nnunet-v2"],
)
def test_class_names_from_dataset_json_above_the_labels(tmp_path: Path, labels_entry: dict) -> None:
    preds, labels = two_case_folders(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels_entry}))
    names = [c.name for c in evaluate_folders(preds, labels).classes]
    assert names == ["Anterior", "class 2"]


def test_summary_json_is_written_with_null_for_undefined(tmp_path: Path) -> None:
    preds, labels = two_case_folders(tmp_path)
    path = write_summary(evaluate_folders(preds, labels), tmp_path / "out" / "summary.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]  # no partials
    payload = json.loads(path.read_text())  # strict JSON: NaN would be refused below
    json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"{token} in JSON"))
    assert payload["classes"]["2"]["n_empty_both"] == 1
    assert payload["metric_per_case"][1]["metrics"]["2"]["dice"] is None
    assert payload["classes"]["1"]["dice"]["mean"] == pytest.approx(0.8)
    assert "n_empty_both" in payload["empty_mask_rule"]


def test_nnunet_inputs_and_their_masks_match_labels_by_case(tmp_path: Path) -> None:
    # nnU-Net names single-channel inputs case_0000; the labels are plain case names
    one = np.ones((2, 2, 2), np.uint8)
    for name in ("hippo_001.nii.gz", "hippo_002.nii.gz"):
        save_labels(tmp_path / "labelsTs" / name, one)
    for name in ("hippo_001_0000.nii.gz", "hippo_001_seg.nii.gz", "hippo_002_0000.nii.gz"):
        save_labels(tmp_path / "preds" / name, one)
    match = match_cases(tmp_path / "preds", tmp_path / "labelsTs")
    # 001: the mask beside its input is the prediction; 002: a bare nnU-Net-named prediction
    assert [(p.case, p.prediction.name) for p in match.pairs] == [
        ("hippo_001", "hippo_001_seg.nii.gz"),
        ("hippo_002", "hippo_002_0000.nii.gz"),
    ]
    assert match.unmatched_predictions == ()


def test_reference_dice_is_the_mean_over_classes_present_in_either(tmp_path: Path) -> None:
    from salign_cli.io.volume import read_volume

    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 1, 1), np.float32), np.eye(4)), scan)
    volume = read_volume(scan)
    reference = tmp_path / "reference.nii.gz"
    nib.save(
        nib.Nifti1Image(np.array([1, 0, 0, 2], np.uint8).reshape(4, 1, 1), np.eye(4)), reference
    )
    labels = np.array([1, 1, 0, 2]).reshape(4, 1, 1)
    # class 1: 2·1 / (2 + 1) = 2/3; class 2: 1; class 3 absent from both: left out
    assert reference_dice(labels, volume, reference) == pytest.approx((2 / 3 + 1) / 2)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 1, 1), np.uint8), np.eye(4)), empty)
    assert reference_dice(np.zeros((4, 1, 1), int), volume, empty) is None
    elsewhere = tmp_path / "elsewhere.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 1, 1), np.uint8), np.diag([2.0, 1, 1, 1])), elsewhere)
    with pytest.raises(InputError, match="not on the grid"):
        reference_dice(labels, volume, elsewhere)
