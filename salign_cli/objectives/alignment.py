"""Local alignment (LA), window-based local alignment (WLA) and the collapse monitor.

Inputs are embeddings ``x [B, c, h, w]`` that are already unit length over ``c`` (the output of
`salign_cli.model.heads.EmbeddingHead`), so ``A[p, q] = <x_i[:, p], x_j[:, q]>`` is a cosine
similarity. For each position p of slice i, its best match in slice j is scored by one of two
variants:

- ``"literal"`` (the paper): ``|1 − max_q A[p, q]|``. A collapsed embedding (every position the
  same vector) makes every A = 1 and this loss 0, so it cannot tell learning from collapse.
- ``"sharp"`` [ours, the collapse guard]: ``1 − max_q softmax(A[p, ·] / τ)``. The best match must
  also beat every other candidate; a collapsed embedding scores ``1 − 1/n`` for n candidates.

Both are averaged over positions and the batch; ``symmetric=True`` also matches j into i and
averages the two directions. The window variant compares p only with the ``(2r+1)²`` positions
of slice j around p (candidates outside the map are excluded, not zero-padded), looping over the
offsets with a running max (literal) or an online softmax (sharp), so no ``hw × hw`` tensor exists.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AlignmentVariant = Literal["sharp", "literal"]
VARIANTS: tuple[str, ...] = ("sharp", "literal")


def _check_pair(x_i: torch.Tensor, x_j: torch.Tensor, variant: str, temperature: float) -> None:
    if x_i.ndim != 4 or x_i.shape != x_j.shape:
        raise ValueError(
            f"expected two embeddings of equal shape [B, c, h, w], got {list(x_i.shape)} and {list(x_j.shape)}"
        )
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Similarities near 1 and exp(·/τ) need float32 at least; float64 inputs stay float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _best_match_loss(
    best_similarity: torch.Tensor, softmax_denominator: torch.Tensor | None
) -> torch.Tensor:
    """Per-position loss from the row max ``m_p`` and, for "sharp", ``Σ_q exp((A_pq − m_p)/τ)``.

    The max of a softmax row is ``exp(0) / Σ_q exp((A_pq − m_p)/τ)`` — the denominator alone.
    """
    if softmax_denominator is None:
        return (1.0 - best_similarity).abs()
    return 1.0 - softmax_denominator.reciprocal()


def local_alignment_loss(
    x_i: torch.Tensor,
    x_j: torch.Tensor,
    *,
    variant: AlignmentVariant = "sharp",
    temperature: float = 0.1,
    symmetric: bool = True,
) -> torch.Tensor:
    """Full LA: every position of one slice against every position of the other.

    Builds the ``[B, hw, hw]`` similarity matrix, so use it for small maps (bottleneck, 1/8) and
    `window_alignment_loss` otherwise. Returns a scalar in ``[0, 1]`` for unit-norm inputs
    (``[0, 2]`` for "literal" with negative similarities).

    Example::

        x = F.normalize(torch.randn(2, 16, 8, 8), dim=1)
        local_alignment_loss(x, x, variant="literal")   # tensor(0.)
    """
    _check_pair(x_i, x_j, variant, temperature)
    x_i, x_j = _at_least_float32(x_i), _at_least_float32(x_j)
    similarity = torch.einsum("bcp,bcq->bpq", x_i.flatten(2), x_j.flatten(2))

    def one_direction(rows: torch.Tensor) -> torch.Tensor:
        best = rows.amax(dim=-1)
        denominator = None
        if variant == "sharp":
            denominator = torch.exp((rows - best.unsqueeze(-1)) / temperature).sum(dim=-1)
        return _best_match_loss(best, denominator).mean()

    loss = one_direction(similarity)
    if symmetric:
        loss = 0.5 * (loss + one_direction(similarity.transpose(1, 2)))
    return loss


def window_alignment_loss(
    x_i: torch.Tensor,
    x_j: torch.Tensor,
    *,
    radius: int = 3,
    variant: AlignmentVariant = "sharp",
    temperature: float = 0.1,
    symmetric: bool = True,
) -> torch.Tensor:
    """WLA: position p of one slice is compared only with the ``(2r+1)²`` window around p.

    Memory is ``O(B·c·hw)`` plus ``O(B·hw)`` per offset kept for backward; no ``hw × hw`` tensor
    is created. With ``radius >= max(h, w) − 1`` every window covers the whole map and the result
    equals `local_alignment_loss` with the same arguments.
    """
    _check_pair(x_i, x_j, variant, temperature)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    x_i, x_j = _at_least_float32(x_i), _at_least_float32(x_j)
    height, width = x_i.shape[-2:]
    # Offsets beyond the map have no overlap at all; clamping them only saves work.
    radius_y, radius_x = min(radius, height - 1), min(radius, width - 1)
    forward_match = _RunningBestMatch(variant, temperature)
    backward_match = _RunningBestMatch(variant, temperature)
    for dy, dx in _window_offsets(radius_y, radius_x):
        # Overlap of x_i at p and x_j at p + (dy, dx); as slices these are views, not copies.
        rows, cols = _overlap(dy, height), _overlap(dx, width)
        similarity = (x_i[..., rows[0], cols[0]] * x_j[..., rows[1], cols[1]]).sum(dim=1)
        # Place the overlap at x_i's positions (i→j) and at x_j's positions (j→i); positions
        # without a partner at this offset get −inf, i.e. are no candidate.
        forward_match.update(_place(similarity, dy, dx, height, width))
        if symmetric:
            backward_match.update(_place(similarity, -dy, -dx, height, width))
    loss = forward_match.loss()
    if symmetric:
        loss = 0.5 * (loss + backward_match.loss())
    return loss


def _window_offsets(radius_y: int, radius_x: int) -> list[tuple[int, int]]:
    """All ``(dy, dx)`` of the window, the zero offset first (see `_RunningBestMatch`)."""
    offsets = [
        (dy, dx) for dy in range(-radius_y, radius_y + 1) for dx in range(-radius_x, radius_x + 1)
    ]
    offsets.remove((0, 0))
    return [(0, 0), *offsets]


def _overlap(offset: int, size: int) -> tuple[slice, slice]:
    """Index ranges ``(a, b)`` with ``b = a + offset`` and both inside ``[0, size)``."""
    if offset >= 0:
        return slice(0, size - offset), slice(offset, size)
    return slice(-offset, size), slice(0, size + offset)


def _place(values: torch.Tensor, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    """Pad an overlap map back to ``[B, height, width]`` at the positions p whose p + (dy, dx)
    is inside the map; other positions get −inf."""
    top, bottom = max(-dy, 0), max(dy, 0)
    left, right = max(-dx, 0), max(dx, 0)
    assert values.shape[-2:] == (height - top - bottom, width - left - right)
    return F.pad(values, (left, right, top, bottom), value=float("-inf"))


class _RunningBestMatch:
    """Row max and (for "sharp") online-softmax denominator over candidates seen so far.

    Standard online softmax: on a new candidate a, with m' = max(m, a),
    ``s ← s·exp((m − m')/τ) + exp((a − m')/τ)``. The first update must come from the zero offset,
    which is finite everywhere, so m never is −inf and no NaN appears.
    """

    def __init__(self, variant: str, temperature: float):
        self.sharp = variant == "sharp"
        self.temperature = temperature
        self.best: torch.Tensor | None = None
        self.denominator: torch.Tensor | None = None

    def update(self, candidate: torch.Tensor) -> None:
        if self.best is None:
            self.best = candidate
            self.denominator = torch.ones_like(candidate) if self.sharp else None
            return
        new_best = torch.maximum(self.best, candidate)
        if self.sharp:
            assert self.denominator is not None
            self.denominator = self.denominator * torch.exp(
                (self.best - new_best) / self.temperature
            ) + torch.exp((candidate - new_best) / self.temperature)
        self.best = new_best

    def loss(self) -> torch.Tensor:
        assert self.best is not None
        return _best_match_loss(self.best, self.denominator).mean()


def collapse_monitor(x: torch.Tensor) -> dict[str, float]:
    """Detached collapse statistics of embeddings ``x [B, c, h, w]`` (normalised over c here too).

    - ``feature_std``: per-channel standard deviation over all B·h·w positions, averaged over
      channels. About ``1/sqrt(c)`` for well-spread unit vectors, 0 for a collapsed embedding.
    - ``mean_offdiag_similarity``: mean cosine similarity over all pairs of different positions
      (across the whole batch), exact and in O(B·c·hw) via
      ``Σ_{p≠q} <v_p, v_q> = |Σ_p v_p|² − Σ_p |v_p|²``. 1 for a collapsed embedding.
    """
    with torch.no_grad():
        vectors = F.normalize(x.detach().float(), dim=1).transpose(0, 1).flatten(1)  # [c, N]
        count = vectors.shape[1]
        if count < 2:
            raise ValueError("collapse_monitor needs at least two positions")
        total = vectors.sum(dim=1)
        pair_sum = total.square().sum() - vectors.square().sum()
        return {
            "feature_std": float(vectors.std(dim=1).mean()),
            "mean_offdiag_similarity": float(pair_sum / (count * (count - 1))),
        }


def is_collapsed(monitor: dict[str, float], threshold: float = 1e-2) -> bool:
    """True when the mean per-channel spread of `collapse_monitor` fell below ``threshold``.

    Healthy unit-norm embeddings of width c have ``feature_std`` near ``1/sqrt(c)`` (0.088 for
    c = 128), so the default 0.01 flags only a near-total collapse.
    """
    return monitor["feature_std"] < threshold
