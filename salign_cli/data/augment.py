"""nnU-Net-range augmentation of 2D training slices, batched in torch on the training device.

Why one module of about 640 lines (over the house's 600): the spatial and intensity transforms
read one parameter set per slice (the table below) and the same valid-pixel masks, so the config,
the draw and both transforms change together; about a third of the length is this docstring.

Why batched on the device: per-sample augmentation in DataLoader workers (numpy/scipy, one slice
at a time) is what limits 2D training throughput on few-core machines; a whole batch warped by
one `grid_sample` call and a handful of masked reductions costs a few milliseconds on a CPU core
and nearly nothing on a GPU. The design is a functional core:

- :class:`AugmentConfig` — frozen probabilities and ranges (defaults: nnU-Net's 2D ranges),
  stored as JSON with a training run;
- :func:`draw_augment_params` — one sample's parameters, drawn in numpy from a generator the
  caller seeds per sample, so resumed and distributed training draw exactly the same; the values
  are 0-d tensors that torch's default collate stacks into ``[B]`` tensors;
- :func:`augment_batch` = :func:`apply_spatial` then :func:`apply_intensity` — pure tensor
  functions of (batch, params): no hidden random state. Even the noise field and the elastic
  field come from a per-sample generator seeded with the sample's ``noise_seed``.

Parameters (every key always present; an op not drawn holds its identity value):

=============== ======= ============================================================ ========
key             dtype   meaning                                                      identity
=============== ======= ============================================================ ========
flip_rows       float32 1 = mirror the rows (axis 0)                                 0
flip_cols       float32 1 = mirror the columns (axis 1)                              0
angle           float32 in-plane rotation, **radians**                               0
scale           float32 zoom factor, > 1 = zoom in (structures larger)               1
elastic_alpha   float32 largest elastic displacement, pixels of the source           0
elastic_sigma   float32 smoothness length of the elastic field, pixels               0
noise_std       float32 standard deviation of additive Gaussian noise                0
noise_seed      int64   seeds the sample's noise and elastic fields                  0
blur_sigma      float32 Gaussian blur sigma, output pixels                           0
brightness      float32 multiplicative factor                                        1
contrast        float32 factor about the mean, clipped to the old [min, max]         1
lowres_zoom     float32 down-sampling factor of the low-resolution simulation        1
gamma           float32 gamma on the sample's own [min, max], mean/std restored      1
gamma_invert    float32 1 = apply the gamma to the negated image                     0
bias_strength   float32 largest |log| of a smooth multiplicative MR bias field          0
=============== ======= ============================================================ ========

Geometry (rows, columns; pixel units; ``align_corners=True`` so pixel centres sit at
integer coordinates): output pixel ``p``, taken relative to the output centre
``((H-1)/2, (W-1)/2)``, reads the source at

    ``source_centre + R(angle) · F · p / scale + elastic(p)``

where ``source_centre = ((Hs-1)/2, (Ws-1)/2)``, ``F`` negates the row and/or column offset
(``flip_rows``, ``flip_cols``) and ``R`` rotates (row, col) offsets:
``in_row = cos·r − sin·c``, ``in_col = sin·r + cos·c``. Hence identity parameters with
``Hs ≥ H`` and ``Ws ≥ W`` of equal parity give an exact centre crop (an odd size difference puts
the centre between pixels), and ``angle = +π/2`` on a square canvas is
``torch.rot90(x, k=-1, dims=(-2, -1))``.

Outside the scan: the ``valid`` mask travels with the images (nearest neighbour); wherever it is
False the image is exactly :data:`~salign_cli.data.preprocess.OUTSIDE_SCAN` and the label 0,
after every operation. Image interpolation, blur and low-resolution resampling are *normalised*
by the valid mask (the weights of invalid pixels are dropped), so scan values never blend with
the padding and a constant scan stays constant up to its edge. Intensity statistics (mean, std,
min, max) are taken over the valid pixels of all channels of a sample.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salign_cli.config import known_fields
from salign_cli.data.preprocess import OUTSIDE_SCAN
from salign_cli.errors import InputError

SPATIAL_KEYS: tuple[str, ...] = (
    "flip_rows",
    "flip_cols",
    "angle",
    "scale",
    "elastic_alpha",
    "elastic_sigma",
)
INTENSITY_KEYS: tuple[str, ...] = (
    "noise_std",
    "blur_sigma",
    "brightness",
    "contrast",
    "lowres_zoom",
    "gamma",
    "gamma_invert",
    "bias_strength",
)
# Identity value of every parameter: what an op that was not drawn holds.
IDENTITY_PARAMS: dict[str, float] = {
    "flip_rows": 0.0,
    "flip_cols": 0.0,
    "angle": 0.0,
    "scale": 1.0,
    "elastic_alpha": 0.0,
    "elastic_sigma": 0.0,
    "noise_std": 0.0,
    "noise_seed": 0,
    "blur_sigma": 0.0,
    "brightness": 1.0,
    "contrast": 1.0,
    "lowres_zoom": 1.0,
    "gamma": 1.0,
    "gamma_invert": 0.0,
    "bias_strength": 0.0,
}
_SEED_LIMIT = 2**62  # noise seeds are drawn in [0, 2**62): valid for every torch generator
_ELASTIC_SALT = 0x5EED_E1A5  # decorrelates the elastic field from the noise of the same seed
_BIAS_SALT = 0xB1A5_F1E1  # ... and the bias field from both
_BIAS_LATTICE = 4  # the bias field's coarse lattice per side: smooth over a quarter of a slice
_EPS = 1e-6  # normalised-interpolation weights below this count as "no scan here"
_STD_EPS = 1e-8  # as nnU-Net's retain_stats

_PROBABILITIES = (
    "rotation_p",
    "scale_p",
    "elastic_p",
    "noise_p",
    "blur_p",
    "brightness_p",
    "contrast_p",
    "lowres_p",
    "gamma_p",
    "gamma_inverted_p",
    "bias_p",
)
_POSITIVE_RANGES = (
    "scale_range",
    "blur_sigma",
    "brightness_range",
    "contrast_range",
    "lowres_zoom",
    "gamma_range",
)
_NONNEGATIVE_RANGES = ("noise_variance", "bias_strength")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentation; defaults are nnU-Net's 2D ranges.

    ``enabled=False`` makes every draw the identity (a deterministic centre crop/pad).
    Ranges are inclusive ``(low, high)`` pairs sampled uniformly. Each ``*_p`` is the chance
    that one sample gets that op. Gamma follows nnU-Net's two gamma transforms folded into one:
    with ``gamma_inverted_p`` an inverted gamma, otherwise with ``gamma_p`` a plain one.
    Lists (from JSON) are stored as tuples, so a config is hashable and compares equal after a
    round trip through :meth:`to_dict` / :meth:`from_dict`.
    """

    enabled: bool = True
    mirror_axes: tuple[int, ...] = (0, 1)  # 0 = rows, 1 = columns; each flipped with p = 0.5
    rotation_p: float = 0.2
    max_rotation_deg: float = 180.0  # angle uniform in [-max, max]
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)  # > 1 = zoom in (structures larger)
    elastic_p: float = 0.0
    elastic_alpha_px: float = 8.0  # largest displacement (pixels) ...
    elastic_sigma_px: float = 6.0  # ... of a field smooth over this many pixels
    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)  # multiplicative
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)  # about the mean, range preserved
    lowres_p: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)  # down (nearest), back up (bilinear)
    gamma_p: float = 0.3
    gamma_inverted_p: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    # MR receive-coil inhomogeneity (not in nnU-Net; TorchIO's RandomBiasField is the model):
    # off by default, a recipe turns it on (its effect is measured in docs/benchmarks.md).
    bias_p: float = 0.0
    bias_strength: tuple[float, float] = (0.2, 0.6)  # largest |log| of the field

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InputError(f"augment enabled must be true or false, got {self.enabled!r}")
        try:
            axes = tuple(int(axis) for axis in self.mirror_axes)
        except (TypeError, ValueError):
            raise InputError(
                f"augment mirror_axes must be a list of axes, got {self.mirror_axes!r}"
            ) from None
        if not set(axes) <= {0, 1} or len(set(axes)) != len(axes):
            raise InputError(
                f"augment mirror_axes must be distinct in-plane axes from (0, 1), got {axes}"
            )
        object.__setattr__(self, "mirror_axes", axes)
        for name in (*_PROBABILITIES, "max_rotation_deg", "elastic_alpha_px", "elastic_sigma_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"augment {name} must be a number, got {value!r}")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augment {name} must be a probability in [0, 1], got {value!r}")
        for name in (*_POSITIVE_RANGES, *_NONNEGATIVE_RANGES):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise InputError(
                    f"augment {name} must be a pair (low, high), got {value!r}"
                ) from None
            floor_ok = low >= 0.0 if name in _NONNEGATIVE_RANGES else low > 0.0
            if not (floor_ok and low <= high and math.isfinite(high)):
                bound = "0 <= low" if name in _NONNEGATIVE_RANGES else "0 < low"
                raise InputError(
                    f"augment {name} must satisfy {bound} <= high, got ({low:g}, {high:g})"
                )
            object.__setattr__(self, name, (low, high))
        if self.lowres_zoom[1] > 1.0:
            raise InputError(
                f"augment lowres_zoom must not exceed 1 (a down-sampling factor), "
                f"got {self.lowres_zoom}"
            )
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise InputError(
                f"augment max_rotation_deg must be in [0, 180], got {self.max_rotation_deg!r}"
            )
        if not 0.0 <= self.elastic_alpha_px < math.inf:
            raise InputError(
                f"augment elastic_alpha_px must be >= 0 pixels, got {self.elastic_alpha_px!r}"
            )
        if not 0.0 < self.elastic_sigma_px < math.inf:
            raise InputError(
                f"augment elastic_sigma_px must be > 0 pixels, got {self.elastic_sigma_px!r}"
            )

    def strong(self, probability: float = 0.5) -> AugmentConfig:
        """The same ranges with every intensity op at least this likely: FixMatch's strong view
        (the spatial ops, which the weak view shares, are left as they are)."""
        names = ("noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p", "gamma_p")
        return dataclasses.replace(
            self, **{name: max(getattr(self, name), probability) for name in names}
        )

    def without_bias_field(self) -> AugmentConfig:
        """The same ranges with the MR bias field never drawn (the plan's choice for CT and for
        small fields of view)."""
        return dataclasses.replace(self, bias_p=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples, which JSON writes as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> AugmentConfig:
        """Inverse of :meth:`to_dict` (`salign_cli.config`'s policy)."""
        return cls(**known_fields(cls, payload, "augmentation"))


def identity_params(batch_size: int) -> dict[str, torch.Tensor]:
    """Identity parameters already collated: ``[batch_size]`` each (float32; ``noise_seed`` int64)."""
    return {
        key: torch.full(
            (batch_size,), value, dtype=torch.int64 if key == "noise_seed" else torch.float32
        )
        for key, value in IDENTITY_PARAMS.items()
    }


def draw_augment_params(rng: np.random.Generator, config: AugmentConfig) -> dict[str, torch.Tensor]:
    """One sample's parameters as 0-d tensors (float32, except ``noise_seed`` int64).

    Every key of :data:`IDENTITY_PARAMS` is always present; an op not drawn holds its identity
    value, and with ``config.enabled`` False every value is the identity (the generator is then
    not advanced). When enabled, the generator is advanced by the same number of draws whatever
    the outcome, so changing one probability does not reshuffle the other ops. A pure function
    of the generator's state and the config.
    """
    values: dict[str, float | int] = dict(IDENTITY_PARAMS)
    if config.enabled:
        c = config
        u = rng.random(2)
        values["flip_rows"] = float(0 in c.mirror_axes and u[0] < 0.5)
        values["flip_cols"] = float(1 in c.mirror_axes and u[1] < 0.5)

        def maybe(p: float, low: float, high: float, identity: float) -> float:
            chance, value = rng.random(), rng.uniform(low, high)
            return float(value) if chance < p else identity

        degrees = c.max_rotation_deg
        values["angle"] = math.radians(maybe(c.rotation_p, -degrees, degrees, 0.0))
        values["scale"] = maybe(c.scale_p, *c.scale_range, 1.0)
        if rng.random() < c.elastic_p:
            values["elastic_alpha"] = c.elastic_alpha_px
            values["elastic_sigma"] = c.elastic_sigma_px
        values["noise_std"] = math.sqrt(maybe(c.noise_p, *c.noise_variance, 0.0))
        values["noise_seed"] = int(rng.integers(0, _SEED_LIMIT))
        values["blur_sigma"] = maybe(c.blur_p, *c.blur_sigma, 0.0)
        values["brightness"] = maybe(c.brightness_p, *c.brightness_range, 1.0)
        values["contrast"] = maybe(c.contrast_p, *c.contrast_range, 1.0)
        values["lowres_zoom"] = maybe(c.lowres_p, *c.lowres_zoom, 1.0)
        inverted, plain, gamma = rng.random(), rng.random(), rng.uniform(*c.gamma_range)
        if inverted < c.gamma_inverted_p or plain < c.gamma_p:
            values["gamma"] = float(gamma)
            values["gamma_invert"] = float(inverted < c.gamma_inverted_p)
        # drawn last, so the draws above are those of configs from before the bias field
        values["bias_strength"] = maybe(c.bias_p, *c.bias_strength, 0.0)
    return {
        key: torch.tensor(value, dtype=torch.int64 if key == "noise_seed" else torch.float32)
        for key, value in values.items()
    }


# --------------------------------------------------------------------------------------------
# helpers


def _param(
    params: Mapping[str, torch.Tensor], key: str, batch: int, device: torch.device
) -> torch.Tensor:
    """``params[key]`` as float32 ``[batch]`` on ``device`` (a 0-d / 1-element value broadcasts)."""
    if key not in params:
        raise KeyError(f"augmentation params lack {key!r}; expected the keys of IDENTITY_PARAMS")
    value = torch.as_tensor(params[key]).to(device=device, dtype=torch.float32).reshape(-1)
    if value.numel() == 1:
        return value.expand(batch)
    if value.numel() != batch:
        raise ValueError(
            f"augmentation param {key!r} has {value.numel()} values for {batch} samples"
        )
    return value


def _host(params: Mapping[str, torch.Tensor], key: str, batch: int) -> list[float]:
    """``params[key]`` as Python numbers, for the decisions that choose which samples to touch."""
    return _param(params, key, batch, torch.device("cpu")).tolist()


def _seeds(params: Mapping[str, torch.Tensor], batch: int) -> list[int]:
    if "noise_seed" not in params:
        raise KeyError(
            "augmentation params lack 'noise_seed'; expected the keys of IDENTITY_PARAMS"
        )
    seeds = torch.as_tensor(params["noise_seed"]).detach().to("cpu", torch.int64).reshape(-1)
    return (seeds.expand(batch) if seeds.numel() == 1 else seeds).tolist()


def _generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``, or on the CPU where the device has none."""
    try:
        generator = torch.Generator(device=device)
    except RuntimeError:
        generator = torch.Generator()
    return generator.manual_seed(int(seed))


def _elastic_fields(
    seeds: list[int], alphas: list[float], sigmas: list[float], out_shape: tuple[int, int]
) -> torch.Tensor:
    """Smooth displacements ``[n, 2, H, W]`` (rows, cols; pixels), sample k's largest magnitude
    exactly ``alphas[k]``.

    Standard-normal vectors on a coarse lattice spaced ``sigma`` pixels apart (from a CPU
    generator seeded with the sample's seed, so the field is the same on every device),
    upsampled bicubically: a field smooth over about ``sigma`` pixels. Samples sharing a sigma
    are upsampled in one call.
    """
    fields = torch.empty((len(seeds), 2, *out_shape), dtype=torch.float32)
    for sigma in sorted(set(sigmas)):
        members = [k for k, value in enumerate(sigmas) if value == sigma]
        lattice = tuple(max(2, math.ceil((n - 1) / sigma) + 1) for n in out_shape)
        coarse = torch.stack(
            [
                torch.randn(
                    (2, *lattice),
                    generator=torch.Generator().manual_seed(
                        (int(seeds[k]) ^ _ELASTIC_SALT) % _SEED_LIMIT
                    ),
                )
                for k in members
            ]
        )
        fine = F.interpolate(coarse, size=out_shape, mode="bicubic", align_corners=True)
        peak = fine.square().sum(dim=1).amax(dim=(1, 2)).sqrt().clamp_min(1e-12)  # (norm is slow)
        alpha = torch.tensor([alphas[k] for k in members], dtype=torch.float32)
        fields[members] = fine * (alpha / peak).view(-1, 1, 1, 1)
    return fields


def _valid_stats(
    x: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, std (population), min, max over the valid pixels of each sample → ``[n, 1, 1, 1]``.

    ``weight`` is the float valid mask ``[n, 1, H, W]``; a sample without valid pixels gets 0s.
    """
    count = (weight.sum(dim=(1, 2, 3)) * x.shape[1]).clamp_min(1.0).view(-1, 1, 1, 1)
    mean = (x * weight).sum(dim=(1, 2, 3), keepdim=True) / count
    std = (((x - mean) ** 2 * weight).sum(dim=(1, 2, 3), keepdim=True) / count).sqrt()
    inside = weight > 0
    low = x.masked_fill(~inside, math.inf).amin(dim=(1, 2, 3), keepdim=True)
    high = x.masked_fill(~inside, -math.inf).amax(dim=(1, 2, 3), keepdim=True)
    empty = ~inside.flatten(1).any(dim=1).view(-1, 1, 1, 1)
    return mean, std, low.masked_fill(empty, 0.0), high.masked_fill(empty, 0.0)


def _normalised(
    numerator: torch.Tensor, weight: torch.Tensor, fallback: torch.Tensor
) -> torch.Tensor:
    """``numerator / weight`` where the weight of valid pixels is positive, else ``fallback``."""
    return torch.where(weight > _EPS, numerator / weight.clamp_min(_EPS), fallback)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1D Gaussians ``[n, 2·radius + 1]``, one per sigma (all > 0)."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigmas.device)
    kernels = torch.exp(-0.5 * (taps[None, :] / sigmas[:, None]) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# spatial


def spatial_grid(
    params: Mapping[str, torch.Tensor],
    source_shape: tuple[int, int],
    out_shape: tuple[int, int],
    *,
    device: torch.device | None = None,
) -> torch.Tensor:
    """`grid_sample` grid ``[B, H, W, 2]`` (float32, (x, y) = (column, row), ``align_corners=True``).

    Implements the module's geometry convention. ``B`` is the length of the collated params
    (0-d params count as one sample);
    the grid lives on ``device`` (default: the device of ``params["scale"]``). Elastic fields
    are generated on the CPU and moved, so the grid is the same on every device.
    """
    if device is None:
        device = torch.as_tensor(params["scale"]).device
    batch = max(torch.as_tensor(params[key]).numel() for key in SPATIAL_KEYS if key in params)
    source_h, source_w = source_shape
    height, width = out_shape
    flip_rows, flip_cols, angle, scale = (
        _param(params, key, batch, device).view(-1, 1, 1)
        for key in ("flip_rows", "flip_cols", "angle", "scale")
    )
    rows = (torch.arange(height, dtype=torch.float32, device=device) - (height - 1) / 2).view(
        1, -1, 1
    )
    cols = (torch.arange(width, dtype=torch.float32, device=device) - (width - 1) / 2).view(
        1, 1, -1
    )
    rows = torch.where(flip_rows > 0.5, -rows, rows)  # [B, H, 1]
    cols = torch.where(flip_cols > 0.5, -cols, cols)  # [B, 1, W]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    in_rows = cos * rows - sin * cols + (source_h - 1) / 2  # [B, H, W]
    in_cols = sin * rows + cos * cols + (source_w - 1) / 2
    alphas = _host(params, "elastic_alpha", batch)
    if any(alpha > 0 for alpha in alphas):
        picked = [i for i, alpha in enumerate(alphas) if alpha > 0]
        sigmas, seeds = _host(params, "elastic_sigma", batch), _seeds(params, batch)
        default_sigma = AugmentConfig.elastic_sigma_px  # for hand-made params without a sigma
        displacement = torch.zeros((batch, 2, height, width), dtype=torch.float32)
        displacement[picked] = _elastic_fields(
            [seeds[i] for i in picked],
            [alphas[i] for i in picked],
            [sigmas[i] if sigmas[i] > 0 else default_sigma for i in picked],
            out_shape,
        )
        displacement = displacement.to(device)
        in_rows = in_rows + displacement[:, 0]
        in_cols = in_cols + displacement[:, 1]
    x = in_cols * (2.0 / max(source_w - 1, 1)) - 1.0
    y = in_rows * (2.0 / max(source_h - 1, 1)) - 1.0
    return torch.stack((x, y), dim=-1)


def apply_spatial(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    valid: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    out_shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Warp source canvases to the training patch: flips, rotation, scale, elastic, centre crop.

    ``images`` float ``[B, C, Hs, Ws]``, ``labels`` integer ``[B, Hs, Ws]`` or None, ``valid``
    ``[B, 1, Hs, Ws]`` (any dtype, nonzero = scan). Returns images float32 ``[B, C, H, W]``
    (bilinear, normalised by the valid mask so scan values never mix with padding), labels int64
    ``[B, H, W]`` (nearest) and valid bool ``[B, 1, H, W]`` (nearest; False also where the grid
    leaves the canvas). Where valid is False: image exactly OUTSIDE_SCAN, label 0.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    batch, channels, source_h, source_w = images.shape
    if valid.shape != (batch, 1, source_h, source_w):
        raise ValueError(
            f"valid must be [B, 1, H, W] = {(batch, 1, source_h, source_w)}, got {tuple(valid.shape)}"
        )
    if labels is not None and labels.shape != (batch, source_h, source_w):
        raise ValueError(
            f"labels must be [B, H, W] = {(batch, source_h, source_w)}, got {tuple(labels.shape)}"
        )
    device = images.device
    grid = spatial_grid(params, (source_h, source_w), out_shape, device=device)
    if grid.shape[0] != batch:  # 0-d params (one draw for the whole batch) broadcast
        grid = grid.expand(batch, -1, -1, -1)
    weight = (valid != 0).to(device=device, dtype=torch.float32)
    source = torch.cat((images.to(torch.float32) * weight, weight), dim=1)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    nearest_source = weight if labels is None else torch.cat((weight, labels[:, None].float()), 1)
    nearest = F.grid_sample(
        nearest_source, grid, mode="nearest", padding_mode="zeros", align_corners=True
    )
    inside = nearest[:, :1] > 0.5
    outside = torch.full_like(warped[:, :channels], OUTSIDE_SCAN)
    out_images = torch.where(
        inside, _normalised(warped[:, :channels], warped[:, channels:], outside), outside
    )
    out_labels = None
    if labels is not None:
        out_labels = torch.where(inside[:, 0], nearest[:, 1].round(), 0.0).to(torch.int64)
    return out_images, out_labels, inside


# --------------------------------------------------------------------------------------------
# intensity


def bias_log_fields(
    seeds: list[int], strengths: list[float], out_shape: tuple[int, int]
) -> torch.Tensor:
    """Smooth log bias fields ``[n, 1, H, W]``, sample k's largest magnitude exactly
    ``strengths[k]`` (a zero strength gives a zero field).

    Standard-normal values on a ``_BIAS_LATTICE``² lattice spanning the slice (a CPU generator
    seeded with the sample's seed and a salt, so the field is the same on every device),
    upsampled bicubically: one smooth bump or dip per quarter of the slice, the low-order
    variation of a receive-coil profile (TorchIO's RandomBiasField uses a cubic polynomial).
    """
    coarse = torch.stack(
        [
            torch.randn(
                (1, _BIAS_LATTICE, _BIAS_LATTICE),
                generator=torch.Generator().manual_seed((int(seed) ^ _BIAS_SALT) % _SEED_LIMIT),
            )
            for seed in seeds
        ]
    )
    fine = F.interpolate(coarse, size=out_shape, mode="bicubic", align_corners=True)
    peak = fine.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12)
    return fine * (torch.tensor(strengths, dtype=torch.float32) / peak).view(-1, 1, 1, 1)


def _bias(
    x: torch.Tensor, weight: torch.Tensor, strengths: list[float], seeds: list[int]
) -> torch.Tensor:
    """Multiply the intensities above the sample's minimum by ``exp(log field)``, then restore
    the sample's mean and std (as the gamma op does): regions of the slice get brighter or
    darker relative to each other, the slice's overall level and spread stay.

    The minimum stands in for zero signal: a normalised MR slice has lost its raw zero, and
    its darkest valid pixel (air, or the clipped 0.5th percentile) is the nearest to it.
    """
    mean, std, low, _ = _valid_stats(x, weight)
    field = bias_log_fields(seeds, strengths, (x.shape[2], x.shape[3])).to(x.device).exp()
    x = low + (x - low) * field
    new_mean, new_std, _, _ = _valid_stats(x, weight)
    return (x - new_mean) / (new_std + _STD_EPS) * std + mean


def _noise(x: torch.Tensor, std: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Add ``std``-scaled standard-normal fields, each drawn from a generator seeded per sample."""
    fields = []
    for seed in seeds:
        generator = _generator(x.device, seed)
        field = torch.randn(x.shape[1:], generator=generator, device=generator.device)
        fields.append(field.to(x.device))
    return x + std.view(-1, 1, 1, 1) * torch.stack(fields)


def _blur(x: torch.Tensor, weight: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per sample, normalised by the valid mask (replicate padding)."""
    n, channels, height, width = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    kernels = _gaussian_kernels(sigma, radius).repeat_interleave(channels + 1, dim=0)
    groups = n * (channels + 1)
    stack = torch.cat((x * weight, weight), dim=1).reshape(1, groups, height, width)
    stack = F.pad(stack, (radius, radius, radius, radius), mode="replicate")
    stack = F.conv2d(stack, kernels.view(groups, 1, -1, 1), groups=groups)
    stack = F.conv2d(stack, kernels.view(groups, 1, 1, -1), groups=groups)
    stack = stack.view(n, channels + 1, height, width)
    return _normalised(stack[:, :channels], stack[:, channels:], x)


def _contrast(x: torch.Tensor, weight: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean, _, low, high = _valid_stats(x, weight)
    scaled = (x - mean) * factor.view(-1, 1, 1, 1) + mean
    return torch.minimum(torch.maximum(scaled, low), high)


def _lowres(x: torch.Tensor, weight: torch.Tensor, zooms: list[float]) -> torch.Tensor:
    """Nearest down-sampling by each zoom and bilinear back up, normalised by the valid mask."""
    _, channels, height, width = x.shape
    out = []
    for i, zoom in enumerate(zooms):
        size = (max(1, round(height * zoom)), max(1, round(width * zoom)))
        stack = torch.cat((x[i : i + 1] * weight[i : i + 1], weight[i : i + 1]), dim=1)
        small = F.interpolate(stack, size=size, mode="nearest")
        back = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
        out.append(_normalised(back[:, :channels], back[:, channels:], x[i : i + 1]))
    return torch.cat(out)


def _gamma(
    x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, invert: torch.Tensor
) -> torch.Tensor:
    """nnU-Net's gamma with retain_stats, optionally on the negated image."""
    sign = torch.where(invert.view(-1, 1, 1, 1) > 0.5, -1.0, 1.0)
    x = x * sign
    mean, std, low, high = _valid_stats(x, weight)
    span = high - low
    unit = ((x - low) / span.clamp_min(1e-7)).clamp(0.0, 1.0)
    x = low + span * unit ** gamma.view(-1, 1, 1, 1)
    new_mean, new_std, _, _ = _valid_stats(x, weight)
    x = (x - new_mean) / (new_std + _STD_EPS) * std + mean
    return x * sign


def apply_intensity(
    images: torch.Tensor, valid: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The MR bias field, then nnU-Net's intensity ops in its order: noise, blur, brightness,
    contrast, low-res, gamma (the bias field first: the coil shades the signal before the
    receiver adds noise).

    ``images`` float ``[B, C, H, W]``, ``valid`` ``[B, 1, H, W]`` (nonzero = scan). Each sample
    uses its own values, all its channels alike; statistics use its valid pixels only. A sample
    whose value for an op is the identity is left bit-for-bit untouched by that op. Returns a new
    float32 tensor of the same shape, exactly OUTSIDE_SCAN wherever valid is False.
    """
    x = images.to(torch.float32)
    batch, device = x.shape[0], x.device
    weight = (valid != 0).to(device=device, dtype=torch.float32)

    def chosen(key: str, flags: list[bool]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        picked = [i for i, flag in enumerate(flags) if flag]
        index = torch.tensor(picked, dtype=torch.int64, device=device)
        return picked, index, _param(params, key, batch, device)[index]

    seeds = _seeds(params, batch)
    strengths = _host(params, "bias_strength", batch)
    picked, index, _ = chosen("bias_strength", [s > 0 for s in strengths])
    if picked:
        x = x.index_copy(
            0,
            index,
            _bias(
                x[index], weight[index], [strengths[i] for i in picked], [seeds[i] for i in picked]
            ),
        )
    noise_std = _host(params, "noise_std", batch)
    picked, index, value = chosen("noise_std", [s > 0 for s in noise_std])
    if picked:
        x = x.index_copy(0, index, _noise(x[index], value, [seeds[i] for i in picked]))
    picked, index, value = chosen("blur_sigma", [s > 0 for s in _host(params, "blur_sigma", batch)])
    if picked:
        x = x.index_copy(0, index, _blur(x[index], weight[index], value))
    picked, index, value = chosen(
        "brightness", [b != 1 for b in _host(params, "brightness", batch)]
    )
    if picked:
        x = x.index_copy(0, index, x[index] * value.view(-1, 1, 1, 1))
    picked, index, value = chosen("contrast", [c != 1 for c in _host(params, "contrast", batch)])
    if picked:
        x = x.index_copy(0, index, _contrast(x[index], weight[index], value))
    zooms = _host(params, "lowres_zoom", batch)
    picked, index, _ = chosen("lowres_zoom", [z < 1 for z in zooms])
    if picked:
        x = x.index_copy(0, index, _lowres(x[index], weight[index], [zooms[i] for i in picked]))
    picked, index, value = chosen("gamma", [g != 1 for g in _host(params, "gamma", batch)])
    if picked:
        invert = _param(params, "gamma_invert", batch, device)[index]
        x = x.index_copy(0, index, _gamma(x[index], weight[index], value, invert))
    return torch.where(weight > 0, x, torch.full_like(x, OUTSIDE_SCAN))


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    valid: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    out_shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Spatial then intensity augmentation of a batch of source canvases, on ``images.device``.

    ``images`` float32 ``[B, C, Hs, Ws]`` (C = neighbouring slices of one scan, all transformed
    alike), ``labels`` int64 ``[B, Hs, Ws]`` or None, ``valid`` ``[B, 1, Hs, Ws]`` (any dtype,
    nonzero = scan), ``params`` the collated draws of :func:`draw_augment_params` (``[B]`` each,
    any device), ``out_shape`` = (H, W). Returns images float32 ``[B, C, H, W]``, labels int64
    ``[B, H, W]`` (within the input label set) or None, valid bool ``[B, 1, H, W]``; where
    valid is False the image is exactly OUTSIDE_SCAN and the label 0.
    """
    images, labels, inside = apply_spatial(images, labels, valid, params, out_shape)
    return apply_intensity(images, inside, params), labels, inside
