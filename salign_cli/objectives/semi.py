"""Semi-supervised losses: teacher pseudo-labels, masked cross-entropy and Dice, copy-paste mixing.

Pure tensor functions, shared by the two methods `salign_cli.train.segmentation` offers:

- **mean teacher with confidence-thresholded pseudo-labels** (FixMatch, Sohn et al. NeurIPS 2020;
  UniMatch, Yang et al. CVPR 2023 for segmentation): the EMA teacher labels a weakly augmented
  unlabelled slice, pixels it is sure of (``confidence >= threshold``) supervise the student on a
  strongly augmented view of the same slice;
- **bidirectional copy-paste** (BCP, Bai et al. CVPR 2023): a box of a labelled slice is pasted
  into an unlabelled one and the same box of an unlabelled slice into a labelled one; the student
  learns each mix from ground truth where the pixels are labelled and from the teacher's
  pseudo-labels elsewhere, the pseudo-labelled part weighted less (``u_weight``, 0.5 in BCP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pseudo_labels(
    teacher_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(labels [B, H, W], keep [B, H, W] bool, confidence [B, H, W])`` from teacher logits.

    ``labels`` is the teacher's argmax, ``confidence`` its softmax probability, and ``keep``
    marks the pixels with ``confidence >= threshold`` (``threshold`` 0 keeps every pixel).
    """
    probabilities = teacher_logits.detach().float().softmax(dim=1)
    confidence, labels = probabilities.max(dim=1)
    return labels, confidence >= threshold, confidence


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    denominator: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``Σ w · CE / D`` over pixels, ``D = Σ w`` unless given (0 when D is 0, never NaN).

    ``logits [B, C, H, W]``, ``target`` int ``[B, H, W]``, ``weight [B, H, W]`` (0/1 or real).
    """
    per_pixel = F.cross_entropy(logits.float(), target.long(), reduction="none")
    weight = weight.to(per_pixel.dtype)
    total = weight.sum() if denominator is None else torch.as_tensor(denominator)
    return (per_pixel * weight).sum() / total.to(per_pixel.dtype).clamp_min(1e-8)


def masked_soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    ignore_background: bool = True,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss with every pixel's contribution to TP/FP/FN scaled by ``weight``.

    With ``weight`` all ones this is `salign_cli.objectives.segmentation.soft_dice_loss`;
    weight 0 removes a pixel (BCP's Dice on one part of a mixed image).
    """
    probabilities = logits.float().softmax(dim=1)
    one_hot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    w = weight.to(probabilities.dtype)[:, None]
    dims = (0, 2, 3)
    true_positive = (w * probabilities * one_hot).sum(dims)
    false_positive = (w * probabilities * (1 - one_hot)).sum(dims)
    false_negative = (w * (1 - probabilities) * one_hot).sum(dims)
    dice = (2 * true_positive + smooth) / (
        2 * true_positive + false_positive + false_negative + smooth
    )
    if ignore_background:
        dice = dice[1:]
    return 1.0 - dice.mean()


def box_mask(
    shape: tuple[int, int], fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A float ``[H, W]`` mask: 1 inside one box of ``fraction`` of each side, 0 elsewhere.

    The box lies wholly inside the image at a uniformly drawn position (BCP uses 2/3).

    >>> box_mask((3, 3), 2 / 3, torch.Generator().manual_seed(0)).sum().item()
    4.0
    """
    height, width = shape
    box_h, box_w = max(1, int(height * fraction)), max(1, int(width * fraction))
    top = int(torch.randint(0, height - box_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - box_w + 1, (), generator=generator))
    mask = torch.zeros(shape)
    mask[top : top + box_h, left : left + box_w] = 1.0
    return mask


def copy_paste(inside: torch.Tensor, outside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``inside`` where ``mask`` is 1, ``outside`` where it is 0 (images ``[B, C, H, W]`` or
    labels/weights ``[B, H, W]``; ``mask [H, W]`` broadcasts)."""
    mask = mask.to(device=inside.device)
    if inside.is_floating_point():
        mask = mask.to(inside.dtype)
        return inside * mask + outside * (1 - mask)
    return torch.where(mask.bool(), inside, outside)


def sigmoid_rampup(progress: float) -> float:
    """``exp(−5 (1 − t)²)`` for ``t`` clipped to [0, 1] (Laine & Aila, the mean-teacher ramp).

    >>> sigmoid_rampup(1.0), round(sigmoid_rampup(0.0), 4)
    (1.0, 0.0067)
    """
    t = min(max(progress, 0.0), 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))
