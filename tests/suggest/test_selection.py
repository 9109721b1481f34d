"""Known answers for the typical-and-diverse pick on synthetic feature clusters."""

from __future__ import annotations

import numpy as np
import pytest

from salign_cli.suggest.selection import pick_typical_diverse, standardise, typicality

CENTRES = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0], [40.0, 40.0]])
SIZES = (12, 9, 7, 5)


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated 2D blobs of different sizes: a centre and a ring of radius 2 around
    it (randomly turned), so each blob's most typical member is known — its centre is at mean
    distance 2 from the others, every ring point farther (a ring chord averages more than the
    radius); rows and blob ids, shuffled."""
    rng = np.random.default_rng(seed)
    rows, blob = [], []
    for index, (centre, size) in enumerate(zip(CENTRES, SIZES, strict=True)):
        angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, size - 1, endpoint=False)
        rows.append(centre + 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1))
        rows.append(centre[None])
        blob += [index] * size
    order = rng.permutation(sum(SIZES))
    return np.concatenate(rows)[order], np.asarray(blob)[order]


def is_centre(row: np.ndarray) -> bool:
    return bool(np.isclose(row[None], CENTRES).all(axis=1).any())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_scan_per_cluster_its_most_typical_member_largest_cluster_first(seed):
    features, blob = clusters(seed)
    picks = pick_typical_diverse(features, 4, seed=seed)
    assert [blob[p.index] for p in picks] == [0, 1, 2, 3]  # largest blob first
    assert all(is_centre(features[p.index]) for p in picks)
    assert [p.group_size for p in picks] == list(SIZES)


def test_clusters_that_hold_a_labelled_scan_are_skipped():
    features, blob = clusters()
    labelled = CENTRES[[0]] + 0.5  # one labelled scan in the largest blob
    picks = pick_typical_diverse(features, 3, labelled=labelled)
    assert sorted(blob[p.index] for p in picks) == [1, 2, 3]


def test_uncertainty_moves_the_pick_within_its_cluster_not_across_clusters():
    features, blob = clusters()
    uncertainty = np.full(len(features), 0.05)
    unsure = [int(np.flatnonzero(blob == b)[0]) for b in range(4)]  # one member per blob
    uncertainty[unsure] = 0.9
    picks = pick_typical_diverse(features, 4, uncertainty=uncertainty)
    assert sorted(p.index for p in picks) == sorted(unsure)
    assert all(p.uncertainty == pytest.approx(0.9) for p in picks)


def test_more_wanted_than_clusters_left_fills_with_the_farthest_scans():
    features = np.array([[0.0], [0.1], [0.2], [10.0]])
    labelled = np.array([[0.05], [0.15], [10.05]])  # every group holds a labelled scan
    picks = pick_typical_diverse(features, 1, labelled=labelled)
    # 4 groups for 7 points: at most one open group, else the farthest-first fill
    assert len(picks) == 1
    assert picks[0].index in (0, 1, 2, 3)
    everything = pick_typical_diverse(features, 9)  # more than there are: every candidate once
    assert sorted(p.index for p in everything) == [0, 1, 2, 3]


def test_the_pick_is_deterministic_for_a_seed():
    features, _ = clusters()
    first = pick_typical_diverse(features, 3, seed=5)
    assert first == pick_typical_diverse(features, 3, seed=5)


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours():
    points = np.array([[0.0], [1.0], [3.0]])
    # point 0: neighbours at 1 and 3 → 1/2; point 1: 1 and 2 → 1/1.5; point 2: 2 and 3 → 1/2.5
    np.testing.assert_allclose(typicality(points), [1 / 2, 1 / 1.5, 1 / 2.5])
    assert typicality(points[:1]).tolist() == [1.0]


def test_standardise_gives_each_dimension_unit_spread_and_keeps_constant_ones_at_zero():
    features = np.array([[1.0, 5.0, 100.0], [3.0, 5.0, 300.0]])
    np.testing.assert_allclose(standardise(features), [[-1, 0, -1], [1, 0, 1]])


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        pick_typical_diverse(np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match="2 uncertainties for 3"):
        pick_typical_diverse(np.zeros((3, 2)), 1, uncertainty=np.zeros(2))
