"""Fine-tuning losses: soft Dice and cross-entropy (optimised as their sum, as nnU-Net trains).

Dice is the "batch dice": true/false positives are summed over the whole batch and all pixels
before the per-class ratio, so a class absent from one slice does not produce an unstable 0/0
term for that slice. Probabilities and sums are computed in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels ``[B, H, W]`` from ``[B, H, W]`` or ``[B, 1, H, W]``, checked against logits."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target {list(target.shape)} does not match logits {list(logits.shape)} "
            "(expected labels [B, H, W] or [B, 1, H, W])"
        )
    return target.long()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """``1 − mean_c (2·TP_c + smooth) / (2·TP_c + FP_c + FN_c + smooth)`` on softmax probabilities.

    ``logits [B, C, H, W]``; ``target`` integer labels in ``[0, C)``. TP/FP/FN are soft counts
    summed over batch and pixels. ``ignore_background`` drops class 0 from the mean. A perfect,
    confident prediction gives ≈ 0; a class absent from both prediction and target scores 1
    (``smooth / smooth``), so it does not penalise.
    """
    labels = _labels(target, logits)
    probabilities = logits.float().softmax(dim=1)
    one_hot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    reduce_dims = (0, *range(2, logits.ndim))
    true_positive = (probabilities * one_hot).sum(dim=reduce_dims)
    false_positive = (probabilities * (1 - one_hot)).sum(dim=reduce_dims)
    false_negative = ((1 - probabilities) * one_hot).sum(dim=reduce_dims)
    dice = (2 * true_positive + smooth) / (
        2 * true_positive + false_positive + false_negative + smooth
    )
    if ignore_background:
        dice = dice[1:]
    return 1.0 - dice.mean()


def segmentation_losses(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_background: bool = False,
    smooth: float = 1e-5,
) -> dict[str, torch.Tensor]:
    """``{"ce": cross-entropy, "dice": soft_dice_loss}`` — the two terms, for logging apart."""
    labels = _labels(target, logits)
    return {
        "ce": F.cross_entropy(logits.float(), labels),
        "dice": soft_dice_loss(logits, labels, ignore_background=ignore_background, smooth=smooth),
    }
