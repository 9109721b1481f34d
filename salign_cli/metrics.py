"""Segmentation metrics: pure functions on masks, a folder evaluator, and a JSON summary writer.

Why one module of about 730 lines (over the house's 600): the array metrics (Dice, HD95, NSD)
and the folder evaluator share the label checks and the per-class summary types; nnU-Net keeps
the same pieces in one file for the same reason. It imports no torch.

Shaped like nnU-Net's ``evaluation/evaluate_predictions.py``: confusion counts per class
(:func:`confusion_counts`) → metrics (:func:`dice_from_counts`, :func:`hd95`, :func:`nsd`) → one summary
(:func:`evaluate_folders` → :class:`EvaluationSummary` → :func:`write_summary`).

Empty-mask rule (one rule, stated once in :data:`EMPTY_MASK_RULE`, copied into every summary):

- Dice = 2·TP / (2·TP + FP + FN). A class empty in both prediction and reference has Dice NaN:
  it is excluded from means and counted in ``n_empty_both`` (as nnU-Net does). An empty
  reference with a non-empty prediction (or the reverse) has Dice 0.
- HD95 is undefined (NaN) when either mask is empty: excluded from means and counted in
  ``n_hd95_undefined``.
- NSD (normalised surface Dice) follows Dice: NaN when both masks are empty (excluded, counted in
  ``n_empty_both``), 0 when exactly one is.

HD95 is the symmetric 95th-percentile Hausdorff distance in mm (MONAI's definition): the larger of
the two directed 95th percentiles of surface-to-surface distances, where a surface voxel is a mask
voxel with a face neighbour outside the mask (SciPy's distance transform, imported only when
HD95 is asked for, so reading masks stays fast). NSD at a tolerance τ mm (Nikolov et al. 2021)
is the share of both masks' surface voxels within τ of the other's surface, from the same
surface distances (:func:`surface_distances`).

Means are over the cases where a value is defined; ``sd`` is the sample standard deviation
(ddof = 1; NaN for fewer than two values). The overall figure first averages each case over its
defined classes, then takes mean ± sd across cases, so the sd reflects case-to-case spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salign_cli.data.dataset_json import find_dataset_json, read_dataset_json
from salign_cli.errors import InputError
from salign_cli.io.atomic import write_json
from salign_cli.io.naming import MASK_SUFFIX, case_name, is_scan_path, scan_name, without_channel
from salign_cli.io.volume import Volume, label_values, read_volume, same_grid

EMPTY_MASK_RULE = (
    "Dice = 2*TP/(2*TP+FP+FN); a class empty in both prediction and reference has Dice NaN, "
    "excluded from means and counted in n_empty_both; an empty reference with a non-empty "
    "prediction has Dice 0. HD95 is NaN when either mask is empty, excluded from means and "
    "counted in n_hd95_undefined. NSD follows Dice: NaN when both are empty (counted in "
    "n_empty_both), 0 when exactly one is."
)
SUMMARY_NAME = "summary.json"


# ---------------------------------------------------------------------------------------------
# pure metrics on masks


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of one class in one case: true/false positives/negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn

    @property
    def empty_both(self) -> bool:
        return self.n_pred == 0 and self.n_ref == 0


def _as_mask_pair(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask, ref_mask = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"mask shapes differ: {pred_mask.shape} vs {ref_mask.shape}")
    return pred_mask, ref_mask


def confusion_counts(pred_mask: np.ndarray, ref_mask: np.ndarray) -> ConfusionCounts:
    """TP/FP/FN/TN of two same-shape boolean masks (any rank).

    >>> confusion_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    ConfusionCounts(tp=1, fp=1, fn=1, tn=1)
    """
    pred_mask, ref_mask = _as_mask_pair(pred_mask, ref_mask)
    tp = int(np.count_nonzero(pred_mask & ref_mask))
    fp = int(np.count_nonzero(pred_mask)) - tp
    fn = int(np.count_nonzero(ref_mask)) - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=pred_mask.size - tp - fp - fn)


def dice_from_counts(counts: ConfusionCounts) -> float:
    """2·TP / (2·TP + FP + FN); NaN when both masks are empty (see :data:`EMPTY_MASK_RULE`)."""
    denominator = 2 * counts.tp + counts.fp + counts.fn
    return math.nan if denominator == 0 else 2 * counts.tp / denominator


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice of two boolean masks: NaN if both are empty, 0 if exactly one is.

    >>> dice(np.array([1, 1, 0]), np.array([1, 0, 0]))  # 2·1 / (2 + 1)
    0.6666666666666666
    """
    return dice_from_counts(confusion_counts(pred_mask, ref_mask))


