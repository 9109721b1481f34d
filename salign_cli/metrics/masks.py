"""Metrics on two same-shape boolean masks: confusion counts, Dice, surface distances, HD95, NSD.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EMPTY_MASK_RULE = (
    "Dice = 2*TP/(2*TP+FP+FN); a class empty in both prediction and reference has Dice NaN, "
    "excluded from means and counted in n_empty_both; an empty reference with a non-empty "
    "prediction has Dice 0. HD95 is NaN when either mask is empty, excluded from means and "
    "counted in n_hd95_undefined. NSD follows Dice: NaN when both are empty (counted in "
    "n_empty_both), 0 when exactly one is."
)


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
