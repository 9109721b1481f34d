"""The 2D U-Net that salign pre-trains with SAL and fine-tunes for segmentation.

One network serves both stages: pre-training reads a decoder (or bottleneck) feature map through
`UNet2D.features` + `feature_map`, fine-tuning reads `forward` logits after `replace_head`.

Layout (nnU-Net's PlainConvUNet, shrunk to 2D): each stage is two 3×3 conv → norm → LeakyReLU
blocks; the first conv of every encoder stage below the top has stride 2 (learned down-sampling);
the decoder up-samples with a 2×2 transposed conv, concatenates the skip and applies a stage;
a 1×1 conv head gives the logits. Stage ``level`` has ``min(width * 2**level, max_channels)``
channels, capped like nnU-Net (320) so that deep configurations stay affordable.

Any H×W is accepted: the input is padded at the bottom/right with
`~salign_cli.data.preprocess.OUTSIDE_SCAN` (the value training canvases hold outside a scan) to a
multiple of ``2**depth``
and every output (logits and each feature map) is cropped back to the size the unpadded input
would have at that scale, ``ceil(H / 2**s) × ceil(W / 2**s)``. Only convolutions, ``pad``, ``cat``
and slicing are used, so ``channels_last`` memory format passes through untouched.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from salign_cli.config import known_fields
from salign_cli.data.preprocess import OUTSIDE_SCAN

NormKind = Literal["batch", "instance"]
NORM_KINDS: tuple[str, ...] = ("batch", "instance")
LEAKY_SLOPE = 1e-2


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a `UNet2D` exactly (stored in a bundle's ``salign.json``).

    ``depth`` is the number of down-samplings, so the bottleneck sits at ``1 / 2**depth`` of the
    input resolution. ``max_channels`` caps the channel count of deep stages.
    """

    in_channels: int = 1
    num_classes: int = 2
    width: int = 32
    depth: int = 4
    norm: NormKind = "batch"
    max_channels: int = 320

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "width", "depth", "max_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(
                f"UNetConfig.num_classes must be >= 2 (background + 1 structure), got {self.num_classes}"
            )
        if self.max_channels < self.width:
            raise ValueError(
                f"UNetConfig.max_channels ({self.max_channels}) must be >= width ({self.width})"
            )
        if self.norm not in NORM_KINDS:
            raise ValueError(f"UNetConfig.norm must be one of {NORM_KINDS}, got {self.norm!r}")

    def stage_channels(self, level: int) -> int:
        """Channels of encoder/decoder stage ``level`` (0 = full resolution, depth = bottleneck)."""
        return min(self.width << level, self.max_channels)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` of it gives back an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Rebuild from `to_dict` output (`salign_cli.config`'s policy: unknown keys are a
        ``ConfigError``, missing ones take defaults); callers that read a file add its path."""
        return cls(**known_fields(cls, data, "UNetConfig"))


def feature_levels(depth: int) -> tuple[str, ...]:
    """Names of the feature maps a U-Net of this depth offers, coarsest first.

    ``"bottleneck"`` (1/2**depth), then each decoder output ``"1/2**s"`` for s = depth-1 … 1, then
    ``"full"`` (the last decoder output, before the segmentation head). Depth 4 gives
    ``("bottleneck", "1/8", "1/4", "1/2", "full")``.
    """
    return ("bottleneck", *(f"1/{2**scale}" for scale in range(depth - 1, 0, -1)), "full")


def level_scale(level: str, depth: int) -> int:
    """Down-sampling exponent ``s`` of a feature level (the map is 1/2**s of the input)."""
    levels = feature_levels(depth)
    if level not in levels:
        raise ValueError(
            f"unknown feature level {level!r} for depth {depth}; valid: {list(levels)}"
        )
    return depth - levels.index(level)


@dataclass(frozen=True)
class UNetFeatures:
    """Intermediate maps of one forward pass, each cropped to its scale of the unpadded input.

    ``decoder[k]`` is at ``1 / 2**(depth - 1 - k)`` resolution, so ``decoder[-1]`` is full
    resolution. ``logits`` is ``None`` when the pass stopped before the head (`UNet2D.features`
    with ``up_to``), in which case ``decoder`` holds only the levels computed.
    """

    bottleneck: torch.Tensor
    decoder: list[torch.Tensor]
    logits: torch.Tensor | None


def feature_map(features: UNetFeatures, level: str, depth: int) -> torch.Tensor:
    """The map named ``level`` (see `feature_levels`) from a forward pass of a depth-``depth`` U-Net."""
    scale = level_scale(level, depth)
    if scale == depth:
        return features.bottleneck
    index = depth - 1 - scale
    if index >= len(features.decoder):
        raise ValueError(
            f"feature level {level!r} was not computed (the pass stopped at "
            f"{len(features.decoder)} decoder levels); call features() without an earlier up_to"
        )
    return features.decoder[index]


def _norm(kind: NormKind, channels: int) -> nn.Module:
    # Instance norm with learnable affine, as nnU-Net; it also works for batch size 1.
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


class ConvBlock(nn.Sequential):
    """3×3 conv → norm → LeakyReLU; ``stride=2`` makes it the stage's down-sampling step."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, stride: int = 1):
        # No conv bias: the following norm removes it anyway.
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class Stage(nn.Sequential):
    """Two conv blocks; the first may down-sample."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormKind, stride: int = 1):
        super().__init__(
            ConvBlock(in_channels, out_channels, norm, stride),
            ConvBlock(out_channels, out_channels, norm),
        )


class UNet2D(nn.Module):
    """2D U-Net: ``forward(x [B, in_channels, H, W]) -> logits [B, num_classes, H, W]``.

    Example::

        net = UNet2D(UNetConfig(width=8, depth=3))
        logits = net(torch.zeros(2, 1, 37, 45))          # [2, 2, 37, 45]
        feats = net.features(torch.zeros(2, 1, 37, 45))
        net.feature_map(feats, "1/4").shape              # [2, 32, 10, 12]
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        cfg = self.config
        self.encoder = nn.ModuleList(
            Stage(
                cfg.in_channels if level == 0 else cfg.stage_channels(level - 1),
                cfg.stage_channels(level),
                cfg.norm,
                stride=1 if level == 0 else 2,
            )
            for level in range(cfg.depth + 1)
        )
        # Decoder modules are stored coarsest first: index k produces level depth-1-k.
        decoder_levels = range(cfg.depth - 1, -1, -1)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(
                cfg.stage_channels(level + 1), cfg.stage_channels(level), 2, stride=2, bias=False
            )
            for level in decoder_levels
        )
        self.decoder = nn.ModuleList(
            Stage(2 * cfg.stage_channels(level), cfg.stage_channels(level), cfg.norm)
            for level in decoder_levels
        )
        self.head = self._new_head(cfg.num_classes)
        self.apply(_init_weights)

    @property
    def feature_levels(self) -> tuple[str, ...]:
        """Valid ``level`` names for `feature_map` / `feature_channels`, coarsest first."""
        return feature_levels(self.config.depth)

    def feature_channels(self, level: str) -> int:
        """Channel count of the map named ``level``."""
        return self.config.stage_channels(level_scale(level, self.config.depth))

    def feature_map(self, features: UNetFeatures, level: str) -> torch.Tensor:
        """The map named ``level`` from ``features`` (a pass of this network)."""
        return feature_map(features, level, self.config.depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.features(x).logits
        assert logits is not None  # a full pass always reaches the head
        return logits

    def features(self, x: torch.Tensor, up_to: str | None = None) -> UNetFeatures:
        """One pass returning the bottleneck, every decoder map and the logits.

        ``up_to`` (a level name) stops the decoder once that level is computed, skipping the
        finer stages and the head (``logits`` is then ``None``): pre-training that taps "1/4"
        does not pay for full-resolution convolutions whose output it never uses.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input [B, {self.config.in_channels}, H, W], got {list(x.shape)}"
            )
        depth = self.config.depth
        stop_scale = 0 if up_to is None else level_scale(up_to, depth)
        height, width = x.shape[-2:]
        x = F.pad(x, self._padding(height, width), value=OUTSIDE_SCAN)

        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        bottleneck = skips.pop()

        decoder_maps = []
        for upsample, stage, scale in zip(
            self.upsample, self.decoder, range(depth - 1, -1, -1), strict=True
        ):
            if scale < stop_scale:
                break
            x = stage(torch.cat([upsample(x), skips[scale]], dim=1))
            decoder_maps.append(x)

        logits = self.head(x) if stop_scale == 0 else None
        return UNetFeatures(
            bottleneck=_crop(bottleneck, height, width, depth),
            decoder=[_crop(m, height, width, depth - 1 - k) for k, m in enumerate(decoder_maps)],
            logits=None if logits is None else _crop(logits, height, width, 0),
        )

    def replace_head(self, num_classes: int) -> None:
        """Swap in a freshly initialised segmentation head for ``num_classes`` (fine-tuning).

        Every other parameter is kept; ``config.num_classes`` is updated so a saved bundle
        rebuilds the new shape.
        """
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        old = self.head.weight
        self.head = self._new_head(num_classes).to(device=old.device, dtype=old.dtype)
        _init_weights(self.head)

    def expand_input_channels(self, in_channels: int) -> None:
        """Take ``in_channels`` inputs (2.5D context) while computing exactly the same function.

        The first convolution's kernel moves to the middle channel (the slice itself) and the
        new neighbour channels start at zero weight, so a pre-trained 1-channel network keeps
        what it learnt and fine-tuning learns how much the neighbours add.
        """
        if in_channels == self.config.in_channels:
            return
        if self.config.in_channels != 1 or in_channels % 2 == 0:
            raise ValueError(
                f"can expand a 1-channel U-Net to an odd number of channels, not "
                f"{self.config.in_channels} → {in_channels}"
            )
        first_block = cast(ConvBlock, cast(Stage, self.encoder[0])[0])
        old = cast(nn.Conv2d, first_block[0])
        new = nn.Conv2d(in_channels, old.out_channels, 3, padding=1, bias=False)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, in_channels // 2] = old.weight[:, 0]
        first_block[0] = new
        self.config = dataclasses.replace(self.config, in_channels=in_channels)

    def _new_head(self, num_classes: int) -> nn.Conv2d:
        return nn.Conv2d(self.config.stage_channels(0), num_classes, 1)

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        # Pad to a multiple of 2**depth, and to at least two bottleneck pixels per side so that
        # batch/instance norm statistics at the bottleneck never see a single value.
        multiple = 2**self.config.depth
        padded_h = max(math.ceil(height / multiple), 2) * multiple
        padded_w = max(math.ceil(width / multiple), 2) * multiple
        return (0, padded_w - width, 0, padded_h - height)


def _crop(x: torch.Tensor, height: int, width: int, scale: int) -> torch.Tensor:
    """Keep the part of a 1/2**scale map that covers the unpadded ``height × width`` input."""
    factor = 2**scale
    return x[..., : math.ceil(height / factor), : math.ceil(width / factor)]


def _init_weights(module: nn.Module) -> None:
    # He initialisation for LeakyReLU, as nnU-Net; zero biases.
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
