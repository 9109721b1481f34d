"""Global positional losses: position targets, their sign, and SupCon checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from salign_cli.objectives.positional import (
    absolute_position_loss,
    positional_contrastive_loss,
    relative_position_loss,
    slice_positions,
)


def test_slice_positions_are_bin_centres() -> None:
    z = slice_positions(torch.tensor([0, 3, 5, 9, 0]), torch.tensor([10, 10, 10, 10, 1]))
    torch.testing.assert_close(z, torch.tensor([0.05, 0.35, 0.55, 0.95, 0.5]))


def test_relative_target_is_the_signed_offset_from_i_to_j() -> None:
    # Slices 3 and 5 of 10: z = 0.35 and 0.55, so the offset i→j is +0.2 and j→i is −0.2.
    z_3, z_5 = slice_positions(torch.tensor([3, 5]), torch.tensor([10, 10]))
    forward, backward = z_3.reshape(1), z_5.reshape(1)
    assert relative_position_loss(torch.tensor([0.2]), forward, backward).item() == pytest.approx(
        0.0, abs=1e-7
    )
    assert relative_position_loss(torch.tensor([-0.2]), backward, forward).item() == pytest.approx(
        0.0, abs=1e-7
    )
    # The wrong sign costs twice the offset; predicting 0 costs the offset.
    assert relative_position_loss(torch.tensor([-0.2]), forward, backward).item() == pytest.approx(
        0.4
    )
    assert relative_position_loss(torch.tensor([[0.0]]), forward, backward).item() == pytest.approx(
        0.2
    )


def test_absolute_loss_is_the_mean_absolute_error() -> None:
    z = torch.tensor([0.05, 0.55])
    assert absolute_position_loss(torch.tensor([0.15, 0.25]), z).item() == pytest.approx(
        (0.1 + 0.3) / 2
    )
    with pytest.raises(ValueError, match="does not match"):
        absolute_position_loss(torch.zeros(3), z)


def test_supcon_with_one_positive_pair_by_hand() -> None:
    # g0 = g1 = (1, 0) at z 0.10 / 0.15 (positives, |Δz| < 0.1); g2 = (0, 1) at z 0.9 has no
    # positive and is left out. Anchor 0: −log(e^{1/τ} / (e^{1/τ} + e^{0/τ})) = log(1 + e^{−1/τ});
    # anchor 1 the same. τ = 0.5 → log(1 + e^{−2}).
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([0.10, 0.15, 0.90])
    expected = math.log(1 + math.exp(-2))
    loss = positional_contrastive_loss(g, z, threshold=0.1, temperature=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # g is normalised inside: scaling it changes nothing.
    scaled = positional_contrastive_loss(3 * g, z, threshold=0.1, temperature=0.5)
    assert scaled.item() == pytest.approx(expected, rel=1e-6)


def test_supcon_with_every_pair_positive_by_hand() -> None:
    # Cosines: s01 = 0.6, s02 = 0, s12 = 0.8; τ = 1; all |Δz| < 0.1 so each anchor has 2 positives.
    # Anchor a: log Σ_{k≠a} e^{s_ak} − mean_{p≠a} s_ap.
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    z = torch.tensor([0.50, 0.52, 0.55])
    anchor_losses = [
        math.log(math.exp(0.6) + math.exp(0.0)) - (0.6 + 0.0) / 2,
        math.log(math.exp(0.6) + math.exp(0.8)) - (0.6 + 0.8) / 2,
        math.log(math.exp(0.0) + math.exp(0.8)) - (0.0 + 0.8) / 2,
    ]
    loss = positional_contrastive_loss(g, z, threshold=0.1, temperature=1.0)
    assert loss.item() == pytest.approx(sum(anchor_losses) / 3, rel=1e-6)


def test_supcon_without_any_positive_is_zero_and_differentiable() -> None:
    g = torch.randn(3, 4, requires_grad=True)
    loss = positional_contrastive_loss(g, torch.tensor([0.1, 0.5, 0.9]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(g.grad, torch.zeros(3, 4))


def test_supcon_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"g \[B, d\]"):
        positional_contrastive_loss(torch.randn(3, 4), torch.rand(4))
