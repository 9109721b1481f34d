"""The expected-Dice quality score: hand-computed cases and its properties."""

from __future__ import annotations

import numpy as np
import pytest

from salign_cli.infer.quality import expected_dice, worst_first


def _two_class(foreground: list[float]) -> np.ndarray:
    p = np.array(foreground, dtype=np.float32).reshape(1, 1, -1)
    return np.stack([1 - p, p])


def test_a_hand_computed_case() -> None:
    # mask = the two voxels above 0.5; overlap 0.9 + 0.8, mass 2.0, mask size 2
    quality = expected_dice(_two_class([0.9, 0.8, 0.3, 0.0]))
    assert quality.by_class[1] == pytest.approx(2 * 1.7 / (2.0 + 2))
    assert quality.score == pytest.approx(0.85)


def test_certainty_scores_one_and_mass_left_out_lowers_the_score() -> None:
    assert expected_dice(_two_class([1.0, 1.0, 0.0])).score == pytest.approx(1.0)
    # the same confident mask, plus a half-seen region the mask leaves out
    assert expected_dice(_two_class([1.0, 1.0, 0.45, 0.45])).score == pytest.approx(4 / 4.9)


def test_absent_classes_are_not_scored_and_the_mean_is_over_the_others() -> None:
    scores = np.zeros((3, 1, 1, 3), dtype=np.float32)
    scores[0] = 1.0
    scores[:, 0, 0, 0] = [0.0, 0.6, 0.4]  # class 1 wins one voxel with 0.6, class 2 has 0.4 mass
    quality = expected_dice(scores)
    assert quality.by_class[1] == pytest.approx(2 * 0.6 / (0.6 + 1))
    assert quality.by_class[2] is None  # 0.4 of a voxel: not there
    assert quality.score == pytest.approx(0.75)
    assert expected_dice(np.stack([np.ones((1, 2, 2)), np.zeros((1, 2, 2))])).score is None


def test_chunks_add_up_to_the_whole() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 41, 5, 6))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=0)
    whole = softmax.reshape(3, 1, 41 * 5, 6)  # one slice: a single chunk
    chunked, single = expected_dice(softmax.astype(np.float16)), expected_dice(whole)
    for label in (1, 2):
        assert chunked.by_class[label] == pytest.approx(single.by_class[label], abs=2e-3)


def test_worst_first_lists_the_lowest_scores_and_skips_unscored() -> None:
    scores = {"a": 0.9, "b": 0.5, "c": None, "d": 0.7, "e": float("nan")}
    assert worst_first(scores, 2) == [("b", 0.5), ("d", 0.7)]
    assert worst_first({}) == []


def test_uncertainty_is_one_minus_the_top_probability() -> None:
    from salign_cli.infer.quality import uncertainty_map

    probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(uncertainty_map(probabilities), [0.0, 0.5, 2 / 3], rtol=1e-6)
    assert uncertainty_map(probabilities).dtype == np.float32
