"""Semi-supervised pieces on hand-computed tensors: pseudo-labels, masked losses, copy-paste."""

from __future__ import annotations

import math

import pytest
import torch

from salign_cli.objectives.segmentation import soft_dice_loss
from salign_cli.objectives.semi import (
    box_mask,
    copy_paste,
    masked_cross_entropy,
    masked_soft_dice_loss,
    pseudo_labels,
    sigmoid_rampup,
)


def test_pseudo_labels_keep_only_confident_pixels() -> None:
    # two pixels: logits (2, 0) → p = 0.881 for class 0; (0, 5) → p = 0.9933 for class 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 1, 2)
    labels, keep, confidence = pseudo_labels(logits, threshold=0.95)
    assert labels.tolist() == [[[0, 1]]]
    assert keep.tolist() == [[[False, True]]]
    expected = [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-5))]
    assert confidence.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert pseudo_labels(logits, threshold=0.0)[1].all()


def test_masked_cross_entropy_averages_over_the_weighted_pixels() -> None:
    # zero logits over 2 classes: CE = log 2 at every pixel, whatever the target
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    weight = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert masked_cross_entropy(logits, target, weight).item() == pytest.approx(math.log(2))
    # normalised by a larger count (UniMatch divides by the scan pixels): 2 · log 2 / 4
    halved = masked_cross_entropy(logits, target, weight, denominator=4.0)
    assert halved.item() == pytest.approx(math.log(2) / 2)
    assert masked_cross_entropy(logits, target, torch.zeros_like(weight)).item() == 0.0


def test_masked_dice_with_unit_weight_is_the_plain_soft_dice() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    ones = torch.ones(2, 4, 5)
    assert masked_soft_dice_loss(logits, target, ones).item() == pytest.approx(
        soft_dice_loss(logits, target, ignore_background=True).item(), abs=1e-6
    )


def test_masked_dice_ignores_pixels_of_weight_zero() -> None:
    # pixel 0 is predicted right (class 1), pixel 1 wrong; with pixel 1 masked out, Dice = 1
    logits = torch.tensor([[-30.0, 30.0], [30.0, -30.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 1]]])
    assert masked_soft_dice_loss(logits, target, torch.tensor([[[1.0, 0.0]]])).item() == (
        pytest.approx(0.0, abs=1e-5)
    )
    # both pixels: TP 1, FN 1 → Dice 2/3, loss 1/3
    assert masked_soft_dice_loss(logits, target, torch.ones(1, 1, 2)).item() == pytest.approx(
        1 / 3, abs=1e-5
    )


def test_box_mask_is_one_box_of_the_given_fraction_inside_the_image() -> None:
    for seed in range(20):
        mask = box_mask((9, 12), 2 / 3, torch.Generator().manual_seed(seed))
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert mask.sum().item() == 6 * 8  # int(9 · 2/3) × int(12 · 2/3)
        assert rows.max() - rows.min() + 1 == 6 and cols.max() - cols.min() + 1 == 8


def test_copy_paste_takes_inside_from_the_first_and_outside_from_the_second() -> None:
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    a, b = torch.full((1, 1, 2, 2), 7.0), torch.full((1, 1, 2, 2), 3.0)
    assert copy_paste(a, b, mask)[0, 0].tolist() == [[7.0, 3.0], [3.0, 3.0]]
    labels_a, labels_b = torch.full((1, 2, 2), 2), torch.zeros(1, 2, 2, dtype=torch.long)
    mixed = copy_paste(labels_a, labels_b, mask)
    assert mixed.dtype == torch.long and mixed[0].tolist() == [[2, 0], [0, 0]]


def test_sigmoid_rampup_by_hand() -> None:
    assert sigmoid_rampup(-1.0) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.5) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(2.0) == 1.0
