"""Soft Dice and Dice + CE on hand-built logits."""

from __future__ import annotations

import math

import pytest
import torch

from salign_cli.objectives.segmentation import segmentation_losses, soft_dice_loss

CONFIDENT = 30.0  # softmax of ±30 logits is 0/1 to float32 precision


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What fine-tuning optimises: the sum of the two terms."""
    terms = segmentation_losses(logits, target)
    return terms["ce"] + terms["dice"]


def confident_logits(labels: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    """Logits ``[B, C, H, W]`` that put (all but) probability 1 on ``labels``."""
    one_hot = torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 1).float()
    return CONFIDENT * (2 * one_hot - 1)


def test_perfect_prediction_gives_zero_loss() -> None:
    target = torch.tensor([[[0, 1, 2], [2, 2, 0]]])
    logits = confident_logits(target, 3)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_ce_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_completely_wrong_prediction_gives_dice_loss_one() -> None:
    target = torch.tensor([[[0, 1], [1, 0]]])
    assert soft_dice_loss(confident_logits(1 - target), target).item() == pytest.approx(
        1.0, abs=1e-5
    )


def test_uniform_probabilities_by_hand() -> None:
    # Target [[1, 0], [0, 0]], zero logits → p = 0.5 for both classes everywhere.
    # Class 1: TP = 0.5, FP = 3·0.5, FN = 0.5 → Dice = 1 / (1 + 1.5 + 0.5) = 1/3.
    # Class 0: TP = 1.5, FP = 0.5, FN = 1.5 → Dice = 3 / (3 + 0.5 + 1.5) = 0.6.
    target = torch.tensor([[[1, 0], [0, 0]]])
    logits = torch.zeros(1, 2, 2, 2)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (1 / 3 + 0.6) / 2, abs=1e-5)
    assert soft_dice_loss(logits, target, ignore_background=True).item() == pytest.approx(
        1 - 1 / 3, abs=1e-5
    )
    # Cross-entropy of a 50/50 prediction is log 2 at every pixel.
    assert dice_ce_loss(logits, target).item() == pytest.approx(
        math.log(2) + 1 - (1 / 3 + 0.6) / 2, abs=1e-5
    )


def test_dice_is_pooled_over_the_batch() -> None:
    # Image A: one foreground pixel, predicted exactly. Image B: no foreground, one false positive.
    # Batch dice (foreground): TP = 1, FP = 1, FN = 0 → 2/3, loss 1/3. (Per-image dice would give
    # 1 and 0, loss 1/2.)
    target = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    prediction = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]]])
    loss = soft_dice_loss(confident_logits(prediction), target, ignore_background=True)
    assert loss.item() == pytest.approx(1 / 3, abs=1e-5)


def test_a_class_absent_everywhere_does_not_penalise() -> None:
    # Class 2 is neither predicted nor present: smooth/smooth = 1, so the mean is unaffected.
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = confident_logits(target, 3)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-5)


def test_targets_with_a_channel_axis_are_accepted_and_bad_shapes_refused() -> None:
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = confident_logits(target)
    assert soft_dice_loss(logits, target[:, None]).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="does not match logits"):
        dice_ce_loss(logits, torch.zeros(1, 3, 2, dtype=torch.long))


def test_gradients_are_finite_for_bf16_logits() -> None:
    logits = torch.randn(2, 3, 4, 4).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, 3, (2, 4, 4))
    dice_ce_loss(logits, target).backward()
    assert torch.isfinite(logits.grad.float()).all()
