"""One case scored: per-class results of a prediction/reference pair, from arrays or files.

:func:`score_arrays` is the one place a case is scored (files, fine-tune validation, the
benchmark); :func:`evaluate_case` reads a pair of label files, checks they share a grid, and
calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salign_cli.errors import InputError
from salign_cli.io.volume import Volume, label_values, read_volume, same_grid
from salign_cli.metrics.masks import ConfusionCounts, confusion_counts, dice_from_counts, hd95, nsd


@dataclass(frozen=True)
class ClassResult:
    """One class in one case. ``hd95_mm`` / ``nsd`` are None when not asked for."""

    counts: ConfusionCounts
    dice: float
    hd95_mm: float | None = None
    nsd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"dice": json_float(self.dice)}
        if self.hd95_mm is not None:
            result["hd95_mm"] = json_float(self.hd95_mm)
        if self.nsd is not None:
            result["nsd"] = json_float(self.nsd)
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


def json_float(value: float) -> float | None:
    """NaN is not JSON: undefined values are written as null."""
    return float(value) if math.isfinite(value) else None


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


def reference_dice(labels: np.ndarray, volume: Volume, reference: Path) -> float | None:
    """Mean Dice over the foreground classes of a mask just made (``labels`` on ``volume``'s
    grid) against a reference label file, as `salign evaluate` scores it (classes present in
    either; a class empty in both is left out); ``None`` when neither has any foreground.
    `InputError` when the reference is not on the scan's grid."""
    reference_volume = read_volume(reference)
    require_same_grid(volume, reference_volume)
    truth = label_values(reference_volume)
    results = score_arrays(labels, truth, _foreground_labels(labels, truth), volume.spacing_mm)
    scores = [r.dice for r in results.values() if math.isfinite(r.dice)]
    return float(np.mean(scores)) if scores else None
