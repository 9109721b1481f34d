"""The small heads SAL pre-training puts on the U-Net, and the module that bundles them.

- `EmbeddingHead` is the paper's E followed by N: a 1×1 conv to ``c`` channels, then unit length
  over channels, so that dot products between positions are cosine similarities (LA / WLA input).
- `GlobalHead` gives the slice-level feature g = MLP(GAP(bottleneck)) used by the positional losses.
- `RelativePositionHead` h([g_i; g_j]) predicts the signed offset z_j − z_i of a slice pair;
  `AbsolutePositionHead` h'(g) predicts z. Both return one scalar per slice (shape ``[B]``).

Only the U-Net is kept for fine-tuning; these heads exist for pre-training only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from salign_cli.config import known_fields
from salign_cli.model.unet import UNet2D, level_scale


@dataclass(frozen=True)
class SALHeadsConfig:
    """Shape of the pre-training heads, stored beside `UNetConfig` in pre-training checkpoints.

    ``feature_level`` is the U-Net map LA reads (see `salign_cli.model.unet.feature_levels`);
    the default "1/4" decoder level pre-trains the decoder too [ours]. ``embedding_dim`` is the
    paper's c; ``global_dim`` the size of g; ``hidden_dim`` the hidden width of every MLP.
    """

    feature_level: str = "1/4"
    embedding_dim: int = 128
    global_dim: int = 128
    hidden_dim: int = 256
    extra_levels: tuple[str, ...] = ()  # more maps LA reads, each with its own embedding head

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "global_dim", "hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SALHeadsConfig.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` of it gives back an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SALHeadsConfig:
        """Rebuild from `to_dict` output (`salign_cli.config`'s policy)."""
        values = known_fields(cls, data, "SALHeadsConfig")
        return cls(**{**values, "extra_levels": tuple(values.get("extra_levels", ()))})


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )


class EmbeddingHead(nn.Module):
    """``[B, C, h, w] -> [B, embedding_dim, h, w]`` with unit L2 norm at every position."""

    def __init__(self, in_channels: int, embedding_dim: int = 128):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embedding_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: under bf16 autocast the unit norm would otherwise be approximate,
        # and LA's "max similarity = 1" target depends on it.
        return F.normalize(self.projection(features).float(), dim=1)


class GlobalHead(nn.Module):
    """``bottleneck [B, C, h, w] -> g [B, global_dim]``: global average pool, then a 2-layer MLP."""

    def __init__(self, in_channels: int, global_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.mlp = _mlp(in_channels, hidden_dim, global_dim)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        global_feature: torch.Tensor = self.mlp(bottleneck.mean(dim=(-2, -1)))
        return global_feature


class RelativePositionHead(nn.Module):
    """``(g_i, g_j) -> [B]``: predicted signed position offset z_j − z_i (order matters)."""

    def __init__(self, global_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.mlp = _mlp(2 * global_dim, hidden_dim, 1)

    def forward(self, g_i: torch.Tensor, g_j: torch.Tensor) -> torch.Tensor:
        offset: torch.Tensor = self.mlp(torch.cat([g_i, g_j], dim=1))
        return offset.squeeze(1)


class AbsolutePositionHead(nn.Module):
    """``g -> [B]``: predicted normalised slice position z in (0, 1)."""

    def __init__(self, global_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.mlp = _mlp(global_dim, hidden_dim, 1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        position: torch.Tensor = self.mlp(g)
        return position.squeeze(1)


class SALNetwork(nn.Module):
    """A U-Net plus the SAL pre-training heads.

    Example::

        net = SALNetwork(UNet2D(UNetConfig(width=8, depth=3)), SALHeadsConfig(embedding_dim=16))
        embedding, g = net.embed(torch.zeros(4, 1, 32, 32))   # [4, 16, 8, 8], [4, 128]
        offset = net.relative_head(g[:2], g[2:])              # [2]
    """

    def __init__(self, unet: UNet2D, config: SALHeadsConfig | None = None):
        super().__init__()
        self.config = config or SALHeadsConfig()
        cfg = self.config
        for level in (cfg.feature_level, *cfg.extra_levels):
            level_scale(level, unet.config.depth)  # fail early on a level this U-Net lacks
        self.unet = unet
        self.embedding_head = EmbeddingHead(
            unet.feature_channels(cfg.feature_level), cfg.embedding_dim
        )
        # further levels get heads of their own (kept apart so one-level bundles load as before)
        self.extra_embedding_heads = nn.ModuleList(
            EmbeddingHead(unet.feature_channels(level), cfg.embedding_dim)
            for level in cfg.extra_levels
        )
        self.global_head = GlobalHead(
            unet.feature_channels("bottleneck"), cfg.global_dim, cfg.hidden_dim
        )
        self.relative_head = RelativePositionHead(cfg.global_dim, cfg.hidden_dim)
        self.absolute_head = AbsolutePositionHead(cfg.global_dim, cfg.hidden_dim)

    def embed(self, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``slices [B, in_channels, H, W] -> (embedding [B, c, h, w] unit-norm, g [B, global_dim])``.

        ``h × w`` is ``ceil(H / 2**s) × ceil(W / 2**s)`` for the configured level's scale ``s``.
        The decoder stops at that level, so finer decoder stages and the segmentation head are
        not run (and get no gradient) during pre-training.
        """
        embeddings, g = self.embed_levels(slices)
        return embeddings[0], g

    def embed_levels(self, slices: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Like `embed`, with one embedding per LA level: the main level, then ``extra_levels``.

        The decoder runs down to the finest of the levels.
        """
        levels = (self.config.feature_level, *self.config.extra_levels)
        depth = self.unet.config.depth
        finest = min(levels, key=lambda level: level_scale(level, depth))
        features = self.unet.features(slices, up_to=finest)
        heads = [self.embedding_head, *self.extra_embedding_heads]
        embeddings = [
            head(self.unet.feature_map(features, level))
            for head, level in zip(heads, levels, strict=True)
        ]
        return embeddings, self.global_head(features.bottleneck)

    def forward(self, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(slices)
