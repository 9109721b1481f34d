"""The fine-tuning plan: what a run will do, derived once from the data and the device budget.

nnU-Net's central idea, done for a 2D/2.5D few-label recipe: a *fingerprint* of the labelled
scans (`Fingerprint`: each scan's canonical shape and spacing, the modality, and per class the
most connected pieces and the smallest in-plane extent any labelled scan shows) plus the
recipe's budget (pixels per step, base steps) give one frozen `FinetunePlan` — target spacing,
slice axis, patch, batch, U-Net depth, 2.5D context, steps, whether the unlabelled scans join
in and whether to keep the largest component of each class. Every choice carries its reason, the
plan is printed before training and stored in the run's checkpoints and the bundle, and every
``salign finetune`` flag overrides the field it names (`PlanOverrides`).

The rules (numbers in docs/benchmarks.md):

- **spacing**: the median in-plane spacing (CT floored at 1.5 mm, `default_target_spacing`),
  then coarsened — at most `MAX_COARSENING` times, and never below `MIN_OBJECT_PX` pixels across
  the smallest labelled structure — until a median slice fits `batch_pixels / MIN_BATCH` pixels.
  A step then holds at least `MIN_BATCH` slices: with LA 2018's 200×140 slices at 0.625 mm the
  old rule left 3 slices of 208×144 per step; at ~1 mm it is 8 of 128×96. MSD Hippocampus
  (35×50 at 1 mm) already fits: it keeps 1 mm.
- **patch**: the median slice rounded to a multiple of ``2**depth`` — up (whole slices) on the
  gpu profile, to the nearest on the cpu one (a crop up to half a multiple inside the slice:
  hippocampus 32×48 instead of 48×64, LA 2018 128×96 either way) — capped at
  ``max_patch_px`` (`patch_size_for`; the spacing and the depth rules still reckon whole
  slices, which is what inference runs on); **batch**: as many slices as fill ``batch_pixels``
  (`slices_per_step`) — on the cpu profile (``max_slice_passes`` 100) no more than the
  recipe's steps need to draw each labelled slice ~100 times (multiples of `MIN_BATCH`, at
  least `MIN_CAPPED_BATCH`):
  hippocampus k = 5 (175 slices, 1,000 steps) takes 16 a step instead of 32, LA 2018 k = 4
  (352 slices, 8 a step) is under the cap and keeps its 8.
- **depth**: 4 down-samplings (the measured default), fewer when the patch's short side would
  leave a bottleneck under `MIN_BOTTLENECK_PX` pixels.
- **slice axis**: across the coarsest spacing, axial for isotropic scans (`choose_slice_axis`).
- **context**: neighbours spanning about 1 mm on each side (1 on hippocampus' 1 mm slices, 2 on
  LA's 0.625 mm, 1 on 5 mm CT), at most `MAX_CONTEXT`.
- **steps**: the recipe's (1,000 on the cpu profile), raised — at most the recipe's
  ``max_steps_factor`` times (2 on the cpu profile; 1 on the gpu one, whose 2,000 steps were
  measured as they are) — until every labelled slice is drawn about `MIN_SLICE_PASSES` times.
  Hippocampus' 5 × 35 slices at 16 a step pass 91 times in 1,000 steps and keep them; LA
  2018's 4 × 88 slices at 8 a step passed only 23 times: with the wider augmentation and the
  bias field, 2,000 steps then gave 0.865 validation Dice against 0.841 (before those, 2,000
  did not pay: 0.743 vs 0.747). From a SAL pre-training (`salign pretrain`) the raise stops at
  `PRETRAINED_MAX_STEPS_FACTOR`× (LA 2018 k = 4: 1,600 steps, within 0.005 of the validation
  Dice of 2,000 from scratch); hippocampus' steps are not raised, so its plan is the same either way.
- **pre-trained layers' rate**: from a SAL pre-training, for data whose labelled slices the
  recipe's steps draw fewer than `MIN_SLICE_PASSES` times (the data whose steps the plan
  raises), the layers it trained learn at `PRETRAINED_LR_SCALE`× the schedule's rate (the new
  head at the full rate): on LA 2018 k = 4 (~23 passes) validation, 1,600 steps at 0.3× scored
  0.869 against 0.865 at the full rate, level with 2,000 steps from scratch. On hippocampus k = 5
  (~91 passes) 0.3× lost 0.009 (0.818 against 0.827), so it keeps the full rate, as every other
  start does. The condition separates the two datasets measured; it is not shown beyond them.
  The recipe's ``pretrained_lr_scale`` fixes the rate.
- **semi-supervision**: when there are at least as many unlabelled scans as labelled ones
  (FixMatch added 6.2 points at k = 1 and 0.7 at k = 5 on hippocampus, never lost).
- **largest component**: kept for a class when every labelled scan shows it in one piece (the
  labels' own evidence; a validation set, when there is one, then confirms or overrules it).
- **bias field**: the augmentation's smooth multiplicative MR bias field is drawn (at the
  recipe's ``bias_p``) for MR scans whose median field of view is at least
  `BIAS_FIELD_MIN_FOV_MM` across: a coil's shading varies over a whole heart or abdomen, not
  over a 35×50 mm hippocampus crop, and CT has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from salign_cli.data.preprocess import (
    ISOTROPY_TOLERANCE,
    choose_slice_axis,
    default_target_spacing,
    resampled_size,
)
from salign_cli.errors import InputError
from salign_cli.infer.postprocess import connected_components
from salign_cli.train.recipe import (
    FinetuneRecipe,
    PatchRounding,
    patch_size_for,
    slices_per_step,
)

if TYPE_CHECKING:
    from salign_cli.train.scans import LabelledCase

MIN_BATCH = 8  # slices per step the spacing is coarsened to reach (BatchNorm, gradient noise)
MAX_COARSENING = 2.0  # at most this many times the median spacing
MIN_OBJECT_PX = 32  # the smallest labelled structure keeps at least this many pixels across
MIN_BOTTLENECK_PX = 3  # the U-Net's deepest map keeps at least this many pixels per side
MAX_DEPTH = 4
MAX_CONTEXT = 3
CONTEXT_SPAN_MM = 1.0  # 2.5D neighbours cover about this much on each side of a slice
# A fine-tuned model given more labels of the same classes starts near its goal: this share of
# the recipe's steps (chosen a priori; on hippocampus k = 1 -> 5 it matched a fresh k = 5 in
# 30 % of the time, docs/benchmarks.md).
CONTINUE_STEPS_FRACTION = 0.3
# Steps are raised (by at most the recipe's max_steps_factor, which bounds the time) until each
# labelled slice is drawn about this many times: LA 2018 at k = 4 (352 slices, 8 a step) then
# reaches the cpu profile's cap of 2,000 steps, the count measured on its validation scans.
MIN_SLICE_PASSES = 50
# From a SAL-pre-trained network the raise stops here (if the recipe's own cap is higher): on LA
# 2018 k = 4, 1,600 steps from SAL scored within 0.005 of 2,000 from scratch on validation
# (0.865 against 0.869) with 80 % of the steps, 1,000 from SAL 0.019 under it; on the test
# split 0.854 against 0.858 (docs/benchmarks.md, "LA 2018 after salign pretrain").
PRETRAINED_MAX_STEPS_FACTOR = 1.6
# From a SAL-pre-trained network whose labelled slices are drawn rarely (fewer than
# MIN_SLICE_PASSES times in the recipe's steps) its layers learn at this share of the schedule's
# rate, the new head at the full rate: on LA 2018 k = 4 validation (1,600 steps, 2 seeds) 0.3×
# scored 0.868 / 0.870 against 0.862 / 0.868 at 1× (0.1×: 0.865 on seed 0); on hippocampus
# k = 5, whose slices are drawn ~91 times, 0.823 / 0.814 against 0.832 / 0.821 (docs/benchmarks.md).
PRETRAINED_LR_SCALE = 0.3
# The fewest slices a step the ``max_slice_passes`` cap leaves: the smallest batch measured
# against the pixels' 32 (hippocampus k = 5, docs/benchmarks.md); fewer were never tried.
MIN_CAPPED_BATCH = 16
_ROUNDED: dict[PatchRounding, str] = {"up": "up to a", "nearest": "to the nearest"}
_COARSENING_STEP = 1.02  # the spacing search's multiplicative step
# The smaller in-plane field of view (mm, median over the labelled scans) from which an MR
# scan is augmented with a bias field: a receive coil's gain changes over ~10 cm; LA 2018's
# 125×90 mm slices are above, MSD Hippocampus' 35×50 mm crops below.
BIAS_FIELD_MIN_FOV_MM = 64.0


@dataclass(frozen=True)
class ScanGeometry:
    """One labelled scan as the planner sees it: canonical (RAS) shape and spacing, and per
    class its number of 3D pieces and the smaller in-plane side of its bounding box (mm)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    pieces: Mapping[int, int] = dataclasses.field(default_factory=dict)
    inplane_extent_mm: Mapping[int, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Fingerprint:
    """What the plan is derived from: the labelled scans' geometry, the modality and how many
    unlabelled scans could join in."""

    modality: str
    scans: tuple[ScanGeometry, ...]
    unlabelled_scans: int = 0

    def __post_init__(self) -> None:
        if not self.scans:
            raise InputError("no labelled scans to plan a fine-tune from")

    def median_spacing(self) -> tuple[float, float, float]:
        return (
            _median([s.spacing_mm[0] for s in self.scans]),
            _median([s.spacing_mm[1] for s in self.scans]),
            _median([s.spacing_mm[2] for s in self.scans]),
        )

    def classes(self) -> list[int]:
        return sorted({c for s in self.scans for c in s.pieces})


@dataclass(frozen=True)
class PlanBudget:
    """The recipe's budget the plan spends: pixels per step, the patch cap, the base steps and
    how far the plan may raise them (``max_steps_factor``; 1 keeps them)."""

    batch_pixels: int
    max_patch_px: int
    steps: int
    max_steps_factor: float = 1.0
    max_slice_passes: int | None = None
    patch_rounding: PatchRounding = "up"

    @classmethod
    def of(cls, recipe: FinetuneRecipe) -> PlanBudget:
        """The budget a recipe gives its plan (one mapping, so no field is forgotten)."""
        return cls(
            recipe.batch_pixels,
            recipe.max_patch_px,
            recipe.steps,
            recipe.max_steps_factor,
            recipe.max_slice_passes,
            recipe.patch_rounding,
        )


@dataclass(frozen=True)
class PlanOverrides:
    """Fields fixed by the user (``salign finetune`` flags); ``None`` = planned. ``spacing``:
    ``auto`` (planned), ``native``, mm, or a base bundle's in-plane pair; ``depth``,
    ``spacing`` and the slice axis are fixed by a pre-trained base bundle."""

    spacing: str | float | tuple[float, float] = "auto"
    patch_size: tuple[int, int] | None = None
    batch_size: int | None = None
    depth: int | None = None
    context: int | None = None
    steps: int | None = None
    semi: bool | None = None
    bias_field: bool | None = None
    slice_axis_from_base: bool = False
    continues_finetuned: bool = False  # the base is a fine-tuned model of the same classes
    from_alignment: bool = False  # the base is a SAL pre-training (`salign pretrain`)
    pretrained_lr_scale: float | None = None  # the recipe's, when it fixes one


@dataclass(frozen=True)
class FinetunePlan:
    """What a fine-tune does, with one reason per choice (``reasons``: field → sentence).

    ``bias_field`` and ``pretrained_lr_scale`` have defaults because plans written before they
    existed (in older checkpoints and bundles) did not draw a bias field and recorded the rate in
    the recipe only."""

    target_spacing_mm: tuple[float, float] | None
    slice_axis: int
    patch_size: tuple[int, int]
    batch_size: int
    depth: int
    context: int
    steps: int
    semi: bool
    largest_component: bool
    reasons: Mapping[str, str]
    bias_field: bool = False
    pretrained_lr_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["reasons"] = dict(self.reasons)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FinetunePlan:
        """The inverse of `to_dict`; an unknown key, or a missing one other than those with
        defaults (plans from before them), is an `InputError`."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        if not names - defaults.keys() <= set(payload) <= names:
            raise InputError(
                f"a fine-tuning plan needs the keys {sorted(names)}, got {sorted(payload)}"
            )
        payload = {**defaults, **payload}
        spacing = payload["target_spacing_mm"]
        return cls(
            target_spacing_mm=None if spacing is None else (float(spacing[0]), float(spacing[1])),
            slice_axis=int(payload["slice_axis"]),
            patch_size=(int(payload["patch_size"][0]), int(payload["patch_size"][1])),
            batch_size=int(payload["batch_size"]),
            depth=int(payload["depth"]),
            context=int(payload["context"]),
            steps=int(payload["steps"]),
            semi=bool(payload["semi"]),
            largest_component=bool(payload["largest_component"]),
            reasons={str(k): str(v) for k, v in payload["reasons"].items()},
            bias_field=bool(payload["bias_field"]),
            pretrained_lr_scale=float(payload["pretrained_lr_scale"]),
        )

    def describe(self) -> list[str]:
        """One line per choice, as ``salign finetune`` prints the plan."""
        spacing = (
            "native"
            if self.target_spacing_mm is None
            else "×".join(f"{v:.3g}" for v in self.target_spacing_mm) + " mm"
        )
        values = {
            "spacing": spacing,
            "slice_axis": ("sagittal", "coronal", "axial")[self.slice_axis],
            "patch": f"{self.patch_size[0]}×{self.patch_size[1]}",
            "batch": f"{self.batch_size} slices",
            "depth": f"{self.depth} levels",
            "context": f"±{self.context} slices",
            "steps": str(self.steps),
            "semi": "on" if self.semi else "off",
            "largest_component": "kept" if self.largest_component else "all parts kept",
            "bias_field": "on" if self.bias_field else "off",
            "pretrained_lr_scale": f"{self.pretrained_lr_scale:g}× the rate",
        }
        return [f"{name}: {value} — {self.reasons.get(name, '')}" for name, value in values.items()]


def plan_finetune(
    fingerprint: Fingerprint, budget: PlanBudget, overrides: PlanOverrides | None = None
) -> FinetunePlan:
    """The plan for ``fingerprint`` within ``budget``; ``overrides`` fix single fields.

    >>> hippocampus = ScanGeometry((35, 50, 35), (1.0, 1.0, 1.0), {1: 1}, {1: 12.0})
    >>> plan = plan_finetune(Fingerprint("MR", (hippocampus,) * 5, 140),
    ...                      PlanBudget(32 * 48 * 64, 256, 1000))
    >>> plan.target_spacing_mm, plan.patch_size, plan.batch_size, plan.steps, plan.context
    ((1.0, 1.0), (48, 64), 32, 1000, 1)
    """
    fixed = overrides or PlanOverrides()
    reasons: dict[str, str] = {}
    median = fingerprint.median_spacing()
    slice_axis = choose_slice_axis(median)
    reasons["slice_axis"] = (
        "the base bundle's rule" if fixed.slice_axis_from_base else _axis_reason(median)
    )
    inplane_axes = [axis for axis in range(3) if axis != slice_axis]
    depth = fixed.depth if fixed.depth is not None else MAX_DEPTH
    spacing, reasons["spacing"] = _target_spacing(fingerprint, budget, fixed, inplane_axes, depth)
    shapes = [_slice_shape(scan, inplane_axes, spacing) for scan in fingerprint.scans]
    if fixed.depth is None:
        depth, reasons["depth"] = _depth_for(shapes, budget.max_patch_px)
    else:
        reasons["depth"] = "fixed (the base bundle's network or --depth)"
    patch = fixed.patch_size or patch_size_for(
        shapes, depth, budget.max_patch_px, budget.patch_rounding
    )
    reasons["patch"] = (
        "fixed by --size or the recipe"
        if fixed.patch_size
        else f"the median slice rounded {_ROUNDED[budget.patch_rounding]} multiple of {2**depth}"
    )
    if fixed.batch_size:
        batch, reasons["batch"] = fixed.batch_size, "fixed by --batch-size or the recipe"
    else:
        batch, reasons["batch"] = _batch_for(fingerprint, slice_axis, patch, budget)
    slice_spacing = median[slice_axis]
    if fixed.context is not None:
        context, reasons["context"] = fixed.context, "fixed by --context"
    else:
        context = min(MAX_CONTEXT, max(1, round(CONTEXT_SPAN_MM / slice_spacing)))
        reasons["context"] = (
            f"neighbours spanning ~{CONTEXT_SPAN_MM:g} mm of {slice_spacing:.3g} mm slices"
        )
    if fixed.steps is not None:
        steps, reasons["steps"] = fixed.steps, "fixed by --steps"
    elif fixed.continues_finetuned:
        steps = max(1, round(budget.steps * CONTINUE_STEPS_FRACTION))
        reasons["steps"] = (
            f"{CONTINUE_STEPS_FRACTION:.0%} of the recipe's: continuing a fine-tuned model "
            "of the same classes"
        )
    else:
        steps, reasons["steps"] = _steps_for(
            fingerprint, slice_axis, batch, budget, fixed.from_alignment
        )
    labelled = len(fingerprint.scans)
    if fixed.semi is not None:
        semi = fixed.semi
        reasons["semi"] = "fixed by --semi / --unlabelled"
    else:
        semi = fingerprint.unlabelled_scans >= labelled
        reasons["semi"] = (
            f"{fingerprint.unlabelled_scans} unlabelled scans ≥ {labelled} labelled"
            if semi
            else f"only {fingerprint.unlabelled_scans} unlabelled scans for {labelled} labelled"
            if fingerprint.unlabelled_scans
            else "no unlabelled scans (every other scan is validation or excluded)"
        )
    largest, reasons["largest_component"] = _largest_component_rule(fingerprint)
    if fixed.bias_field is not None:
        bias_field, reasons["bias_field"] = fixed.bias_field, "fixed by --bias-field"
    else:
        bias_field, reasons["bias_field"] = _bias_field_rule(fingerprint, inplane_axes)
    lr_scale, reasons["pretrained_lr_scale"] = _pretrained_rate(
        fixed, _slice_passes(fingerprint, slice_axis, batch, budget.steps)
    )
    return FinetunePlan(
        target_spacing_mm=spacing,
        slice_axis=slice_axis,
        patch_size=patch,
        batch_size=batch,
        depth=depth,
        context=context,
        steps=steps,
        semi=semi,
        largest_component=largest,
        reasons=reasons,
        bias_field=bias_field,
        pretrained_lr_scale=lr_scale,
    )


def planned_spacing(
    grids: Sequence[tuple[tuple[int, int, int], tuple[float, float, float]]],
    modality: str,
    budget: PlanBudget,
) -> tuple[float, float] | None:
    """The in-plane spacing `plan_finetune` would choose for scans of these canonical grids
    (shape, spacing), without labels (so without the smallest-structure floor).

    `salign pretrain` trains at it by default: a fine-tune from its bundle keeps the bundle's
    spacing, so the pre-training must already run where a fine-tune from scratch would (LA
    2018: ~1 mm, not the scans' 0.625 mm, which would leave 3 slices a step).
    """
    fingerprint = Fingerprint(modality, tuple(ScanGeometry(shape, sp) for shape, sp in grids))
    slice_axis = choose_slice_axis(fingerprint.median_spacing())
    inplane_axes = [axis for axis in range(3) if axis != slice_axis]
    spacing, _ = _target_spacing(fingerprint, budget, PlanOverrides(), inplane_axes, MAX_DEPTH)
    return spacing


# ---------------------------------------------------------------------------------------------
# the fingerprint


def scan_geometry(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> ScanGeometry:
    """What the planner needs of one canonical (RAS) label array: per class its 3D pieces
    (full connectivity, as `salign_cli.infer.postprocess.connected_components` counts them)
    and the smaller in-plane side of its bounding box, in mm.

    >>> labels = np.zeros((10, 10, 4), np.uint8)
    >>> labels[1:3, 1:6, 0] = 1; labels[7:9, 7:9, 3] = 1; labels[4:8, 2:4, 1:3] = 2
    >>> geometry = scan_geometry(labels, (1.0, 2.0, 3.0))
    >>> dict(geometry.pieces), dict(geometry.inplane_extent_mm)
    ({1: 2, 2: 1}, {1: 8.0, 2: 4.0})
    """
    shape = (int(labels.shape[0]), int(labels.shape[1]), int(labels.shape[2]))
    inplane = [axis for axis in range(3) if axis != choose_slice_axis(spacing_mm)]
    pieces: dict[int, int] = {}
    extents: dict[int, float] = {}
    # find_objects gives every class's bounding box in one pass; pieces are counted inside it
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False))):
        if box is None:
            continue
        value = index + 1
        pieces[value] = connected_components(labels[box] == value)[1]
        extents[value] = min((box[a].stop - box[a].start) * spacing_mm[a] for a in inplane)
    return ScanGeometry(shape, spacing_mm, pieces, extents)


def fingerprint_of(cases: Sequence[LabelledCase], unlabelled_scans: int = 0) -> Fingerprint:
    """The labelled scans' fingerprint (each label file is read once, on its canonical grid)."""
    from salign_cli.io.volume import read_volume, to_canonical
    from salign_cli.train.scans import single_modality

    modality = single_modality(
        (case.modality for case in cases), "fine-tune on one modality at a time"
    )
    scans = []
    for case in cases:
        volume = read_volume(case.label_path)
        canonical = to_canonical(volume)
        labels = np.rint(canonical.array).astype(np.int64)
        scans.append(scan_geometry(labels, canonical.spacing_mm))
    return Fingerprint(modality, tuple(scans), unlabelled_scans)


# ---------------------------------------------------------------------------------------------
# the rules


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _axis_reason(spacing_mm: tuple[float, float, float]) -> str:
    if max(spacing_mm) <= ISOTROPY_TOLERANCE * min(spacing_mm):
        return "near-isotropic scans: axial"
    return "across the coarsest spacing"


def _slice_shape(
    scan: ScanGeometry, inplane_axes: list[int], spacing: tuple[float, float] | None
) -> tuple[int, int]:
    sizes = []
    for position, axis in enumerate(inplane_axes):
        target = None if spacing is None else spacing[position]
        sizes.append(resampled_size(scan.shape[axis], scan.spacing_mm[axis], target))
    return (sizes[0], sizes[1])


def _depth_for(shapes: Sequence[tuple[int, int]], max_patch_px: int) -> tuple[int, str]:
    """The most down-samplings (at most `MAX_DEPTH`) whose patch keeps a bottleneck of at least
    `MIN_BOTTLENECK_PX` pixels along its short side (the patch is rounded up per depth)."""
    depth = MAX_DEPTH
    while (
        depth > 1
        and min(patch_size_for(shapes, depth, max_patch_px)) / 2**depth < MIN_BOTTLENECK_PX
    ):
        depth -= 1
    if depth == MAX_DEPTH:
        return depth, f"the measured default ({MAX_DEPTH} down-samplings)"
    return depth, f"a deeper net would leave < {MIN_BOTTLENECK_PX} pixels at the bottleneck"


def _target_spacing(
    fingerprint: Fingerprint,
    budget: PlanBudget,
    fixed: PlanOverrides,
    inplane_axes: list[int],
    depth: int,
) -> tuple[tuple[float, float] | None, str]:
    if isinstance(fixed.spacing, tuple):
        return fixed.spacing, "the base bundle's (its network was trained at it)"
    spacings = [scan.spacing_mm for scan in fingerprint.scans]
    start = default_target_spacing(spacings, fingerprint.modality, fixed.spacing)
    if fixed.spacing != "auto" or start is None:
        return start, "fixed by --spacing (or the base bundle)"
    reason = "the median in-plane spacing" + (
        ", CT floored" if fingerprint.modality == "CT" else ""
    )
    extents = [e for scan in fingerprint.scans for e in scan.inplane_extent_mm.values() if e > 0]
    finest = min(start)
    limit = MAX_COARSENING
    if extents:
        limit = min(limit, max(1.0, min(extents) / (MIN_OBJECT_PX * finest)))
    area_limit = budget.batch_pixels / MIN_BATCH
    factor = 1.0
    while factor <= limit:
        spacing = (start[0] * factor, start[1] * factor)
        shapes = [_slice_shape(scan, inplane_axes, spacing) for scan in fingerprint.scans]
        patch = patch_size_for(shapes, depth, budget.max_patch_px)
        if patch[0] * patch[1] <= area_limit:
            if factor > 1.0:
                reason += f", coarsened {factor:.2f}× so a step holds ≥ {MIN_BATCH} whole slices"
            return (round(spacing[0], 4), round(spacing[1], 4)), reason
        factor *= _COARSENING_STEP
    # no modest coarsening fits a whole slice: keep the detail, train on capped patches
    return start, reason


def _labelled_slices(fingerprint: Fingerprint, slice_axis: int) -> int:
    return sum(scan.shape[slice_axis] for scan in fingerprint.scans)


def _batch_for(
    fingerprint: Fingerprint, slice_axis: int, patch: tuple[int, int], budget: PlanBudget
) -> tuple[int, str]:
    """As many slices as fill ``budget.batch_pixels`` — but, with ``max_slice_passes``, no
    more than the recipe's steps need to draw each labelled slice about that often (a
    multiple of `MIN_BATCH`, at least `MIN_CAPPED_BATCH`): past that a step's extra slices repeat
    what the network has seen and only cost time (hippocampus k = 5: 16 slices a step
    instead of 32, docs/benchmarks.md)."""
    by_pixels = slices_per_step(patch, budget.batch_pixels)
    reason = f"as many slices as fill {budget.batch_pixels:,} pixels"
    if budget.max_slice_passes is None:
        return by_pixels, reason
    slices = _labelled_slices(fingerprint, slice_axis)
    wanted = budget.max_slice_passes * slices // budget.steps
    by_passes = max(MIN_CAPPED_BATCH, MIN_BATCH * (wanted // MIN_BATCH))
    if by_passes >= by_pixels:
        return by_pixels, reason
    return by_passes, (
        f"{budget.steps:,} steps of {by_passes} draw each of {slices} labelled slices "
        f"~{budget.steps * by_passes / slices:.0f} times (at most {budget.max_slice_passes})"
    )


def _steps_for(
    fingerprint: Fingerprint,
    slice_axis: int,
    batch: int,
    budget: PlanBudget,
    from_alignment: bool = False,
) -> tuple[int, str]:
    """The recipe's steps, raised (at most ``budget.max_steps_factor``×, from a SAL
    pre-training at most `PRETRAINED_MAX_STEPS_FACTOR`×) until each labelled slice is drawn
    about `MIN_SLICE_PASSES` times at ``batch`` slices a step."""
    slices = _labelled_slices(fingerprint, slice_axis)
    wanted = -(-MIN_SLICE_PASSES * slices // batch)  # ceiling division
    factor = budget.max_steps_factor
    if from_alignment:
        factor = min(factor, PRETRAINED_MAX_STEPS_FACTOR)
    cap = max(budget.steps, round(budget.steps * factor))
    steps = min(max(budget.steps, wanted), cap)
    passes = steps * batch / slices
    if steps == budget.steps:
        return steps, f"the recipe's: each of {slices} labelled slices drawn ~{passes:.0f} times"
    limit = f"at most {factor:g}×" + (
        ", from a SAL pre-training" if factor < budget.max_steps_factor else ""
    )
    return steps, (
        f"the recipe's {budget.steps:,} raised so each of {slices} labelled slices is drawn "
        f"~{passes:.0f} times ({limit})"
    )


def _slice_passes(fingerprint: Fingerprint, slice_axis: int, batch: int, steps: int) -> float:
    """How often ``steps`` steps of ``batch`` slices draw each labelled slice, on average."""
    return steps * batch / _labelled_slices(fingerprint, slice_axis)


def _pretrained_rate(fixed: PlanOverrides, recipe_passes: float) -> tuple[float, str]:
    """The rate of the pre-trained layers, as a share of the schedule's (the head's), given how
    often the recipe's steps draw each labelled slice."""
    if fixed.pretrained_lr_scale is not None:
        return fixed.pretrained_lr_scale, "fixed by the recipe (its pretrained_lr_scale)"
    if not fixed.from_alignment:
        return 1.0, "the full rate (not a SAL pre-training)"
    if recipe_passes < MIN_SLICE_PASSES:
        return PRETRAINED_LR_SCALE, (
            f"a SAL pre-training's layers train slower than the new head: the recipe's steps "
            f"draw each labelled slice ~{recipe_passes:.0f} times (< {MIN_SLICE_PASSES})"
        )
    return 1.0, (
        f"the full rate: the recipe's steps draw each labelled slice ~{recipe_passes:.0f} times "
        f"(≥ {MIN_SLICE_PASSES}), where slower SAL layers lost Dice"
    )


def _largest_component_rule(fingerprint: Fingerprint) -> tuple[bool, str]:
    classes = fingerprint.classes()
    if not classes:
        return False, "no class found in the labels"
    split = [c for c in classes if any(scan.pieces.get(c, 0) > 1 for scan in fingerprint.scans)]
    if split:
        return False, f"class {split[0]} is in several pieces in a labelled scan"
    return True, "every labelled scan shows each class in one piece"


def _bias_field_rule(fingerprint: Fingerprint, inplane_axes: list[int]) -> tuple[bool, str]:
    if fingerprint.modality != "MR":
        return False, f"{fingerprint.modality} has no coil shading"
    fov = _median(
        [
            min(scan.shape[a] * scan.spacing_mm[a] for a in inplane_axes)
            for scan in fingerprint.scans
        ]
    )
    if fov >= BIAS_FIELD_MIN_FOV_MM:
        return (
            True,
            f"MR slices {fov:.0f} mm across (≥ {BIAS_FIELD_MIN_FOV_MM:g}): coil shading varies",
        )
    return False, f"MR slices only {fov:.0f} mm across: near-constant coil gain"
