"""The fine-tuning planner: known answers on three kinds of data, overrides, the fingerprint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from salign_cli.errors import InputError
from salign_cli.train.plan import (
    BIAS_FIELD_MIN_FOV_MM,
    CONTINUE_STEPS_FRACTION,
    MIN_BATCH,
    MIN_CAPPED_BATCH,
    MIN_SLICE_PASSES,
    PRETRAINED_LR_SCALE,
    PRETRAINED_MAX_STEPS_FACTOR,
    FinetunePlan,
    Fingerprint,
    PlanBudget,
    PlanOverrides,
    ScanGeometry,
    fingerprint_of,
    plan_finetune,
    planned_spacing,
    scan_geometry,
)
from salign_cli.train.recipe import CPU_RECIPE, GPU_RECIPE
from salign_cli.train.scans import LabelledCase

CPU_BUDGET = PlanBudget.of(CPU_RECIPE)


def hippocampus_like(count: int = 5, unlabelled: int = 140) -> Fingerprint:
    """MSD Hippocampus crops: ~35×50×35 voxels at 1 mm, two classes in one piece each."""
    scan = ScanGeometry((35, 50, 35), (1.0, 1.0, 1.0), {1: 1, 2: 1}, {1: 14.0, 2: 12.0})
    return Fingerprint("MR", (scan,) * count, unlabelled)


def la_like(count: int = 4, unlabelled: int = 76) -> Fingerprint:
    """LA 2018: ~200×140×88 at 0.625 mm isotropic, one atrium of ~55 mm in-plane."""
    shapes = [(183, 140, 88), (199, 143, 88), (212, 141, 88), (180, 135, 88)][:count]
    scans = tuple(ScanGeometry(s, (0.625,) * 3, {1: 1}, {1: 53.0}) for s in shapes)
    return Fingerprint("MR", scans, unlabelled)


def anisotropic_ct(count: int = 3) -> Fingerprint:
    """Abdominal CT: 512×512×60 at 0.8×0.8×5 mm; a kidney in one piece, a vessel tree in many."""
    scan = ScanGeometry((512, 512, 60), (0.8, 0.8, 5.0), {1: 1, 2: 3}, {1: 60.0, 2: 9.0})
    return Fingerprint("CT", (scan,) * count, 0)


def test_hippocampus_keeps_the_measured_cpu_defaults() -> None:
    # the plan must reproduce what the hippocampus numbers were measured with
    plan = plan_finetune(hippocampus_like(), CPU_BUDGET)
    assert plan.target_spacing_mm == (1.0, 1.0) and plan.slice_axis == 2
    # 35×50 slices: the nearest multiples of 16 (a crop inside the slice), not 48×64
    assert plan.patch_size == (32, 48) and "nearest multiple of 16" in plan.reasons["patch"]
    # 64 slices of 32×48 fill the pixels, but 1,000 steps of them would draw each of the 175
    # labelled slices ~366 times: capped at 100 passes, 17.5 slices, a multiple of 8 below
    assert plan.batch_size == 16 and "~91 times (at most 100)" in plan.reasons["batch"]
    # the gpu profile (whole slices, no cap) keeps nnU-Net's rounding up and the pixels' batch
    gpu = plan_finetune(hippocampus_like(), PlanBudget.of(GPU_RECIPE))
    assert gpu.patch_size == (48, 64) and gpu.batch_size == 64
    assert "rounded up to a multiple of 16" in gpu.reasons["patch"]
    assert plan.depth == 4 and plan.context == 1 and plan.steps == 1000
    assert plan.semi and plan.largest_component
    assert not plan.bias_field  # 35 mm crops: the augmentation measured there had none


def test_the_slices_a_step_are_capped_by_how_often_each_labelled_one_is_drawn() -> None:
    assert CPU_BUDGET.max_slice_passes == 100 and GPU_RECIPE.max_slice_passes is None
    # 10 scans: 350 slices × 100 / 1,000 = 35 → 32 (the pixels would give 64)
    assert plan_finetune(hippocampus_like(10), CPU_BUDGET).batch_size == 32
    # 7 scans: 245 × 100 / 1,000 = 24.5 → 24; 1 scan: 3.5 → never under MIN_CAPPED_BATCH
    assert plan_finetune(hippocampus_like(7), CPU_BUDGET).batch_size == 24
    assert plan_finetune(hippocampus_like(1), CPU_BUDGET).batch_size == MIN_CAPPED_BATCH == 16
    # LA k = 4: the pixels' 8 slices draw each of 352 only ~23 times: not capped
    la = plan_finetune(la_like(), CPU_BUDGET)
    assert la.batch_size == MIN_BATCH and "pixels" in la.reasons["batch"]
    # without a cap (the gpu profile) the pixels decide; --batch-size always wins
    uncapped = dataclasses.replace(CPU_BUDGET, max_slice_passes=None)
    assert plan_finetune(hippocampus_like(), uncapped).batch_size == 64
    fixed = plan_finetune(hippocampus_like(), CPU_BUDGET, PlanOverrides(batch_size=32))
    assert fixed.batch_size == 32 and fixed.steps == 1000


def test_continuing_a_finetuned_model_takes_a_share_of_the_steps() -> None:
    plan = plan_finetune(hippocampus_like(), CPU_BUDGET, PlanOverrides(continues_finetuned=True))
    assert plan.steps == round(CPU_RECIPE.steps * CONTINUE_STEPS_FRACTION) == 300
    assert "continuing a fine-tuned model" in plan.reasons["steps"]
    fixed = PlanOverrides(continues_finetuned=True, steps=50)
    assert plan_finetune(hippocampus_like(), CPU_BUDGET, fixed).steps == 50  # --steps wins


def test_steps_rise_until_each_labelled_slice_is_drawn_often_enough_within_the_cap() -> None:
    assert MIN_SLICE_PASSES == 50
    # hippocampus: 5 × 35 slices, 16 a step, 1,000 steps draw each ~91 times: kept
    assert plan_finetune(hippocampus_like(), CPU_BUDGET).steps == 1000
    # one 40-slice scan at 8 a step wants 50 × 40 / 8 = 250 steps: the recipe's 1,000 stay
    scan = ScanGeometry((128, 96, 40), (1.0, 1.0, 1.0), {1: 1}, {1: 40.0})
    plan = plan_finetune(Fingerprint("MR", (scan,), 0), CPU_BUDGET)
    assert plan.batch_size == 8 and plan.steps == 1000
    assert "drawn ~200 times" in plan.reasons["steps"]
    # four of them: 50 × 160 / 8 = 1,000 exactly; five: 1,250 (raised, under the 2× cap)
    assert plan_finetune(Fingerprint("MR", (scan,) * 4, 0), CPU_BUDGET).steps == 1000
    raised = plan_finetune(Fingerprint("MR", (scan,) * 5, 0), CPU_BUDGET)
    assert raised.steps == 1250 and "raised" in raised.reasons["steps"]
    # a budget without room to raise (the gpu profile: factor 1) keeps its steps
    fixed = dataclasses.replace(CPU_BUDGET, max_steps_factor=1.0)
    assert plan_finetune(la_like(), fixed).steps == CPU_RECIPE.steps
    assert plan_finetune(la_like(), CPU_BUDGET, PlanOverrides(steps=300)).steps == 300
    assert GPU_RECIPE.max_steps_factor == 1.0 and CPU_RECIPE.max_steps_factor == 2.0


def test_a_sal_pretraining_stops_the_raise_earlier_and_changes_nothing_unraised() -> None:
    assert PRETRAINED_MAX_STEPS_FACTOR == 1.6
    after_sal = PlanOverrides(from_alignment=True)
    # LA k = 4 wants 2,200 steps: from scratch capped at 2×, from SAL at 1.6×
    plan = plan_finetune(la_like(), CPU_BUDGET, after_sal)
    assert plan.steps == 1600 and "(at most 1.6×, from a SAL pre-training)" in plan.reasons["steps"]
    # five 40-slice scans want 1,250: under either cap, so the same either way
    scan = ScanGeometry((128, 96, 40), (1.0, 1.0, 1.0), {1: 1}, {1: 40.0})
    assert plan_finetune(Fingerprint("MR", (scan,) * 5, 0), CPU_BUDGET, after_sal).steps == 1250
    # hippocampus (not raised) and the gpu profile (factor 1) keep their steps; --steps wins
    assert plan_finetune(hippocampus_like(), CPU_BUDGET, after_sal).steps == 1000
    gpu = plan_finetune(la_like(), PlanBudget.of(GPU_RECIPE), after_sal)
    assert gpu.steps == GPU_RECIPE.steps and "SAL" not in gpu.reasons["steps"]
    fixed = PlanOverrides(from_alignment=True, steps=300)
    assert plan_finetune(la_like(), CPU_BUDGET, fixed).steps == 300


def test_a_sal_pretraining_slows_its_layers_only_where_slices_are_drawn_rarely() -> None:
    assert PRETRAINED_LR_SCALE == 0.3
    sal = PlanOverrides(from_alignment=True)
    # LA k = 4: 1,000 steps of 8 draw each of 352 slices 1000 × 8 / 352 ≈ 23 times (< 50)
    after_sal = plan_finetune(la_like(), CPU_BUDGET, sal)
    assert after_sal.pretrained_lr_scale == 0.3
    assert "~23 times (< 50)" in after_sal.reasons["pretrained_lr_scale"]
    # hippocampus k = 5: 1,000 steps of 16 draw each of 175 slices ~91 times: the full rate
    hippocampus = plan_finetune(hippocampus_like(), CPU_BUDGET, sal)
    assert hippocampus.pretrained_lr_scale == 1.0
    assert "~91 times (≥ 50)" in hippocampus.reasons["pretrained_lr_scale"]
    # the boundary: four 40-slice scans at 8 a step are drawn exactly 50 times (full rate),
    # five only 40 times (slowed)
    scan = ScanGeometry((128, 96, 40), (1.0, 1.0, 1.0), {1: 1}, {1: 40.0})
    for count, rate in ((4, 1.0), (5, 0.3)):
        plan = plan_finetune(Fingerprint("MR", (scan,) * count, 0), CPU_BUDGET, sal)
        assert plan.batch_size == 8 and plan.pretrained_lr_scale == rate
    # from scratch, a fine-tuned or an untrained base: the full rate, on either dataset
    for fingerprint in (la_like(), hippocampus_like()):
        plan = plan_finetune(fingerprint, CPU_BUDGET)
        assert plan.pretrained_lr_scale == 1.0
        assert "not a SAL pre-training" in plan.reasons["pretrained_lr_scale"]
    # the recipe's value wins, from SAL or not (the gpu recipe keeps 1, unmeasured there)
    fixed = PlanOverrides(from_alignment=True, pretrained_lr_scale=0.5)
    assert plan_finetune(la_like(), CPU_BUDGET, fixed).pretrained_lr_scale == 0.5
    assert CPU_RECIPE.pretrained_lr_scale is None and GPU_RECIPE.pretrained_lr_scale == 1.0
    gpu = PlanOverrides(from_alignment=True, pretrained_lr_scale=GPU_RECIPE.pretrained_lr_scale)
    assert plan_finetune(la_like(), PlanBudget.of(GPU_RECIPE), gpu).pretrained_lr_scale == 1.0


def test_large_fine_slices_are_coarsened_until_a_step_holds_whole_slices() -> None:
    plan = plan_finetune(la_like(), CPU_BUDGET)
    # native 0.625 mm would give 208×144 patches, 3 per step; the plan coarsens by ~1.58
    assert plan.target_spacing_mm is not None
    assert (
        0.95 < plan.target_spacing_mm[0] < 1.0
        and plan.target_spacing_mm[0] == plan.target_spacing_mm[1]
    )
    assert plan.patch_size == (128, 96) and plan.batch_size == MIN_BATCH
    assert plan.context == 2  # ±1.25 mm of 0.625 mm slices
    assert plan.depth == 4
    # 4 × 88 slices at 8 a step: 50 passes want 2,200 steps, the cpu profile's cap is 2×
    assert plan.steps == 2000 and "352 labelled slices" in plan.reasons["steps"]
    assert plan.semi and plan.largest_component
    assert "coarsened" in plan.reasons["spacing"]
    # the smaller sides 0.625 × (140, 143, 141, 135) mm: median of 87.5 and 88.1
    assert plan.bias_field and "88 mm" in plan.reasons["bias_field"]


def test_pretraining_plans_the_spacing_a_finetune_from_scratch_would() -> None:
    # `salign pretrain`'s auto spacing: the plan's rule on the scans' grids, labels unknown
    def grids(
        fingerprint: Fingerprint,
    ) -> list[tuple[tuple[int, int, int], tuple[float, float, float]]]:
        return [(scan.shape, scan.spacing_mm) for scan in fingerprint.scans]

    for data in (la_like(), hippocampus_like(), anisotropic_ct()):
        spacing = planned_spacing(grids(data), data.modality, CPU_BUDGET)
        assert spacing == plan_finetune(data, CPU_BUDGET).target_spacing_mm
    la = planned_spacing(grids(la_like()), "MR", CPU_BUDGET)
    assert la is not None and 0.95 < la[0] < 1.0  # coarsened from 0.625 mm
    assert planned_spacing(grids(hippocampus_like()), "MR", CPU_BUDGET) == (1.0, 1.0)
    # CT: floored at 1.5 mm; no modest coarsening fits a 512² slice, so the floor stays
    assert planned_spacing(grids(anisotropic_ct()), "CT", CPU_BUDGET) == (1.5, 1.5)
    # the gpu profile's larger steps keep finer slices
    gpu = planned_spacing(grids(la_like()), "MR", PlanBudget.of(GPU_RECIPE))
    assert gpu is not None and 0.625 < gpu[0] < la[0]


def test_coarsening_never_shrinks_the_smallest_structure_below_its_pixel_floor() -> None:
    # same slices, but a 25 mm structure: at most 25 / (32 × 0.625) = 1.25× coarser
    scans = tuple(ScanGeometry(s.shape, s.spacing_mm, {1: 1}, {1: 25.0}) for s in la_like().scans)
    plan = plan_finetune(Fingerprint("MR", scans, 76), CPU_BUDGET)
    assert plan.target_spacing_mm == (0.625, 0.625)  # no coarsening fits: keep the detail
    # the median 199×141 slice to the nearest multiples of 16; 98,304 pixels hold 3.6 of them
    assert plan.patch_size == (192, 144) and plan.batch_size == 4


def test_anisotropic_ct_slices_across_the_thick_axis_at_the_ct_floor() -> None:
    plan = plan_finetune(anisotropic_ct(), CPU_BUDGET)
    assert plan.slice_axis == 2  # across the 5 mm spacing
    assert plan.target_spacing_mm == (1.5, 1.5)  # the CT floor, 273 px slices: capped patches
    assert plan.patch_size == (256, 256) and plan.batch_size == 2
    assert plan.context == 1  # 1 mm of 5 mm slices rounds to 0, at least one neighbour
    assert not plan.semi  # no unlabelled scans
    assert not plan.largest_component  # the vessel class comes in three pieces
    assert "class 2" in plan.reasons["largest_component"]
    assert not plan.bias_field and "CT" in plan.reasons["bias_field"]  # 410 mm, but CT


def test_the_bias_field_starts_at_its_field_of_view_and_follows_the_flag() -> None:
    # the smaller in-plane side decides (the slice axis is the axial one here): 64 mm is on
    def plan_for(rows: int, spacing: float) -> FinetunePlan:
        scan = ScanGeometry((rows, 200, 40), (spacing, spacing, 3.0), {1: 1}, {1: 20.0})
        return plan_finetune(Fingerprint("MR", (scan,) * 3, 0), CPU_BUDGET)

    assert BIAS_FIELD_MIN_FOV_MM == 64.0
    assert plan_for(64, 1.0).bias_field  # 64 mm × 200 mm
    assert not plan_for(63, 1.0).bias_field
    assert plan_for(128, 0.5).bias_field and not plan_for(126, 0.5).bias_field
    # a flag wins either way
    off = plan_finetune(la_like(), CPU_BUDGET, PlanOverrides(bias_field=False))
    on = plan_finetune(hippocampus_like(), CPU_BUDGET, PlanOverrides(bias_field=True))
    assert (
        not off.bias_field and on.bias_field and on.reasons["bias_field"] == "fixed by --bias-field"
    )


def test_plans_written_before_the_bias_field_and_the_rate_load_without_them() -> None:
    older = plan_finetune(la_like(), CPU_BUDGET, PlanOverrides(from_alignment=True)).to_dict()
    del older["bias_field"], older["pretrained_lr_scale"]
    loaded = FinetunePlan.from_dict(older)
    assert loaded.bias_field is False and loaded.pretrained_lr_scale == 1.0
    del older["semi"]
    with pytest.raises(InputError, match="needs the keys"):
        FinetunePlan.from_dict(older)


def test_tiny_slices_get_a_shallower_network() -> None:
    scan = ScanGeometry((20, 12, 20), (1.0, 1.0, 1.0), {1: 1}, {1: 5.0})
    plan = plan_finetune(Fingerprint("MR", (scan,), 10), CPU_BUDGET)
    # depth 4 would round 12 up to 16, a bottleneck of 1 pixel; depth 2 keeps 12 / 4 = 3
    assert plan.depth == 2 and plan.patch_size == (20, 12)


def test_semi_supervision_needs_at_least_as_many_unlabelled_scans_as_labelled() -> None:
    assert plan_finetune(hippocampus_like(count=5, unlabelled=5), CPU_BUDGET).semi
    few = plan_finetune(hippocampus_like(count=5, unlabelled=4), CPU_BUDGET)
    assert not few.semi and "only 4" in few.reasons["semi"]


def test_every_flag_overrides_the_field_it_names() -> None:
    fixed = PlanOverrides(
        spacing=2.0, patch_size=(64, 64), batch_size=5, depth=3, context=0, steps=7, semi=False
    )
    plan = plan_finetune(la_like(), CPU_BUDGET, fixed)
    assert plan.target_spacing_mm == (2.0, 2.0) and plan.patch_size == (64, 64)
    assert (plan.batch_size, plan.depth, plan.context, plan.steps) == (5, 3, 0, 7)
    assert not plan.semi
    native = plan_finetune(la_like(), CPU_BUDGET, PlanOverrides(spacing="native"))
    assert native.target_spacing_mm is None and native.patch_size == (192, 144)
    base = plan_finetune(la_like(), CPU_BUDGET, PlanOverrides(spacing=(1.2, 1.1), depth=4))
    assert base.target_spacing_mm == (1.2, 1.1) and "base bundle" in base.reasons["spacing"]


def test_plan_round_trips_and_describes_every_choice_with_a_reason() -> None:
    plan = plan_finetune(la_like(), CPU_BUDGET)
    assert FinetunePlan.from_dict(plan.to_dict()) == plan
    lines = plan.describe()
    assert len(lines) == 11 and all(" — " in line and line.split(" — ")[1] for line in lines)
    assert lines[0].startswith("spacing: 0.9") and "patch: 128×96" in lines[2]
    assert lines[-2].startswith("bias_field: on — MR slices")
    assert lines[-1].startswith("pretrained_lr_scale: 1× the rate — the full rate")
    with pytest.raises(InputError, match="needs the keys"):
        FinetunePlan.from_dict({**plan.to_dict(), "extra": 1})


def test_a_fingerprint_needs_scans() -> None:
    with pytest.raises(InputError, match="no labelled scans"):
        Fingerprint("MR", ())


def test_scan_geometry_counts_pieces_and_measures_the_inplane_box() -> None:
    labels = np.zeros((20, 10, 6), np.uint8)
    labels[2:6, 1:4, 1] = 1  # two pieces of class 1 ...
    labels[10:12, 5:9, 4] = 1  # ... together spanning rows 2-11 and columns 1-8
    labels[3:4, 3:4, 0:6] = 2  # a rod along the slice axis: 1 voxel in-plane
    labels[0, 0, 0] = 3
    labels[1, 1, 1] = 3  # diagonal neighbours: one piece with full connectivity
    geometry = scan_geometry(labels, (0.5, 2.0, 3.0))
    assert dict(geometry.pieces) == {1: 2, 2: 1, 3: 1}
    # class 1's box: 10 rows × 0.5 mm = 5 mm, 8 columns × 2 mm = 16 mm → 5 mm
    assert geometry.inplane_extent_mm[1] == pytest.approx(5.0)
    assert geometry.inplane_extent_mm[2] == pytest.approx(0.5)
    assert geometry.shape == (20, 10, 6)


def test_fingerprint_reads_labels_on_their_canonical_grid(tmp_path: Path) -> None:
    # stored LPS with voxel axes (z, y, x): canonical RAS must undo both
    labels = np.zeros((6, 10, 20), np.uint8)  # (z, y, x)
    labels[1, 1:4, 2:6] = 1
    affine = np.array([[0, 0, -0.5, 0], [0, -2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    path = tmp_path / "case_seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), path)
    case = LabelledCase("case", "case.nii.gz", str(path), "h", "MR", (3.0, 2.0, 0.5))
    fingerprint = fingerprint_of([case], unlabelled_scans=3)
    (scan,) = fingerprint.scans
    assert scan.shape == (20, 10, 6) and scan.spacing_mm == pytest.approx((0.5, 2.0, 3.0))
    assert dict(scan.pieces) == {1: 1}
    assert scan.inplane_extent_mm[1] == pytest.approx(2.0)  # 4 × 0.5 mm vs 3 × 2 mm
    assert fingerprint.unlabelled_scans == 3 and fingerprint.modality == "MR"
    ct = LabelledCase("ct", "ct.nii.gz", str(path), "h", "CT", (3.0, 2.0, 0.5))
    with pytest.raises(InputError, match="mix modalities"):
        fingerprint_of([case, ct])
