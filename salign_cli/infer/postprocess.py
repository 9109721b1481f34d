"""Post-processing of predicted label maps: largest connected component per class, volumes in mL.

Components come from ``scipy.ndimage.label`` (a maintained, C-implemented labelling; it replaced
a hand-written union-find that was ~3× slower). The default connectivity is full — diagonal
neighbours connect, as nnU-Net's post-processing counts them (scikit-image's default, the rank
of the array); ``connectivity=1`` restricts it to face neighbours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def connected_components(
    mask: np.ndarray, connectivity: int | None = None
) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean array of any rank.

    ``connectivity`` is the largest number of axes two neighbours may differ along (1 = faces
    only, ``None`` = the rank: faces, edges and corners). Returns ``(labels, count)``: int32 with
    the mask's shape, 0 outside the mask and ``1..count`` inside, numbered in raster order of
    each component's first voxel.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0:
        raise ValueError("connected components need an array of rank 1 or more")
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity or mask.ndim)
    labels, count = ndimage.label(mask, structure=structure, output=np.int32)
    return labels, int(count)


def keep_largest_component(
    labels: np.ndarray, classes: range | list[int], connectivity: int | None = None
) -> np.ndarray:
    """A copy of ``labels`` where each listed class keeps only its largest connected component.

    Voxels of smaller components become background (0), as in nnU-Net's post-processing; ties
    keep the component met first in raster order. Classes absent from ``labels`` are skipped.
    ``connectivity`` as in `connected_components` (default: full).
    """
    result = np.array(labels, copy=True)
    for value in classes:
        mask = labels == value
        if not mask.any():
            continue
        components, count = connected_components(mask, connectivity)
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
    # bincount on the labels' own unsigned type: an int64 copy of a 512x512x200 mask cost 4 s
    counts = np.bincount(labels.reshape(-1), minlength=len(class_names))
    return {
        name: float(counts[value]) * voxel_ml for value, name in enumerate(class_names) if value
    }
