"""Training samples drawn from the slice cache: nearby-slice pairs (pre-training) and labelled slices.

Every sample is a pure function of ``(seed, index)``: its scan, slices and augmentation come from
a generator seeded with both, so a sample is the same whichever process, worker or resumed run
asks for it. That is what makes `--resume` exact and multi-GPU training equal to one process on
the same global batch: `StepBatchSampler` hands step ``s`` the global indices
``[s·G, (s+1)·G)`` and gives each rank its contiguous share, so its only state is the step.

Pairs (pre-training) [ours, docs/explanation/method.md "Pairs"] are augmented here, one sample at
a time:

- spatial, shared by the two slices of a pair: flips, a small rotation and scale, and a random
  crop — or random placement inside a padded canvas when the slice is smaller than the training
  size — to a square of ``size`` pixels. One affine map and `torch.nn.functional.grid_sample` do
  all of it; outside the slice the canvas holds `OUTSIDE_SCAN`, the value inference pads with;
- intensity, drawn independently for each slice and applied inside the slice only: gamma (on the
  slice's own min–max range), contrast around the mean, additive Gaussian noise.

Labelled slices (fine-tuning) come out as *source canvases* around a chosen centre, with a
validity mask and their augmentation parameters drawn; `salign_cli.data.augment.augment_batch`
then transforms the whole batch at once on the training device.

Slice positions are ``z_k = (k + 0.5) / D`` for slice k of a scan with D slices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from salign_cli.data.augment import AugmentConfig, draw_augment_params
from salign_cli.data.preprocess import OUTSIDE_SCAN, with_context
from salign_cli.errors import InputError


@dataclass(frozen=True)
class PairAugmentConfig:
    """Augmentation of pre-training pairs; ``enabled=False`` gives a deterministic centre crop/pad.

    Ranges are inclusive ``(low, high)`` pairs sampled uniformly; ``max_rotation_deg`` is the
    largest absolute in-plane rotation and ``noise_std`` the largest noise standard deviation
    (in units of the normalised intensity).
    """

    size: int = 64
    enabled: bool = True
    flip: bool = True
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        if self.size < 8:
            raise InputError(f"training size must be at least 8 pixels, got {self.size}")
        for name in ("scale_range", "gamma_range", "contrast_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise InputError(
                    f"augmentation {name} must satisfy 0 < low <= high, got {low, high}"
                )


@dataclass(frozen=True)
class SpatialParams:
    """One draw of the shared spatial augmentation (pixel units, rows then columns)."""

    offset: tuple[float, float]  # window start in the input, may be negative (padding)
    angle_rad: float = 0.0
    scale: float = 1.0
    flip: tuple[bool, bool] = (False, False)


def slice_position(index: int | np.ndarray, depth: int) -> float | np.ndarray:
    """Normalised position ``(k + 0.5) / D`` of slice ``k`` in a scan of ``D`` slices."""
    return (index + 0.5) / depth


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator behind sample ``index``: independent of process, worker and resume point."""
    return np.random.default_rng([seed, index])


