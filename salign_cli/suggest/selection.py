"""Which scans to label next, given one feature vector per scan: typical *and* diverse.

Cold-start selection for a few labels is where random picks are hard to beat (COLosSAL,
MICCAI 2023): the two ways to fail are picking near-duplicates (no diversity) and picking
outliers (an odd scan teaches little about the rest). The rule here is TypiClust's (Hacohen et
al., ICML 2022), which was made for exactly this few-label regime: cluster every scan —
candidates and those already labelled — into ``count + labelled`` groups, skip the groups that
already hold a labelled scan, and from the largest remaining groups take each group's most
*typical* member (the densest point: the smallest mean distance to its nearest neighbours in
the group). With a fine-tuned model the pick within a group is weighted by how unsure the model
is of that scan (``uncertainty``, e.g. 1 − expected Dice), so the labels go where they correct it.

Pure numpy plus scipy's k-means; no torch, so it is tested with known answers on synthetic
clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

KMEANS_RESTARTS = 10  # k-means++ restarts; the lowest within-group sum of squares wins
TYPICALITY_NEIGHBOURS = 20  # TypiClust's K, capped by the group's size


@dataclass(frozen=True)
class Pick:
    """One suggested scan: its row in the feature matrix, its group, and why it was chosen."""

    index: int
    group: int
    group_size: int  # scans (candidates and labelled) in the group
    typicality: float  # 1 / mean distance to its nearest neighbours in the group
    uncertainty: float | None  # what weighted the pick, when a model gave one


def standardise(features: np.ndarray) -> np.ndarray:
    """Each feature dimension to zero mean and unit spread over the scans, so no channel's scale
    decides the distances (a constant dimension stays 0)."""
    features = np.asarray(features, dtype=np.float64)
    spread = features.std(axis=0)
    centred = features - features.mean(axis=0)
    return np.asarray(centred / np.where(spread > 0, spread, 1.0))


def best_kmeans(points: np.ndarray, groups: int, seed: int) -> np.ndarray:
    """Group labels ``[N]`` of the best of `KMEANS_RESTARTS` k-means++ runs (seeded)."""
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = np.zeros(len(points), dtype=int), np.inf
    for _ in range(KMEANS_RESTARTS):
        centres, labels = kmeans2(points, groups, minit="++", seed=rng, missing="warn")
        inertia = float(((points - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def typicality(points: np.ndarray) -> np.ndarray:
    """TypiClust's typicality of each of ``points`` ``[n, F]`` within their group: the inverse
    mean Euclidean distance to its K nearest other members (K = min(20, n − 1)); 1 for a lone
    point (nothing to compare with)."""
    count = len(points)
    if count == 1:
        return np.ones(1)
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    neighbours = min(TYPICALITY_NEIGHBOURS, count - 1)
    # column 0 of each sorted row is the point itself (distance 0)
    nearest = np.sort(distances, axis=1)[:, 1 : neighbours + 1]
    return np.asarray(1.0 / np.maximum(nearest.mean(axis=1), 1e-12))


def pick_typical_diverse(
    candidates: np.ndarray,
    count: int,
    *,
    labelled: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    seed: int = 0,
) -> list[Pick]:
    """``count`` rows of ``candidates`` ``[N, F]`` to label next, best first (see the module).

    ``labelled`` ``[M, F]``: scans already labelled, whose groups are skipped. ``uncertainty``
    ``[N]`` (≥ 0, higher = the model is less sure) multiplies the typicality within a group.
    Groups are taken largest first; if fewer uncovered groups than ``count`` remain (a group
    came out empty, or labelled scans cover several), the rest are the candidates farthest from
    everything picked or labelled. Deterministic for a given ``seed``.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    known = np.zeros((0, candidates.shape[1])) if labelled is None else np.asarray(labelled)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if uncertainty is not None and len(uncertainty) != len(candidates):
        raise ValueError(f"{len(uncertainty)} uncertainties for {len(candidates)} candidates")
    count = min(count, len(candidates))
    points = standardise(np.concatenate([candidates, known]))
    groups = min(count + len(known), len(points))
    labels = best_kmeans(points, groups, seed) if groups > 1 else np.zeros(len(points), int)
    covered = set(labels[len(candidates) :].tolist())
    sizes = np.bincount(labels, minlength=groups)
    # largest first; ties by group number so the order is deterministic
    open_groups = sorted(
        (g for g in range(groups) if g not in covered and sizes[g]), key=lambda g: (-sizes[g], g)
    )
    picks: list[Pick] = []
    for group in open_groups[:count]:
        members = np.flatnonzero(labels[: len(candidates)] == group)
        typical = typicality(points[members])  # an open group holds candidates only
        weight = typical if uncertainty is None else typical * np.asarray(uncertainty)[members]
        best = int(np.argmax(weight))
        picks.append(
            Pick(
                index=int(members[best]),
                group=group,
                group_size=int(sizes[group]),
                typicality=float(typical[best]),
                uncertainty=None if uncertainty is None else float(uncertainty[members[best]]),
            )
        )
    return picks + _farthest_fill(points, len(candidates), picks, count - len(picks), uncertainty)


def _farthest_fill(
    points: np.ndarray,
    candidate_count: int,
    picks: list[Pick],
    wanted: int,
    uncertainty: np.ndarray | None,
) -> list[Pick]:
    """``wanted`` more candidates, each the farthest from every pick and labelled scan so far."""
    chosen = [p.index for p in picks] + list(range(candidate_count, len(points)))
    extra: list[Pick] = []
    for _ in range(wanted):
        free = [i for i in range(candidate_count) if i not in chosen]
        if not chosen:
            index = free[0]
        else:
            gaps = np.linalg.norm(
                points[free][:, None, :] - points[chosen][None, :, :], axis=-1
            ).min(axis=1)
            index = free[int(np.argmax(gaps))]
        chosen.append(index)
        extra.append(
            Pick(
                index=index,
                group=-1,
                group_size=0,
                typicality=float("nan"),
                uncertainty=None if uncertainty is None else float(uncertainty[index]),
            )
        )
    return extra
