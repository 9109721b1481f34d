"""How much a mask can be trusted, from the softmax that made it: the model's expected Dice.

For class ``c`` with softmax ``p_c`` and mask ``m_c`` (the voxels whose argmax is ``c``) the
**expected Dice** is the soft Dice between the two,

    ``Q_c = 2 Σ p_c·m_c / (Σ p_c + Σ m_c)``,

the Dice the mask would score if each voxel were truly ``c`` with probability ``p_c``
(independently). It is 1 only when the network is certain everywhere, and it falls both for
doubtful voxels inside the mask (``p_c`` well below 1) and for probability mass the mask left
out (an under-segmented structure the network half-saw). A case's score is the mean over the
foreground classes that have any mask or probability mass.

It ranks masks rather than predicting their Dice: softmax networks are over-confident, so
``Q`` sits above the true Dice. Measured on held-out scans (docs/benchmarks.md, "Quality
scores"): Spearman ρ with the true Dice is what tells whether the ranking finds the bad masks.
Computed on the grid the network saw (the prepared slices), before the largest-component
clean-up, chunk by chunk so it never holds more than one chunk's argmax.

Why hand-written: no library scores a mask against its own softmax; the formula is three sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_CHUNK = 16  # slices per pass: bounds the float32 copy of the scores


@dataclass(frozen=True)
class MaskQuality:
    """Expected Dice per foreground class (``None``: the class has no mask and no mass) and
    their mean (``None`` when no class has either)."""

    by_class: dict[int, float | None]

    @property
    def score(self) -> float | None:
        defined = [value for value in self.by_class.values() if value is not None]
        return float(np.mean(defined)) if defined else None


def expected_dice(probabilities: np.ndarray) -> MaskQuality:
    """`MaskQuality` of the argmax mask of ``probabilities``: softmax ``[C, D, H, W]`` (any
    float dtype; class 0 is background and is not scored)."""
    classes = probabilities.shape[0]
    overlap = np.zeros(classes, dtype=np.float64)
    mass = np.zeros(classes, dtype=np.float64)
    count = np.zeros(classes, dtype=np.float64)
    for start in range(0, probabilities.shape[1], _CHUNK):
        chunk = np.asarray(probabilities[:, start : start + _CHUNK], dtype=np.float32)
        winner = chunk.argmax(axis=0)
        for label in range(1, classes):
            chosen = winner == label
            overlap[label] += float(chunk[label][chosen].sum(dtype=np.float64))
            mass[label] += float(chunk[label].sum(dtype=np.float64))
            count[label] += float(chosen.sum())
    by_class: dict[int, float | None] = {}
    for label in range(1, classes):
        total = mass[label] + count[label]
        # less than one voxel's worth of mask and mass: the class is simply not there
        by_class[label] = 2 * overlap[label] / total if total >= 1 else None
    return MaskQuality(by_class)


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Per voxel ``1 − max_c p_c`` of softmax ``[..., C]`` (float32): 0 where the network is
    certain, at most ``1 − 1/C`` where every class is equally likely."""
    top: np.ndarray = np.asarray(probabilities, dtype=np.float32).max(axis=-1)
    return (1.0 - top).astype(np.float32)


def worst_first(scores: dict[str, float | None], count: int = 3) -> list[tuple[str, float]]:
    """The ``count`` lowest-scored names, worst first (names without a score are left out)."""
    scored = [(name, value) for name, value in scores.items() if value is not None]
    scored = [(name, value) for name, value in scored if math.isfinite(value)]
    return sorted(scored, key=lambda item: (item[1], item[0]))[:count]