def draw_spatial(
    rng: np.random.Generator, shape: tuple[int, int], config: PairAugmentConfig
) -> SpatialParams:
    """Draw the window and (if enabled) flips/rotation/scale for an input of ``shape``.

    The window start along each axis is an integer in ``[min(0, n − S), max(0, n − S)]``: a
    crop when the slice is larger than the size S, a random placement inside padding otherwise.
    Without augmentation the window is centred.
    """
    size = config.size
    if not config.enabled:
        return SpatialParams(offset=tuple(float((n - size) // 2) for n in shape))  # type: ignore[arg-type]
    offset = tuple(float(rng.integers(min(0, n - size), max(0, n - size) + 1)) for n in shape)
    flip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if config.flip else (False, False)
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    scale = rng.uniform(*config.scale_range)
    return SpatialParams(offset=offset, angle_rad=angle, scale=scale, flip=flip)  # type: ignore[arg-type]


def sampling_grid(params: SpatialParams, shape: tuple[int, int], size: int) -> torch.Tensor:
    """`grid_sample` grid ``[1, size, size, 2]`` mapping output pixels into an input of ``shape``.

    An output pixel p (about the window centre o) reads the input at
    ``window_centre + R(angle) · flip · (p − o) / scale``; identity parameters give an exact crop.
    Coordinates use ``align_corners=True`` (−1 and +1 are the centres of the end pixels).
    """
    centre_out = (size - 1) / 2.0
    coords = torch.arange(size, dtype=torch.float64) - centre_out
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    if params.flip[0]:
        rows = -rows
    if params.flip[1]:
        cols = -cols
    cos, sin = math.cos(params.angle_rad), math.sin(params.angle_rad)
    in_rows = (cos * rows - sin * cols) / params.scale + params.offset[0] + centre_out
    in_cols = (sin * rows + cos * cols) / params.scale + params.offset[1] + centre_out
    height, width = shape
    x = 2.0 * in_cols / max(width - 1, 1) - 1.0
    y = 2.0 * in_rows / max(height - 1, 1) - 1.0
    return torch.stack([x, y], dim=-1).unsqueeze(0).float()


def warp(images: np.ndarray, params: SpatialParams, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one spatial draw to ``images [C, H, W]`` → ``([C, S, S], inside [S, S])``.

    Outside the input the canvas holds `OUTSIDE_SCAN`; ``inside`` (bool) marks the pixels that
    come from the slice, so intensity augmentation can leave the padding alone.
    """
    stack = torch.from_numpy(np.asarray(images, dtype=np.float32))
    grid = sampling_grid(params, tuple(stack.shape[-2:]), size)  # type: ignore[arg-type]
    ones = torch.ones((1, 1, *stack.shape[-2:]))
    inside = F.grid_sample(ones, grid, mode="nearest", align_corners=True)[0, 0] > 0.5
    warped = F.grid_sample(stack.unsqueeze(0), grid, mode="bilinear", align_corners=True)[0]
    return torch.where(inside, warped, OUTSIDE_SCAN), inside


def augment_intensity(
    image: torch.Tensor, inside: torch.Tensor, rng: np.random.Generator, config: PairAugmentConfig
) -> torch.Tensor:
    """Gamma on the slice's min–max range, contrast about its mean, then Gaussian noise.

    Statistics come from the pixels ``inside`` the slice, and the padding stays `OUTSIDE_SCAN`.
    """
    if not config.enabled or not bool(inside.any()):
        return image
    values = image[inside]
    low, high = values.min(), values.max()
    span = (high - low).clamp_min(1e-6)
    gamma = rng.uniform(*config.gamma_range)
    image = low + span * ((image - low) / span).clamp(0, 1) ** gamma
    mean = image[inside].mean()
    image = mean + (image - mean) * rng.uniform(*config.contrast_range)
    noise_std = rng.uniform(0.0, config.noise_std)
    noise = rng.standard_normal(image.shape).astype(np.float32)
    return torch.where(inside, image + noise_std * torch.from_numpy(noise), OUTSIDE_SCAN)


def scans_with_slice_pairs(
    volumes: Sequence[np.ndarray], names: Sequence[str] | None = None
) -> tuple[list[int], list[str]]:
    """Indices of scans with at least two slices, and a warning for each one skipped."""
    names = names or [f"scan {k}" for k in range(len(volumes))]
    kept, warnings = [], []
    for k, volume in enumerate(volumes):
        if volume.ndim != 3:
            raise ValueError(f"{names[k]}: expected slices [D, H, W], got shape {volume.shape}")
        if volume.shape[0] < 2:
            warnings.append(f"{names[k]}: only {volume.shape[0]} slice; skipped (no slice pairs)")
        else:
            kept.append(k)
    return kept, warnings


class SlicePairDataset(Dataset[dict[str, torch.Tensor]]):
    """Pairs of nearby slices ``(i, j)``, ``1 ≤ |i − j| ≤ pair_distance``, from ``[D, H, W]`` arrays.

    Sample ``index`` → a dict of tensors::

        image_i, image_j  float32 [1, S, S]   same spatial augmentation (slice j's window shifted
                                               by up to ``pair_shift`` pixels), own intensity
                                               augmentation
        z_i, z_j          float32 []          (k + 0.5) / D
        scan, slice_i, slice_j  int64 []

    The scan is drawn uniformly, then i uniformly, then j uniformly among the slices within
    ``pair_distance`` of i (fewer candidates near the ends). Scans with one slice are skipped
    (``warnings`` lists them); if none is left the constructor raises `InputError`.

    Example::

        data = SlicePairDataset([np.zeros((30, 35, 51), np.float16)], seed=0)
        data[7]["image_i"].shape   # torch.Size([1, 64, 64])
    """

    slices_per_sample = 2

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        *,
        pair_distance: int | Sequence[int] = 2,
        augment: PairAugmentConfig | None = None,
        seed: int = 0,
        names: Sequence[str] | None = None,
        pair_shift: int = 0,
        pair_rotation_deg: float = 0.0,
        pair_scale: float = 0.0,
    ) -> None:
        distances = (
            [pair_distance] * len(volumes)
            if isinstance(pair_distance, int)
            else list(pair_distance)
        )
        if len(distances) != len(volumes) or min(distances, default=1) < 1:
            raise InputError(
                f"--pair-distance must be at least 1 slice per scan, got {pair_distance}"
            )
        if pair_shift < 0 or pair_rotation_deg < 0 or pair_scale < 0:
            raise InputError("pair shift, rotation and scale must be >= 0")
        self.volumes = list(volumes)
        self.scans, self.warnings = scans_with_slice_pairs(self.volumes, names)
        if not self.scans:
            raise InputError("no scan has two or more slices; slice pairs need at least two")
        self.pair_distances = distances
        # an independent shift (and rotation, scale) of slice j means matching structures are no
        # longer at the same pixel, so alignment cannot be solved by encoding position alone
        self.pair_shift = pair_shift
        self.pair_rotation_rad = math.radians(pair_rotation_deg)
        self.pair_scale = pair_scale
        self.augment = augment or PairAugmentConfig()
        self.seed = seed

    def __len__(self) -> int:
        """Number of slices in the usable scans (one "epoch"; indices beyond it are valid too)."""
        return sum(self.volumes[k].shape[0] for k in self.scans)

    def pair_indices(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """Draw ``(scan, i, j)``."""
        scan = self.scans[int(rng.integers(len(self.scans)))]
        depth = self.volumes[scan].shape[0]
        i = int(rng.integers(depth))
        distance = self.pair_distances[scan]
        candidates = [j for j in range(i - distance, i + distance + 1) if j != i]
        candidates = [j for j in candidates if 0 <= j < depth]
        return scan, i, int(candidates[int(rng.integers(len(candidates)))])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, index)
        scan, i, j = self.pair_indices(rng)
        volume = self.volumes[scan]
        params = draw_spatial(rng, volume.shape[-2:], self.augment)
        if self.pair_shift or self.pair_rotation_rad or self.pair_scale:
            shift = rng.integers(-self.pair_shift, self.pair_shift + 1, size=2)
            params_j = replace(
                params,
                offset=(params.offset[0] + shift[0], params.offset[1] + shift[1]),
                angle_rad=params.angle_rad + rng.uniform(-1, 1) * self.pair_rotation_rad,
                scale=params.scale * (1 + rng.uniform(-1, 1) * self.pair_scale),
            )
            image_i, inside_i = warp(volume[i][None], params, self.augment.size)
            image_j, inside_j = warp(volume[j][None], params_j, self.augment.size)
        else:
            pair, inside_i = warp(np.stack([volume[i], volume[j]]), params, self.augment.size)
            image_i, image_j, inside_j = pair[:1], pair[1:], inside_i
        depth = volume.shape[0]
        return {
            "image_i": augment_intensity(image_i[0], inside_i, rng, self.augment)[None],
            "image_j": augment_intensity(image_j[0], inside_j, rng, self.augment)[None],
            "z_i": torch.tensor(slice_position(i, depth), dtype=torch.float32),
            "z_j": torch.tensor(slice_position(j, depth), dtype=torch.float32),
            "scan": torch.tensor(scan),
            "slice_i": torch.tensor(i),
            "slice_j": torch.tensor(j),
        }


class LabelledSliceDataset(Dataset[dict[str, object]]):
    """Labelled slices for fine-tuning, as source canvases for `augment_batch`.

    Sample ``index`` → ``{"image": float32 [C, Hs, Ws], "label": int64 [Hs, Ws],
    "valid": float32 [1, Hs, Ws], "augment": {name: 0-d tensor}, "scan": int64 [],
    "slice": int64 []}``. ``C = 2·context + 1``: the slice and its neighbours (beyond the ends
    of a scan, `OUTSIDE_SCAN`). The source canvas is ``source_shape`` (1.5× the patch, so a
    rotation or a zoom out still finds the scan around the patch) centred on:

    - with probability ``foreground_fraction``, a random labelled voxel of a slice that has one
      (nnU-Net's foreground oversampling: small structures are seen often enough);
    - otherwise a random window position of a random slice: a random crop when the slice is
      larger than the patch, a random placement of the whole slice when it is smaller.

    The scan is drawn uniformly (each labelled scan counts alike, whatever its slice count).
    ``mirror_axes[k]`` are the in-plane axes scan k may be flipped along (its slice axis decides
    which one is left-right). Everything is drawn from ``(seed, index)`` alone. ``labels=None``
    serves unlabelled scans (semi-supervision): the label canvas is all background and there is
    no foreground to oversample.
    """

    slices_per_sample = 1

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray] | None,
        *,
        patch_size: tuple[int, int],
        augment: AugmentConfig | None = None,
        context: int = 0,
        foreground_fraction: float = 0.33,
        mirror_axes: Sequence[tuple[int, ...]] | None = None,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ) -> None:
        if not volumes or (labels is not None and len(volumes) != len(labels)):
            raise ValueError(
                f"need scans and one label array per scan, got {len(volumes)} scans and "
                f"{'no' if labels is None else len(labels)} label arrays"
            )
        names = names or [f"scan {k}" for k in range(len(volumes))]
        for name, volume, label in zip(names, volumes, labels or volumes, strict=True):
            if volume.shape != label.shape:
                raise InputError(
                    f"{name}: label slices {label.shape} do not match image slices {volume.shape}"
                )
        self.volumes = list(volumes)
        self.labels: list[np.ndarray] | None = None if labels is None else list(labels)
        self.patch_size = patch_size
        # same parity as the patch, so identity parameters give an exact centre crop
        self.source_shape = tuple(n + 2 * math.ceil(n / 4) for n in patch_size)
        self.context = context
        self.foreground_fraction = foreground_fraction
        augment = augment or AugmentConfig()
        axes = mirror_axes if mirror_axes is not None else [augment.mirror_axes] * len(volumes)
        self.augment = [replace(augment, mirror_axes=tuple(a)) for a in axes]
        self.foreground_slices = [
            np.flatnonzero(np.asarray(label).reshape(len(label), -1).max(axis=1) > 0)
            for label in self.labels or []
        ] or [np.zeros(0, np.int64)] * len(self.volumes)
        self.seed = seed

    def __len__(self) -> int:
        return sum(volume.shape[0] for volume in self.volumes)

    def _centre(
        self, rng: np.random.Generator, label_slice: np.ndarray, foreground: bool
    ) -> tuple[int, int]:
        """Source-canvas centre in slice pixels (see the class docstring)."""
        if foreground:
            rows, cols = np.nonzero(label_slice)
            pick = int(rng.integers(len(rows)))
            return int(rows[pick]), int(cols[pick])
        centre = []
        for n, size in zip(label_slice.shape, self.patch_size, strict=True):
            start = int(rng.integers(min(0, n - size), max(0, n - size) + 1))
            centre.append(start + size // 2)
        return centre[0], centre[1]

    def __getitem__(self, index: int) -> dict[str, object]:
        rng = sample_rng(self.seed, index)
        scan = int(rng.integers(len(self.volumes)))
        volume = self.volumes[scan]
        candidates = self.foreground_slices[scan]
        foreground = len(candidates) > 0 and rng.random() < self.foreground_fraction
        k = (
            int(candidates[rng.integers(len(candidates))])
            if foreground
            else int(rng.integers(volume.shape[0]))
        )
        label_slice = (
            np.zeros(volume.shape[1:], np.int64)
            if self.labels is None
            else np.asarray(self.labels[scan][k])
        )
        row, col = self._centre(rng, label_slice, foreground)
        source_h, source_w = self.source_shape
        top, left = row - source_h // 2, col - source_w // 2
        image = with_context(volume, k, k + 1, self.context)[0]
        canvas = np.full((image.shape[0], source_h, source_w), OUTSIDE_SCAN, np.float32)
        label_canvas = np.zeros((source_h, source_w), np.int64)
        valid = np.zeros((1, source_h, source_w), np.float32)
        # the overlap of the canvas with the slice, in slice and in canvas coordinates
        r0, r1 = max(top, 0), min(top + source_h, volume.shape[1])
        c0, c1 = max(left, 0), min(left + source_w, volume.shape[2])
        if r0 < r1 and c0 < c1:
            target = np.s_[r0 - top : r1 - top, c0 - left : c1 - left]
            canvas[:, target[0], target[1]] = image[:, r0:r1, c0:c1]
            label_canvas[target] = label_slice[r0:r1, c0:c1]
            valid[0, target[0], target[1]] = 1.0
        return {
            "image": torch.from_numpy(canvas),
            "label": torch.from_numpy(label_canvas),
            "valid": torch.from_numpy(valid),
            "augment": draw_augment_params(rng, self.augment[scan]),
            "scan": torch.tensor(scan),
            "slice": torch.tensor(k),
        }


class LabelledAndUnlabelled(Dataset[dict[str, object]]):
    """Sample ``index`` → ``{"labelled": labelled[index], "unlabelled": unlabelled[index]}``.

    The two streams are independent datasets (give them different seeds); a step's batch holds
    as many unlabelled as labelled slices, which is how FixMatch, UniMatch and BCP batch.
    """

    slices_per_sample = 2

    def __init__(self, labelled: LabelledSliceDataset, unlabelled: LabelledSliceDataset) -> None:
        self.labelled, self.unlabelled = labelled, unlabelled

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"labelled": self.labelled[index], "unlabelled": self.unlabelled[index]}


class StepBatchSampler(Sampler[list[int]]):
    """Sample indices for steps ``start_step … total_steps − 1``: this rank's share of each batch.

    Step ``s`` uses the global indices ``[s·G, (s+1)·G)`` (G = ``global_batch_size``); rank r of
    W takes the r-th contiguous block of ``G / W``. The position to resume from is the step.
    """

    def __init__(
        self,
        global_batch_size: int,
        total_steps: int,
        *,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch_size % world_size:
            raise InputError(
                f"--batch-size {global_batch_size} is not divisible by the {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.total_steps, self.start_step = total_steps, start_step
        self.rank = rank

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            first = step * self.global_batch_size + self.rank * self.local_batch_size
            yield list(range(first, first + self.local_batch_size))