def _surface(mask: np.ndarray, ndimage: Any) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (or outside the array)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    surface: np.ndarray = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return surface


def _checked_spacing(mask: np.ndarray, spacing_mm: Sequence[float]) -> list[float]:
    if len(spacing_mm) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing_mm)} does not match mask rank {mask.ndim}")
    return [float(s) for s in spacing_mm]


def surface_distances(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of one mask to the nearest surface voxel of the other.

    Returns ``(pred_to_ref, ref_to_pred)``: one float64 value per surface voxel of the prediction
    (resp. the reference). The one home of the surface and distance code that :func:`hd95` and
    :func:`nsd` share. Both masks must be non-empty (``ValueError`` otherwise). Computed on the
    bounding box of both masks, which is exact: every surface voxel and every nearest partner
    lies inside it (a mask voxel on the box's edge has a neighbour outside both masks).

    >>> a = np.zeros((1, 1, 5), bool); b = a.copy(); a[0, 0, 0] = b[0, 0, 3] = True
    >>> surface_distances(a, b, (1.0, 1.0, 2.0))  # 3 voxels of 2 mm, both ways
    (array([6.]), array([6.]))
    """
    pred_mask, ref_mask = _as_mask_pair(pred_mask, ref_mask)
    sampling = _checked_spacing(pred_mask, spacing_mm)
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    from scipy import ndimage

    box = ndimage.find_objects((pred_mask | ref_mask).astype(np.uint8))[0]
    pred_surface = _surface(pred_mask[box], ndimage)
    ref_surface = _surface(ref_mask[box], ndimage)
    pred_to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)[pred_surface]
    ref_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)[ref_surface]
    return pred_to_ref, ref_to_pred


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two masks' surfaces, in mm.

    ``spacing_mm`` gives the voxel size along each array axis (so anisotropic grids are measured
    in real distances). NaN when either mask is empty.

    >>> a = np.zeros((1, 1, 5), bool); b = a.copy(); a[0, 0, 0] = b[0, 0, 3] = True
    >>> hd95(a, b, (1.0, 1.0, 2.0))  # 3 voxels of 2 mm
    6.0
    """
    pred_mask, ref_mask = _as_mask_pair(pred_mask, ref_mask)
    _checked_spacing(pred_mask, spacing_mm)
    if not pred_mask.any() or not ref_mask.any():
        return math.nan
    pred_to_ref, ref_to_pred = surface_distances(pred_mask, ref_mask, spacing_mm)
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


def nsd(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float,
) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (Nikolov et al. 2021), in [0, 1].

    The share of all surface voxels of both masks that lie within ``tolerance_mm`` (inclusive)
    of the other mask's surface: (|pred surface near ref| + |ref surface near pred|) /
    (|pred surface| + |ref surface|). Unlike Dice it forgives boundary errors smaller than the
    tolerance, which is what a reader correcting contours cares about. Surfaces and distances
    are :func:`surface_distances`' (surface voxels counted, not surface areas).

    Empty masks (:data:`EMPTY_MASK_RULE`): both empty → NaN (like Dice: nothing to score);
    exactly one empty → 0 (no surface voxel has a partner).

    >>> a = np.zeros((1, 1, 5), bool); b = a.copy(); a[0, 0, 0] = b[0, 0, 3] = True
    >>> nsd(a, b, (1.0, 1.0, 2.0), 6.0), nsd(a, b, (1.0, 1.0, 2.0), 5.9)
    (1.0, 0.0)
    """
    pred_mask, ref_mask = _as_mask_pair(pred_mask, ref_mask)
    _checked_spacing(pred_mask, spacing_mm)
    if not math.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    pred_any, ref_any = bool(pred_mask.any()), bool(ref_mask.any())
    if not (pred_any and ref_any):
        return 0.0 if pred_any or ref_any else math.nan
    pred_to_ref, ref_to_pred = surface_distances(pred_mask, ref_mask, spacing_mm)
    within = int(np.count_nonzero(pred_to_ref <= tolerance_mm)) + int(
        np.count_nonzero(ref_to_pred <= tolerance_mm)
    )
    return within / (pred_to_ref.size + ref_to_pred.size)


# ---------------------------------------------------------------------------------------------
# results and aggregation


@dataclass(frozen=True)
class ClassResult:
    """One class in one case. ``hd95_mm`` / ``nsd`` are None when not asked for."""

    counts: ConfusionCounts
    dice: float
    hd95_mm: float | None = None
    nsd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"dice": _json_float(self.dice)}
        if self.hd95_mm is not None:
            result["hd95_mm"] = _json_float(self.hd95_mm)
        if self.nsd is not None:
            result["nsd"] = _json_float(self.nsd)
        counts = self.counts
        result |= {"tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn}
        return result | {"n_pred": counts.n_pred, "n_ref": counts.n_ref}


@dataclass(frozen=True)
class CaseResult:
    """Every evaluated class of one prediction/reference pair.

    ``prediction`` is ``None`` for labels scored in memory, never written (validation).
    """

    case: str
    prediction: Path | None
    reference: Path
    classes: dict[int, ClassResult]
    n_voxels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "prediction": None if self.prediction is None else str(self.prediction),
            "reference": str(self.reference),
            "metrics": {str(label): result.to_dict() for label, result in self.classes.items()},
        }


def score_arrays(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Iterable[int],
    spacing_mm: Sequence[float],
    *,
    with_hd95: bool = False,
    nsd_tolerance_mm: float | None = None,
) -> dict[int, ClassResult]:
    """Score each class of one case from two same-grid label arrays: class id → `ClassResult`.

    The one place a case is scored, whether its labels came from files (`evaluate_case`) or
    from a model in memory (fine-tune validation, the benchmark), so every Dice salign reports
    follows the same empty-mask rule. ``spacing_mm`` (the reference's voxel size) is used only
    for HD95 (``with_hd95``) and NSD (``nsd_tolerance_mm`` given).

    >>> prediction, reference = np.array([1, 1, 0, 2]), np.array([1, 0, 0, 2])
    >>> round(score_arrays(prediction, reference, [1], (1.0,))[1].dice, 3)  # 2·1 / (2·1 + 1)
    0.667
    """
    results = {}
    for label in classes:
        pred_mask, ref_mask = prediction == label, reference == label
        counts = confusion_counts(pred_mask, ref_mask)
        distance = hd95(pred_mask, ref_mask, spacing_mm) if with_hd95 else None
        surface_dice = (
            None
            if nsd_tolerance_mm is None
            else nsd(pred_mask, ref_mask, spacing_mm, nsd_tolerance_mm)
        )
        results[label] = ClassResult(counts, dice_from_counts(counts), distance, surface_dice)
    return results


@dataclass(frozen=True)
class MeanSd:
    """Mean ± sample sd over the ``n`` defined (finite) values; NaN where undefined."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanSd:
        defined = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
        mean = float(defined.mean()) if defined.size else math.nan
        sd = float(defined.std(ddof=1)) if defined.size >= 2 else math.nan
        return cls(mean=mean, sd=sd, n=int(defined.size))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": _json_float(self.mean), "sd": _json_float(self.sd), "n": self.n}


@dataclass(frozen=True)
class ClassSummary:
    """One class over all cases. ``hd95_mm`` / ``nsd`` are None when not asked for."""

    label: int
    name: str
    dice: MeanSd
    n_empty_both: int
    hd95_mm: MeanSd | None = None
    n_hd95_undefined: int = 0
    nsd: MeanSd | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "dice": self.dice.to_dict(),
            "n_empty_both": self.n_empty_both,
        }
        if self.hd95_mm is not None:
            result |= {"hd95_mm": self.hd95_mm.to_dict(), "n_hd95_undefined": self.n_hd95_undefined}
        if self.nsd is not None:
            result["nsd"] = self.nsd.to_dict()
        return result


@dataclass(frozen=True)
class EvaluationSummary:
    """Everything :func:`evaluate_folders` found; :meth:`to_dict` is what ``summary.json`` holds.

    ``prediction``/``reference`` are the folders compared, ``None`` for cases scored in memory.
    """

    prediction: Path | None
    reference: Path | None
    cases: tuple[CaseResult, ...]
    classes: tuple[ClassSummary, ...]
    overall_dice: MeanSd
    overall_hd95_mm: MeanSd | None
    unmatched_predictions: tuple[Path, ...] = ()
    unmatched_references: tuple[Path, ...] = ()
    overall_nsd: MeanSd | None = None
    nsd_tolerance_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        overall: dict[str, Any] = {"dice": self.overall_dice.to_dict()}
        if self.overall_hd95_mm is not None:
            overall["hd95_mm"] = self.overall_hd95_mm.to_dict()
        if self.overall_nsd is not None:
            overall["nsd"] = self.overall_nsd.to_dict()
        tolerance = (
            {} if self.nsd_tolerance_mm is None else {"nsd_tolerance_mm": self.nsd_tolerance_mm}
        )
        return {
            "prediction": None if self.prediction is None else str(self.prediction),
            "reference": None if self.reference is None else str(self.reference),
            "empty_mask_rule": EMPTY_MASK_RULE,
            **tolerance,
            "n_cases": len(self.cases),
            "classes": {str(c.label): c.to_dict() for c in self.classes},
            "overall": overall,
            "metric_per_case": [case.to_dict() for case in self.cases],
            "unmatched": {
                "predictions": [str(p) for p in self.unmatched_predictions],
                "references": [str(p) for p in self.unmatched_references],
            },
        }


def _json_float(value: float) -> float | None:
    """NaN is not JSON: undefined values are written as null."""
    return float(value) if math.isfinite(value) else None


def summarise_class(label: int, name: str, cases: Sequence[CaseResult]) -> ClassSummary:
    """Mean ± sd of one class over cases, applying the empty-mask rule."""
    results = [case.classes[label] for case in cases]
    hd95_values = _computed(results, "hd95_mm")
    nsd_values = _computed(results, "nsd")
    return ClassSummary(
        label=label,
        name=name,
        dice=MeanSd.of(r.dice for r in results),
        n_empty_both=sum(r.counts.empty_both for r in results),
        hd95_mm=MeanSd.of(hd95_values) if hd95_values else None,
        n_hd95_undefined=sum(not math.isfinite(v) for v in hd95_values),
        nsd=MeanSd.of(nsd_values) if nsd_values else None,
    )


def _computed(results: Iterable[ClassResult], metric: str) -> list[float]:
    """The values of an optional metric (``hd95_mm``, ``nsd``) where it was computed."""
    return [value for r in results if (value := getattr(r, metric)) is not None]


def _overall(cases: Sequence[CaseResult], metric: str) -> MeanSd | None:
    """Mean ± sd across cases of each case's mean of an optional metric; None if never computed."""
    if not any(_computed(case.classes.values(), metric) for case in cases):
        return None
    return MeanSd.of(_case_mean(_computed(case.classes.values(), metric)) for case in cases)


def _case_mean(values: Iterable[float]) -> float:
    """A case's mean over its defined classes (NaN when none is defined)."""
    return MeanSd.of(values).mean


def summarise(
    cases: Sequence[CaseResult],
    class_names: dict[int, str],
    *,
    prediction: Path | None,
    reference: Path | None,
    unmatched_predictions: Sequence[Path] = (),
    unmatched_references: Sequence[Path] = (),
    nsd_tolerance_mm: float | None = None,
) -> EvaluationSummary:
    """Per-class and overall mean ± sd of case results that all hold the classes of ``class_names``.

    ``nsd_tolerance_mm`` is recorded in the summary when the results hold NSD at that tolerance.
    """
    classes = tuple(summarise_class(label, name, cases) for label, name in class_names.items())
    return EvaluationSummary(
        prediction=prediction,
        reference=reference,
        cases=tuple(cases),
        classes=classes,
        overall_dice=MeanSd.of(_case_mean(r.dice for r in case.classes.values()) for case in cases),
        overall_hd95_mm=_overall(cases, "hd95_mm"),
        unmatched_predictions=tuple(unmatched_predictions),
        unmatched_references=tuple(unmatched_references),
        overall_nsd=_overall(cases, "nsd"),
        nsd_tolerance_mm=nsd_tolerance_mm,
    )


# ---------------------------------------------------------------------------------------------
# one case on disk


def require_same_grid(prediction: Volume, reference: Volume) -> None:
    """Raise :class:`InputError` unless both volumes are on one grid (:func:`same_grid`)."""
    if same_grid(prediction, reference):
        return
    if prediction.shape != reference.shape:
        difference = f"shape {prediction.shape} vs {reference.shape}"
    else:
        difference = "affine (voxel-to-world) differs"
    raise InputError(
        f"{prediction.path}: not on the grid of the reference {reference.path} ({difference}); "
        "resample the prediction onto the reference's grid (salign segment writes masks on "
        "the input scan's grid)"
    )


def _foreground_labels(*label_arrays: np.ndarray) -> list[int]:
    """Labels > 0 present in any of the arrays."""
    present = np.unique(np.concatenate([np.unique(array) for array in label_arrays]))
    return [int(label) for label in present if label > 0]


def evaluate_case(
    prediction: Path,
    reference: Path,
    classes: Sequence[int] | None,
    *,
    with_hd95: bool,
    case: str,
    nsd_tolerance_mm: float | None = None,
) -> CaseResult:
    """Read one prediction/reference pair, check their grids, and score ``classes``.

    ``classes=None`` scores every label > 0 present in either mask. NSD is computed when
    ``nsd_tolerance_mm`` is given; distances use the reference's voxel spacing.
    """
    prediction_volume, reference_volume = read_volume(prediction), read_volume(reference)
    require_same_grid(prediction_volume, reference_volume)
    pred_labels, ref_labels = label_values(prediction_volume), label_values(reference_volume)
    if classes is None:
        classes = _foreground_labels(pred_labels, ref_labels)
    results = score_arrays(
        pred_labels,
        ref_labels,
        classes,
        reference_volume.spacing_mm,
        with_hd95=with_hd95,
        nsd_tolerance_mm=nsd_tolerance_mm,
    )
    return CaseResult(case, prediction, reference, results, n_voxels=int(ref_labels.size))


# ---------------------------------------------------------------------------------------------
# folders


@dataclass(frozen=True)
class CasePair:
    case: str
    prediction: Path
    reference: Path


@dataclass(frozen=True)
class CaseMatch:
    """Predictions paired with references by case name, and what was left over."""

    pairs: tuple[CasePair, ...]
    unmatched_predictions: tuple[Path, ...]
    unmatched_references: tuple[Path, ...]


def _scan_files(folder: Path) -> list[Path]:
    """Scan files directly in ``folder`` (hidden and partial files skipped), sorted by name."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and is_scan_path(path) and not path.name.startswith(".")
    )


def _by_case(files: Iterable[Path], case_of: Callable[[Path], str], what: str) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for path in files:
        case = case_of(path)
        if case in cases:
            raise InputError(
                f"{path}: a second {what} for case {case!r} (also {cases[case].name}); "
                "keep one file per case"
            )
        cases[case] = path
    return cases


def match_cases(pred: Path, labels: Path) -> CaseMatch:
    """Pair prediction and label files by case name (``scan_name``).

    Two folders: a prediction ``<case>.nii.gz`` or ``<case>_seg.nii.gz`` (``salign segment``'s
    default name; ``<case>_0000`` as nnU-Net names inputs is the same case) matches the label
    ``<case>.nii.gz``; where both ``<case>`` and ``<case>_seg``
    are there (masks written beside their inputs), the mask is the prediction. Two files: paired
    as given.
    """
    for path in (pred, labels):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; check the path")
    if pred.is_file() and labels.is_file():
        return CaseMatch((CasePair(scan_name(labels), pred, labels),), (), ())
    if not (pred.is_dir() and labels.is_dir()):
        raise InputError(f"{pred} and {labels}: give two folders or two files, not one of each")
    references = _by_case(_scan_files(labels), scan_name, "label file")
    if not references:
        raise InputError(f"{labels}: no label files (.nii.gz, .nrrd, .mha) in this folder")

    def reference_case(path: Path) -> str:
        name = scan_name(path)
        if name in references:
            return name
        if name.endswith(MASK_SUFFIX):
            name = name[: -len(MASK_SUFFIX)]
        return without_channel(name)  # nnU-Net inputs: case_0000 → case

    candidates = _scan_files(pred)
    names = {scan_name(path) for path in candidates}
    # an input with its mask beside it (segment's default layout): the mask is the prediction
    predictions = _by_case(
        (path for path in candidates if case_name(path) + MASK_SUFFIX not in names),
        reference_case,
        "prediction",
    )
    pairs = tuple(
        CasePair(case, predictions[case], references[case])
        for case in sorted(references.keys() & predictions.keys())
    )
    if not pairs:
        example = next(iter(references))
        raise InputError(
            f"{pred}: no prediction matches a label file in {labels} by case name (expected e.g. "
            f"{example}.nii.gz or {example}{MASK_SUFFIX}.nii.gz); check the two folders"
        )
    return CaseMatch(
        pairs,
        tuple(path for case, path in predictions.items() if case not in references),
        tuple(path for case, path in references.items() if case not in predictions),
    )


def class_names_from_dataset_json(labels: Path) -> dict[int, str]:
    """Label → name from the ``dataset.json`` beside or one level above the labels (MSD or
    nnU-Net v2, read by :func:`~salign_cli.data.dataset_json.read_dataset_json`). No file → ``{}``.
    """
    root = find_dataset_json(labels)
    if root is None:
        return {}
    return dict(read_dataset_json(root).label_names or {})


def _validated_classes(classes: Iterable[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(classes)))
    if not chosen or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in chosen):
        raise InputError(
            f"--classes {','.join(map(str, chosen))}: give label numbers > 0, e.g. --classes 1,2"
        )
    return chosen


def _reference_labels(case: CaseResult) -> set[int]:
    return {label for label, result in case.classes.items() if result.counts.n_ref > 0}


def evaluate_folders(
    pred: Path,
    labels: Path,
    *,
    classes: Sequence[int] | None = None,
    hd95: bool = False,
    nsd_tolerance_mm: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationSummary:
    """Dice (HD95 with ``hd95=True``, NSD at ``nsd_tolerance_mm``) per case and class, with
    mean ± sd per class and overall.

    ``pred`` and ``labels`` are two folders (matched by case name, see :func:`match_cases`) or
    two files. ``classes`` defaults to every label > 0 present in any reference. Empty masks
    follow :data:`EMPTY_MASK_RULE`. ``progress(done, total)`` is called after each case.
    Raises :class:`InputError` for no matches, grids that differ, fractional label values, or
    a negative NSD tolerance.

    Example (folders on disk)::

        summary = evaluate_folders(Path("predictions"), Path("labelsTr"), hd95=True)
        write_summary(summary, Path("predictions/summary.json"))
        print(summary.classes[0].name, summary.classes[0].dice.mean)
    """
    chosen = _validated_classes(classes) if classes is not None else None
    if nsd_tolerance_mm is not None and not (
        math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0
    ):
        raise InputError(f"--nsd {nsd_tolerance_mm:g}: give a tolerance in mm >= 0, e.g. --nsd 2")
    match = match_cases(pred, labels)
    results: list[CaseResult] = []
    for done, pair in enumerate(match.pairs, start=1):
        # Without --classes, score every label seen in the pair now and drop below those found
        # in no reference at all, so each file is read only once.
        results.append(
            evaluate_case(
                pair.prediction,
                pair.reference,
                chosen,
                with_hd95=hd95,
                case=pair.case,
                nsd_tolerance_mm=nsd_tolerance_mm,
            )
        )
        if progress:
            progress(done, len(match.pairs))
    if chosen is None:
        chosen = tuple(sorted(set().union(*map(_reference_labels, results))))
        if not chosen:
            raise InputError(
                f"{labels}: every reference is empty (no label > 0); name the labels to score "
                "with --classes"
            )
        results = [
            _restricted(case, chosen, with_hd95=hd95, with_nsd=nsd_tolerance_mm is not None)
            for case in results
        ]
    names = class_names_from_dataset_json(labels)
    return summarise(
        results,
        {label: names.get(label, f"class {label}") for label in chosen},
        prediction=pred,
        reference=labels,
        unmatched_predictions=match.unmatched_predictions,
        unmatched_references=match.unmatched_references,
        nsd_tolerance_mm=nsd_tolerance_mm,
    )


def _restricted(
    case: CaseResult, classes: Sequence[int], *, with_hd95: bool, with_nsd: bool
) -> CaseResult:
    """``case`` with exactly ``classes``: a class it did not score was absent from both masks."""
    empty = ClassResult(
        ConfusionCounts(0, 0, 0, case.n_voxels),
        math.nan,
        math.nan if with_hd95 else None,
        math.nan if with_nsd else None,
    )
    return CaseResult(
        case.case,
        case.prediction,
        case.reference,
        {label: case.classes.get(label, empty) for label in classes},
        n_voxels=case.n_voxels,
    )


def default_summary_path(pred: Path) -> Path:
    """``PRED/summary.json`` (beside the prediction when PRED is a single file)."""
    return (pred if pred.is_dir() else pred.parent) / SUMMARY_NAME


def write_summary(summary: EvaluationSummary, path: Path) -> Path:
    """Write ``summary.to_dict()`` as JSON atomically (NaN written as null), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary.to_dict())
    return path
