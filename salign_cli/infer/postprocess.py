"""Post-processing of predicted label maps: largest connected component per class, volumes in mL.

Connected components are labelled here with torch (already a dependency) rather than
``scipy.ndimage.label``, which would add SciPy to the runtime stack for one option. The algorithm
is union-find over face neighbours, run as whole-array operations. Foreground runs along the
last axis are the nodes (so a smooth organ has few nodes and edges); every run starts as its
own root; each round hooks the larger root of every edge that still joins two trees onto
the smaller one (``scatter_reduce`` with ``amin``), then compresses paths by pointer jumping
(``parent = parent[parent]``) until every voxel points at its root. Parents only ever decrease,
so there are no cycles, and each round removes every root that still has an edge to a smaller
one, so a few dozen rounds cover real masks. Memory: a few boolean copies of the mask's
bounding box plus a few integers per run.
"""

from __future__ import annotations

import numpy as np
import torch


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the face-connected (6-neighbour in 3D) components of a boolean array of any rank.

    Returns ``(labels, count)``: ``labels`` is int32 with the mask's shape, 0 outside the mask and
    ``1..count`` inside, numbered in raster order of each component's first voxel (the order
    ``scipy.ndimage.label`` uses with its default structure).
    """
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if not mask.any():
        return labels, 0
    box = _bounding_box(mask)
    cropped = np.ascontiguousarray(mask[box])
    flat = cropped.reshape(-1)
    # continues[v]: v and its left neighbour in the same row are both foreground (one run).
    continues = np.zeros_like(flat)
    continues[1:] = flat[1:] & flat[:-1]
    continues.reshape(-1, cropped.shape[-1])[:, 0] = False
    run_starts = np.flatnonzero(flat & ~continues)
    ends = flat.copy()
    ends[:-1] &= ~continues[1:]
    run_lengths = np.flatnonzero(ends) - run_starts + 1
    roots = _union_find_roots(len(run_starts), _run_edges(cropped, continues, run_starts))
    # A root is the smallest run of its tree, i.e. the component's first run in raster order;
    # its rank among all roots is the component's number.
    is_root = roots == torch.arange(len(run_starts))
    number_of_run = torch.cumsum(is_root.to(torch.int32), 0).index_select(0, roots).numpy()
    cropped_labels = np.zeros(cropped.shape, dtype=np.int32)
    cropped_labels.reshape(-1)[flat] = np.repeat(number_of_run, run_lengths)
    labels[box] = cropped_labels
    return labels, int(is_root.sum())


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel (organs are small next to a whole CT)."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _run_edges(
    mask: np.ndarray, continues: np.ndarray, run_starts: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of runs (along the last axis) that touch through a face along another axis.

    Works on the flat C-order array: the neighbour along ``axis`` is ``step`` elements on; pairs
    whose lower voxel is the last along ``axis`` would wrap into the next row and are cleared.
    A pair repeats the one to its left when both voxels continue a run, so only the first
    voxel of every overlap is kept: a few edges per pair of runs, not one per voxel.
    """
    flat = mask.reshape(-1)
    sources, targets = [], []
    for axis, length in enumerate(mask.shape[:-1]):
        if length < 2:
            continue
        step = int(np.prod(mask.shape[axis + 1 :], dtype=np.int64))
        touching = np.zeros(flat.shape, dtype=bool)
        touching[:-step] = flat[:-step] & flat[step:]
        np.moveaxis(touching.reshape(mask.shape), axis, 0)[-1] = False
        repeated = np.zeros_like(touching)
        repeated[1:] = touching[:-1] & continues[1:]
        lower = np.flatnonzero(touching & ~repeated)
        sources.append(torch.from_numpy(_run_of(lower, run_starts)))
        targets.append(torch.from_numpy(_run_of(lower + step, run_starts)))
    if not sources:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    return torch.cat(sources), torch.cat(targets)


def _run_of(positions: np.ndarray, run_starts: np.ndarray) -> np.ndarray:
    """Index of the run holding each foreground flat position (runs sorted by start)."""
    return np.searchsorted(run_starts, positions, side="right").astype(np.int64) - 1


def _union_find_roots(count: int, edges: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """For ``count`` nodes joined by ``edges``, the smallest node index of each node's tree."""
    parent = torch.arange(count)
    sources, targets = edges
    while sources.numel():
        source_roots = parent.index_select(0, sources)
        target_roots = parent.index_select(0, targets)
        joining = source_roots != target_roots
        if not bool(joining.any()):
            break
        sources, targets = sources[joining], targets[joining]
        source_roots, target_roots = source_roots[joining], target_roots[joining]
        smaller = torch.minimum(source_roots, target_roots)
        larger = torch.maximum(source_roots, target_roots)
        parent.scatter_reduce_(0, larger, smaller, reduce="amin")
        parent = _compress(parent)
    return parent


def _compress(parent: torch.Tensor) -> torch.Tensor:
    """Pointer jumping until every node points at its root (parents are never larger)."""
    while True:
        grandparent = parent.index_select(0, parent)
        if torch.equal(grandparent, parent):
            return parent
        parent = grandparent


def keep_largest_component(labels: np.ndarray, classes: range | list[int]) -> np.ndarray:
    """A copy of ``labels`` where each listed class keeps only its largest connected component.

    Voxels of smaller components become background (0), as in nnU-Net's post-processing; ties
    keep the component met first in raster order. Classes absent from ``labels`` are skipped.
    """
    result = np.array(labels, copy=True)
    for value in classes:
        mask = labels == value
        if not mask.any():
            continue
        components, count = connected_components(mask)
        if count < 2:
            continue
        sizes = np.bincount(components.reshape(-1), minlength=count + 1)
        sizes[0] = 0
        result[mask & (components != int(np.argmax(sizes)))] = 0
    return result


def label_volumes_ml(
    labels: np.ndarray, affine: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """Volume of every non-background class in millilitres (voxel count × voxel volume).

    The voxel volume is ``|det(affine[:3, :3])|`` mm³, which holds for oblique and sheared grids.
    """
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(class_names))
    return {
        name: float(counts[value]) * voxel_ml for value, name in enumerate(class_names) if value
    }
