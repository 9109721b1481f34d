"""SAL pre-training heads: output shapes, unit-norm embeddings, and where gradients reach."""

from __future__ import annotations

import pytest
import torch

from salign_cli.model.heads import SALHeadsConfig, SALNetwork
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.objectives.alignment import window_alignment_loss
from salign_cli.objectives.positional import (
    absolute_position_loss,
    positional_contrastive_loss,
    relative_position_loss,
    slice_positions,
)


def sal_network(feature_level: str) -> SALNetwork:
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig(width=4, depth=4))
    return SALNetwork(
        unet,
        SALHeadsConfig(feature_level=feature_level, embedding_dim=8, global_dim=6, hidden_dim=10),
    )


def test_embed_gives_unit_norm_embeddings_at_the_level_scale() -> None:
    net = sal_network("1/4")
    embedding, g = net.embed(torch.randn(3, 1, 37, 45))
    assert embedding.shape == (3, 8, 10, 12)  # ceil(37/4) × ceil(45/4)
    assert g.shape == (3, 6)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(3, 10, 12))
    assert net.relative_head(g, g.flip(0)).shape == (3,)
    assert net.absolute_head(g).shape == (3,)


def test_an_unknown_feature_level_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="valid"):
        SALNetwork(UNet2D(UNetConfig(width=4, depth=2)), SALHeadsConfig(feature_level="1/8"))


def test_heads_config_round_trips() -> None:
    config = SALHeadsConfig(feature_level="bottleneck", embedding_dim=64)
    assert SALHeadsConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="embedding_dim"):
        SALHeadsConfig(embedding_dim=0)


def combined_loss_gradients(net: SALNetwork) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(1)
    slices_i, slices_j = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    z_i = slice_positions(torch.tensor([1, 2, 3, 4]), torch.tensor([10, 10, 10, 10]))
    z_j = slice_positions(torch.tensor([2, 4, 2, 5]), torch.tensor([10, 10, 10, 10]))
    embedding_i, g_i = net.embed(slices_i)
    embedding_j, g_j = net.embed(slices_j)
    loss = (
        window_alignment_loss(embedding_i, embedding_j, radius=2)
        + relative_position_loss(net.relative_head(g_i, g_j), z_i, z_j)
        + absolute_position_loss(net.absolute_head(g_i), z_i)
        + positional_contrastive_loss(torch.cat([g_i, g_j]), torch.cat([z_i, z_j]))
    )
    loss.backward()
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize(
    ("feature_level", "untouched_prefixes"),
    [
        # Depth 4: decoder index k produces 1/2**(3-k); "1/4" is index 1, so indices 2 and 3
        # (1/2 and full resolution) and the segmentation head are never run.
        (
            "1/4",
            (
                "unet.upsample.2.",
                "unet.upsample.3.",
                "unet.decoder.2.",
                "unet.decoder.3.",
                "unet.head.",
            ),
        ),
        # Tapping the full-resolution decoder map leaves only the segmentation head out.
        ("full", ("unet.head.",)),
    ],
)
def test_the_combined_loss_reaches_exactly_the_parameters_it_uses(
    feature_level: str, untouched_prefixes: tuple[str, ...]
) -> None:
    gradients = combined_loss_gradients(sal_network(feature_level))
    without_gradient = {name for name, grad in gradients.items() if grad is None}
    expected = {name for name in gradients if name.startswith(untouched_prefixes)}
    assert expected, "the expectation must name real parameters"
    assert without_gradient == expected
    for name, grad in gradients.items():
        if grad is not None:
            assert torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0, name
