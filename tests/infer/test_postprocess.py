"""Connected components, largest-component filtering and label volumes: hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from salign_cli.infer.postprocess import (
    connected_components,
    keep_largest_component,
    label_volumes_ml,
)


def test_full_connectivity_by_default_and_faces_only_on_request():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 0] = True  # diagonal neighbours (they share an edge)
    mask[2, 2, 2] = True  # two steps away from both along the last axis: alone either way
    full, count = connected_components(mask)
    assert count == 2 and full[0, 0, 0] == full[1, 1, 0] == 1 and full[2, 2, 2] == 2
    labels, count = connected_components(mask, connectivity=1)  # faces only
    assert count == 3
    # Numbered in raster order of each component's first voxel.
    assert labels[0, 0, 0] == 1 and labels[1, 1, 0] == 2 and labels[2, 2, 2] == 3
    assert (labels[~mask] == 0).all()


def test_u_shape_merges_runs_that_only_meet_at_the_bottom():
    # Two vertical bars joined by a bottom row: the bars are separate runs until the last row.
    mask = np.array(
        [
            [1, 0, 0, 1],
            [1, 0, 0, 1],
            [1, 1, 1, 1],
            [0, 0, 0, 0],
            [0, 1, 1, 0],
        ],
        dtype=bool,
    )
    labels, count = connected_components(mask)
    assert count == 2
    expected = np.array([[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 2, 2, 0]])
    np.testing.assert_array_equal(labels, expected)


def test_a_spiral_needs_many_merges_and_still_is_one_component():
    size = 21
    mask = np.zeros((size, size), dtype=bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:  # a square spiral corridor with a 1-pixel wall
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        mask[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            mask[top - 1, left] = True
    labels, count = connected_components(mask)
    assert count == 1
    assert (labels[mask] == 1).all()


@pytest.mark.parametrize("shape", [(1,), (5,), (1, 1, 1), (4, 1, 6)])
def test_degenerate_shapes(shape):
    mask = np.ones(shape, dtype=bool)
    labels, count = connected_components(mask)
    assert count == 1 and (labels == 1).all()
    empty_labels, empty_count = connected_components(np.zeros(shape, dtype=bool))
    assert empty_count == 0 and not empty_labels.any()


@pytest.mark.parametrize(
    ("shape", "density"), [((9, 11, 13), 0.3), ((9, 11, 13), 0.6), ((30, 40), 0.55)]
)
def test_faces_only_components_are_never_fewer_than_full_ones(shape, density):
    rng = np.random.default_rng(7)
    for _ in range(5):
        mask = rng.random(shape) < density
        faces, full = connected_components(mask, 1), connected_components(mask)
        assert faces[1] >= full[1]
        # every face component lies inside one full component
        for label in range(1, faces[1] + 1):
            assert len(np.unique(full[0][faces[0] == label])) == 1


def test_largest_component_per_class_sets_smaller_parts_to_background():
    labels = np.zeros((1, 4, 8), dtype=np.uint8)
    labels[0, 0, 0:3] = 1  # class 1: 3 voxels (kept)
    labels[0, 3, 0] = 1  # class 1: 1 voxel (removed)
    labels[0, 0, 5] = 2  # class 2: 1 voxel (removed)
    labels[0, 2:4, 5:7] = 2  # class 2: 4 voxels (kept)
    result = keep_largest_component(labels, range(1, 3))
    expected = labels.copy()
    expected[0, 3, 0] = 0
    expected[0, 0, 5] = 0
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == labels.dtype
    assert labels[0, 3, 0] == 1  # the input is not modified


def test_label_volumes_in_millilitres():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[:2] = 1  # 32 voxels
    labels[3, 0, 0] = 2  # 1 voxel
    affine = np.diag([2.0, 2.0, 2.5, 1.0])  # 10 mm³ = 0.01 mL per voxel
    volumes = label_volumes_ml(labels, affine, ["background", "liver", "tumour"])
    assert volumes == pytest.approx({"liver": 0.32, "tumour": 0.01})


def test_label_volume_uses_the_determinant_for_oblique_grids():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 2.0, 5.0])  # 10 mm³ per voxel, rotated
    volumes = label_volumes_ml(np.ones((10, 10, 1), dtype=np.uint8), affine, ["bg", "fg"])
    assert volumes == pytest.approx({"fg": 1.0})
