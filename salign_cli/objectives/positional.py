"""Global positional (GP) losses: where a slice lies in its scan, learnt from the global feature g.

Positions are normalised per scan, ``z_k = (k + 0.5) / D`` for slice k of D, so scans of any
depth share the scale (0, 1) and a slice's z is the centre of its 1/D-wide bin.

- `relative_position_loss` [ours, default]: L1 between h([g_i; g_j]) and the signed offset z_j − z_i.
- `absolute_position_loss` [ours, option]: L1 between h'(g_k) and z_k.
- `positional_contrastive_loss`: PCL's loss (Zeng et al., MICCAI 2021), SupCon on normalised g
  with positives = slices, from any scan in the batch, whose z differ by less than a threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def slice_positions(indices: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Normalised positions ``(k + 0.5) / D`` (float32) of slice indices k in scans of D slices.

    Callers guarantee ``0 <= k < D`` (the pair sampler draws k that way); no check is made here
    because a check on a GPU tensor would stall the training step.

    Example::

        slice_positions(torch.tensor([3, 5]), torch.tensor([10, 10]))  # tensor([0.35, 0.55])
    """
    return (indices.float() + 0.5) / depths.float()


def _as_target_shape(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accept ``[B]`` or ``[B, 1]`` predictions for ``[B]`` targets; refuse anything else."""
    if prediction.numel() != target.numel():
        raise ValueError(
            f"prediction {list(prediction.shape)} does not match target {list(target.shape)}"
        )
    return prediction.reshape(target.shape)


def relative_position_loss(
    prediction: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor
) -> torch.Tensor:
    """``mean |prediction − (z_j − z_i)|``: the signed offset from slice i to slice j."""
    target = z_j - z_i
    return (_as_target_shape(prediction, target).float() - target).abs().mean()


def absolute_position_loss(prediction: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mean |prediction − z|``."""
    return (_as_target_shape(prediction, z).float() - z).abs().mean()


def positional_contrastive_loss(
    g: torch.Tensor, z: torch.Tensor, *, threshold: float = 0.1, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) with positional positives.

    ``g [B, d]`` is L2-normalised here. For anchor a, positives P(a) are the other slices b with
    ``|z_a − z_b| < threshold``; the loss of a is
    ``−1/|P(a)| Σ_{p∈P(a)} log(exp(s_ap/τ) / Σ_{k≠a} exp(s_ak/τ))`` with cosine similarities s.
    Anchors without any positive are left out of the mean; a batch with none returns 0 (still
    attached to the graph, so ``backward`` works).
    """
    if g.ndim != 2 or z.shape != (g.shape[0],):
        raise ValueError(f"expected g [B, d] and z [B], got {list(g.shape)} and {list(z.shape)}")
    g = F.normalize(g.float(), dim=1)
    logits = g @ g.T / temperature
    self_mask = torch.eye(len(g), dtype=torch.bool, device=g.device)
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
    log_prob = logits - log_denominator.unsqueeze(1)
    positives = ((z.unsqueeze(0) - z.unsqueeze(1)).abs() < threshold) & ~self_mask
    positive_count = positives.sum(dim=1)
    has_positive = positive_count > 0
    anchor_loss = -torch.where(positives, log_prob, 0.0).sum(dim=1) / positive_count.clamp(min=1)
    if not bool(has_positive.any()):
        return g.sum() * 0.0
    return anchor_loss[has_positive].mean()
