"""Turn a scan into the 2D slices the network sees, and send predictions back to the scan's grid.

One recipe serves pre-training, fine-tuning and inference, and the bundle's ``salign.json`` stores
it (:class:`PreprocessConfig`), so a model always sees data prepared the way it was trained:

1. closest-canonical (RAS) orientation (exact axis permutation/flip, :mod:`salign_cli.io.volume`);
2. the slice axis moved first (by default the axis with the largest spacing: slices are taken
   across the coarsest direction, so each 2D slice has the finest detail);
3. intensity normalisation per volume — CT: clip to a HU window, scale to [-1, 1]; MR: clip to
   the 0.5–99.5 percentiles, then z-score (real datasets mix dtypes and ranges, see
   ``../shared/data/README.md``);
4. in-plane resampling to the target spacing (bilinear for images, nearest for labels).

:func:`restore_labels` / :func:`restore_scores` invert steps 4, 2 and 1 exactly, so a mask has
the input's shape, affine and orientation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as functional

from salign_cli.config import known_fields
from salign_cli.errors import InputError, OptionError
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.io.hashing import text_hash
from salign_cli.io.modality import CT_WINDOW_HU, MODALITIES, MR_PERCENTILES, Modality
from salign_cli.io.volume import (
    Volume,
    canonical_grid,
    from_canonical,
    label_dtype,
    label_values,
    read_volume,
    require_finite,
    same_grid,
    to_canonical,
)

PREPROCESS_VERSION = 1  # bump when the recipe changes, so stale cache entries are rebuilt
# What the network sees where there is no scan: the training canvas around a slice, the U-Net's
# own padding at inference, neighbour slices beyond the ends of a scan (2.5D context) and the
# corners a rotation brings in. One value everywhere, because a model meets at inference only
# what it was trained on: padding the training canvas with the slice minimum (~-2.3 after the MR
# z-score) while inference padded with 0 cost 17 points of Dice on hippocampus (issue
# "accuracy 1/3"). 0 is the mean of a z-scored MR volume and mid-window for CT, as in nnU-Net.
OUTSIDE_SCAN = 0.0
ISOTROPY_TOLERANCE = 1.1  # spacings within 10 % count as equal when choosing the slice axis
_RESAMPLE_CHUNK = 32  # slices resampled at once: bounds memory on 512x512x400 CT
# CT content (`content_box`): air is -1000 HU and fat about -100; lung (-900 to -500) lies
# inside the chest wall, so the box around everything above -500 HU holds the whole body.
CT_CONTENT_HU = -500.0
# Air kept around the body in the box: the network sees the skin with real air beside it.
CONTENT_MARGIN_PX = 16


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans become network input; stored in every bundle's ``salign.json``.

    ``slice_axis`` is an axis of the canonical RAS array (0 = sagittal slices, 1 = coronal,
    2 = axial) or ``None`` to choose per scan with :func:`choose_slice_axis`.
    ``target_spacing_mm`` is the in-plane spacing (of the two remaining axes, in order) or
    ``None`` to keep each scan's own spacing. ``context`` neighbouring slices on each side are
    stacked as extra input channels (2.5D, `with_context`); it does not change the cached
    slices, so the slice cache ignores it.
    """

    modality: Modality = "MR"
    slice_axis: int | None = None
    target_spacing_mm: tuple[float, float] | None = None
    ct_window: tuple[float, float] = CT_WINDOW_HU
    mr_percentiles: tuple[float, float] = MR_PERCENTILES
    context: int = 0

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise InputError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2 (or auto), got {self.slice_axis}")
        if self.target_spacing_mm is not None and min(self.target_spacing_mm) <= 0:
            raise InputError(f"target spacing must be positive, got {self.target_spacing_mm}")
        low, high = self.ct_window
        if not low < high:
            raise InputError(f"CT window must be (low, high) with low < high, got {self.ct_window}")
        low, high = self.mr_percentiles
        if not 0 <= low < high <= 100:
            raise InputError(
                f"MR percentiles must satisfy 0 <= low < high <= 100, got {self.mr_percentiles}"
            )
        if not 0 <= self.context <= 8:
            raise InputError(
                f"context must be 0-8 neighbouring slices per side, got {self.context}"
            )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "version": PREPROCESS_VERSION}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PreprocessConfig:
        """The inverse of `to_dict` (``__post_init__`` checks every value, e.g. the modality;
        `salign_cli.config`'s policy for keys, the format ``version`` aside)."""
        payload = known_fields(cls, payload, "preprocessing", ignored=("version",))

        def pair(value: Any) -> tuple[float, float] | None:
            return None if value is None else (float(value[0]), float(value[1]))

        slice_axis = payload.get("slice_axis")
        return cls(
            modality=cast(Modality, str(payload.get("modality", "MR"))),
            slice_axis=None if slice_axis is None else int(slice_axis),
            target_spacing_mm=pair(payload.get("target_spacing_mm")),
            ct_window=pair(payload.get("ct_window")) or CT_WINDOW_HU,
            mr_percentiles=pair(payload.get("mr_percentiles")) or MR_PERCENTILES,
            context=int(payload.get("context", 0)),
        )


@dataclass(frozen=True, eq=False)
class PreparedScan:
    """Network-ready slices of one scan, plus what is needed to send predictions back.

    ``slices``: float32 ``[D, H, W]`` — D slices along ``slice_axis`` of the canonical array,
    resampled in-plane to ``resampled_shape``. ``labels``: int ``[D, H, W]`` on the same grid
    (nearest-neighbour), or ``None``.
    """

    slices: np.ndarray
    slice_axis: int
    canonical_shape: tuple[int, int, int]
    inplane_shape: tuple[int, int]
    inplane_spacing_mm: tuple[float, float]
    labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def resampled_shape(self) -> tuple[int, int]:
        return (int(self.slices.shape[1]), int(self.slices.shape[2]))


def with_context(slices: np.ndarray, start: int, stop: int, context: int) -> np.ndarray:
    """Slices ``start … stop − 1`` of ``[D, H, W]``, each with ``context`` neighbours per side.

    Returns float32 ``[stop − start, 2·context + 1, H, W]``; channel ``context`` is the slice
    itself, channel ``context + o`` its neighbour at offset ``o``. Neighbours beyond the ends of
    the scan are `OUTSIDE_SCAN`. Training and inference both call this, so a 2.5D network sees
    the same stacks in both.

    >>> with_context(np.arange(3, dtype=np.float32)[:, None, None], 0, 3, 1)[:, :, 0, 0]
    array([[0., 0., 1.],
           [0., 1., 2.],
           [1., 2., 0.]], dtype=float32)
    """
    depth = slices.shape[0]
    out = np.full(
        (stop - start, 2 * context + 1, *slices.shape[1:]), OUTSIDE_SCAN, dtype=np.float32
    )
    for channel, offset in enumerate(range(-context, context + 1)):
        first, last = max(start + offset, 0), min(stop + offset, depth)
        if first < last:
            out[first - offset - start : last - offset - start, channel] = slices[first:last]
    return out


def content_box(
    slices: np.ndarray, config: PreprocessConfig, *, multiple: int = 1
) -> tuple[slice, slice] | None:
    """The in-plane box of a CT's prepared ``[D, H, W]`` slices that holds the patient, or
    ``None`` when it is the whole slice (and always for MR).

    The box bounds every pixel above `CT_CONTENT_HU` in any slice, widened by
    `CONTENT_MARGIN_PX` of the air around it on each side and then to a multiple of
    ``multiple`` (the network's down-sampling factor, so the box needs no padding), all within
    the slice. Why: a CT's field of view is mostly air around the body (on a 512² abdomen about
    half of each slice), and segmenting only the box costs the network that much less; outside
    it there is nothing but air and the couch's surroundings to label. MR has no such absolute
    level (its background is noise of any scale), so it is never cropped.

    >>> ct = np.full((2, 64, 64), -1.0, dtype=np.float32)
    >>> ct[1, 30:34, 20:25] = 0.04  # 40 HU after the default window's scaling
    >>> content_box(ct, PreprocessConfig(modality="CT"))
    (slice(14, 50, None), slice(4, 41, None))
    """
    if config.modality != "CT":
        return None
    low, high = config.ct_window
    if not low < CT_CONTENT_HU:
        return None  # the window clips air and body to one value: nothing tells them apart
    level = (CT_CONTENT_HU - (low + high) / 2.0) / ((high - low) / 2.0)
    footprint: np.ndarray = np.any(slices > level, axis=0)
    if not footprint.any():
        return None
    box = []
    for axis in range(2):
        present = np.flatnonzero(np.any(footprint, axis=1 - axis))
        size = footprint.shape[axis]
        first = max(0, int(present[0]) - CONTENT_MARGIN_PX)
        last = min(size, int(present[-1]) + 1 + CONTENT_MARGIN_PX)
        short = -(last - first) % multiple  # widen to the multiple: after, then before
        grown = min(size, last + short)
        first = max(0, first - (short - (grown - last)))
        box.append(slice(first, grown))
    if all(part.stop - part.start == size for part, size in zip(box, footprint.shape, strict=True)):
        return None
    return box[0], box[1]


def mirror_axes(mirror: str, slice_axis: int) -> tuple[int, ...]:
    """In-plane axes (0 = rows, 1 = columns of a slice) that ``mirror`` allows to flip.

    Slices hold the canonical (RAS) axes other than ``slice_axis``, in order; the left-right
    axis is canonical axis 0, so it is the rows of axial and coronal slices and absent from
    sagittal ones.

    >>> mirror_axes("lr", 2), mirror_axes("lr", 0), mirror_axes("all", 0)
    ((0,), (), (0, 1))

    Only resolved values are meaningful here (``auto`` is `resolve_mirror`'s to settle); any
    other string is a bug upstream, not "no mirroring", so it raises ``ValueError``.
    """
    if mirror not in ("lr", "none", "all"):
        raise ValueError(f"mirror must be 'lr', 'none' or 'all' here, got {mirror!r}")
    if mirror == "all":
        return (0, 1)
    if mirror == "lr" and slice_axis != 0:
        return (0,)
    return ()


def choose_slice_axis(spacing_mm: tuple[float, float, float]) -> int:
    """The canonical axis with the largest spacing; near-isotropic scans use the axial axis (2).

    >>> choose_slice_axis((0.8, 0.8, 5.0))
    2
    >>> choose_slice_axis((3.0, 1.0, 1.0))
    0
    """
    largest = max(range(3), key=lambda axis: spacing_mm[axis])
    if spacing_mm[largest] <= ISOTROPY_TOLERANCE * min(spacing_mm):
        return 2
    return largest


def normalise_intensity(array: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Per-volume intensity normalisation to float32 (see the module docstring).

    A constant volume maps to zeros rather than dividing by zero. Works in place on one copy
    (never on ``array`` itself): each whole-volume temporary of the plain expression cost a pass
    over 200 MB on a 512x512x200 CT, most of ``prepare_scan``'s time. The operations, their
    order and their precision (float32 for CT; float64 for MR, whose float64 percentiles promote
    the clip) are those of ``(clip(x) - a) / b``, so the values are bit for bit the same.
    """
    if config.modality == "CT":
        values = np.array(array, dtype=np.float32, copy=True)
        low, high = config.ct_window
        centre, half_width = (low + high) / 2.0, (high - low) / 2.0
        np.clip(values, low, high, out=values)
        values -= np.float32(centre)
        values /= np.float32(half_width)
        return values
    values = np.asarray(array, dtype=np.float32)
    low_value, high_value = np.percentile(values, config.mr_percentiles)
    clipped = np.clip(values, low_value, high_value)  # float64: the percentiles are float64
    std = float(clipped.std())
    if std < 1e-8:
        return np.zeros(clipped.shape, dtype=np.float32)
    clipped -= float(clipped.mean())
    clipped /= std
    return clipped.astype(np.float32)


def resampled_size(size: int, spacing_mm: float, target_spacing_mm: float | None) -> int:
    """Number of samples covering the same extent at the target spacing (at least 1)."""
    if target_spacing_mm is None:
        return size
    return max(1, round(size * spacing_mm / target_spacing_mm))


def _resize_slices(stack: np.ndarray, shape: tuple[int, int], *, nearest: bool) -> np.ndarray:
    """Resize ``[N, A, B]`` (or ``[C, N, A, B]``) in-plane to ``shape``, chunk by chunk."""
    if tuple(stack.shape[-2:]) == tuple(shape):
        return stack
    leading = stack.shape[:-2]
    flat = stack.reshape(-1, 1, *stack.shape[-2:])
    out = np.empty((flat.shape[0], *shape), dtype=stack.dtype)
    mode = "nearest-exact" if nearest else "bilinear"
    for start in range(0, flat.shape[0], _RESAMPLE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(flat[start : start + _RESAMPLE_CHUNK]))
        source_dtype = chunk.dtype
        resized = functional.interpolate(
            chunk.float(), size=shape, mode=mode, **({} if nearest else {"align_corners": False})
        )
        out[start : start + _RESAMPLE_CHUNK] = resized[:, 0].to(source_dtype).numpy()
    return out.reshape(*leading, *shape)


def _check_label_geometry(volume: Volume, labels: Volume) -> None:
    if not same_grid(labels, volume):
        raise InputError(
            f"{labels.path}: label geometry (shape {labels.shape}, orientation {labels.orientation}) "
            f"does not match its image {volume.path} (shape {volume.shape}, orientation "
            f"{volume.orientation}); re-export the label on the image's grid"
        )


def prepare_scan(
    volume: Volume, config: PreprocessConfig, labels: Volume | None = None
) -> PreparedScan:
    """Canonicalise, move the slice axis first, normalise and resample one scan (and its labels).

    Raises `InputError` naming the file for NaN/Inf voxels (they would poison every slice after
    normalisation) and for labels off the image's grid.
    """
    require_finite(volume)
    if labels is not None:
        _check_label_geometry(volume, labels)
    canonical = to_canonical(volume)
    canonical_shape = canonical.array.shape
    slice_axis = (
        config.slice_axis
        if config.slice_axis is not None
        else choose_slice_axis(canonical.spacing_mm)
    )
    inplane_axes = [axis for axis in range(3) if axis != slice_axis]
    inplane_spacing = (canonical.spacing_mm[inplane_axes[0]], canonical.spacing_mm[inplane_axes[1]])
    stack = np.moveaxis(normalise_intensity(canonical.array, config), slice_axis, 0)
    target = config.target_spacing_mm or (None, None)
    shape = (
        resampled_size(stack.shape[1], inplane_spacing[0], target[0]),
        resampled_size(stack.shape[2], inplane_spacing[1], target[1]),
    )
    label_stack = None
    if labels is not None:
        canonical_labels = to_canonical(Volume(label_values(labels), labels.affine)).array
        label_stack = _resize_slices(
            np.moveaxis(canonical_labels, slice_axis, 0), shape, nearest=True
        )
    return PreparedScan(
        slices=np.ascontiguousarray(_resize_slices(stack, shape, nearest=False)),
        slice_axis=slice_axis,
        canonical_shape=(int(canonical_shape[0]), int(canonical_shape[1]), int(canonical_shape[2])),
        inplane_shape=(int(stack.shape[1]), int(stack.shape[2])),
        inplane_spacing_mm=inplane_spacing,
        labels=None if label_stack is None else np.ascontiguousarray(label_stack),
    )


def _to_volume_grid(
    canonical_stack: np.ndarray, prepared: PreparedScan, volume: Volume
) -> np.ndarray:
    """``[D, A, B, ...]`` on the canonical grid (slice axis first) -> volume's own voxel order."""
    canonical = np.moveaxis(canonical_stack, 0, prepared.slice_axis)
    return from_canonical(canonical, volume)


def restore_labels(
    scores: np.ndarray | torch.Tensor, prepared: PreparedScan, volume: Volume
) -> np.ndarray:
    """Per-class scores ``[C, D, H, W]`` on the prepared grid -> integer labels on ``volume``'s grid.

    Scores (logits or probabilities) are resampled bilinearly to the original in-plane size
    before the argmax, so class boundaries are placed at full resolution; the argmax is taken
    chunk by chunk so memory stays at one chunk of ``C`` float maps. The labels are the
    smallest unsigned type that holds ``C - 1`` (`label_dtype`). The conversion to float32, the
    resampling and the argmax all run in torch (threaded; numpy's argmax over the class axis
    and its float16 -> float32 copy took ~12 of the 15 s this cost on a 512x512x200 CT);
    torch's argmax, like numpy's, returns the first of tied classes, so the labels are the same.
    """
    tensor = scores.detach().cpu() if isinstance(scores, torch.Tensor) else torch.from_numpy(scores)
    classes, depth = tensor.shape[:2]
    labels = np.empty((depth, *prepared.inplane_shape), dtype=label_dtype(classes - 1))
    for start in range(0, depth, _RESAMPLE_CHUNK):
        chunk = tensor[:, start : start + _RESAMPLE_CHUNK].float()
        if tuple(chunk.shape[-2:]) != tuple(prepared.inplane_shape):
            count = chunk.shape[1]
            chunk = functional.interpolate(
                chunk.reshape(classes * count, 1, *chunk.shape[-2:]),
                size=prepared.inplane_shape,
                mode="bilinear",
                align_corners=False,
            ).reshape(classes, count, *prepared.inplane_shape)
        labels[start : start + _RESAMPLE_CHUNK] = _first_max_class(chunk).numpy()
    return _to_volume_grid(labels, prepared, volume)


def _first_max_class(scores: torch.Tensor) -> torch.Tensor:
    """``argmax`` over dim 0 (the first maximal class on ties), as C - 1 elementwise passes:
    torch's and numpy's reductions over the outer axis run at a fraction of memory speed."""
    dtype = torch.uint8 if scores.shape[0] <= 256 else torch.int32
    best, index = scores[0], torch.zeros(scores.shape[1:], dtype=dtype)
    for label in range(1, scores.shape[0]):
        higher = scores[label] > best
        index[higher] = label
        best = torch.maximum(best, scores[label])
    return index


def restore_scores(
    scores: np.ndarray | torch.Tensor, prepared: PreparedScan, volume: Volume
) -> np.ndarray:
    """Per-class scores ``[C, D, H, W]`` -> float32 ``[*volume.shape, C]`` on the input grid."""
    scores = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    resized = _resize_slices(
        np.asarray(scores, dtype=np.float32), prepared.inplane_shape, nearest=False
    )
    return _to_volume_grid(np.moveaxis(resized, 0, -1), prepared, volume)


# ---------------------------------------------------------------------------------------------
# slice cache


def median_inplane_spacing(
    spacings_mm: list[tuple[float, float, float]], slice_axis: int | None
) -> tuple[float, float]:
    """The dataset's median in-plane spacing (the pre-training default target spacing)."""
    if not spacings_mm:
        raise InputError("no scans to compute a target spacing from")
    inplane = []
    for spacing in spacings_mm:
        axis = slice_axis if slice_axis is not None else choose_slice_axis(spacing)
        inplane.append([spacing[a] for a in range(3) if a != axis])
    median = np.median(np.asarray(inplane, dtype=np.float64), axis=0)
    return (float(median[0]), float(median[1]))


# The speed floor of the CT default spacing: a 2D U-Net's cost grows with the pixels per slice,
# and at a CT's native ~0.8 mm a 512² slice costs ~92 GFLOP at width 32, so 200 slices cannot
# finish in a minute on two CPU cores; at 1.5 mm the slices are ~273² (3.5x fewer pixels).
# MR keeps the median: its slices are small and its structures often thin.
CT_MIN_SPACING_MM = 1.5
SPACING_CHOICES = ("auto", "native")


def parse_spacing(text: str) -> str | float:
    """``--spacing``: ``auto``, ``native`` or a positive in-plane spacing in mm (a number).

    >>> parse_spacing("auto"), parse_spacing("2")
    ('auto', 2.0)
    """
    if text in SPACING_CHOICES:
        return text
    try:
        spacing_mm = float(text)
    except ValueError:
        spacing_mm = math.nan
    if not math.isfinite(spacing_mm) or spacing_mm <= 0:
        raise OptionError(
            "spacing", f"must be auto, native or a positive spacing in mm (e.g. 1.5), got {text!r}"
        )
    return spacing_mm


def default_target_spacing(
    spacings_mm: list[tuple[float, float, float]],
    modality: str,
    spacing: str | float = "auto",
) -> tuple[float, float] | None:
    """The in-plane spacing a new model is trained (and later run) at; stored in its bundle.

    ``auto`` (nnU-Net's rule, plus a speed floor): the median in-plane spacing of the scans,
    each axis raised to at least `CT_MIN_SPACING_MM` for CT; ``native``: ``None``, every scan at
    its own spacing; a number: that spacing on both in-plane axes.

    >>> default_target_spacing([(0.8, 0.8, 5.0), (0.7, 0.7, 3.0)], "CT")
    (1.5, 1.5)
    >>> default_target_spacing([(0.8, 0.8, 5.0)], "MR")
    (0.8, 0.8)
    """
    choice = parse_spacing(str(spacing))
    if choice == "native":
        return None
    if isinstance(choice, float):
        return (choice, choice)
    median = median_inplane_spacing(spacings_mm, None)
    if modality != "CT":
        return median
    return (max(median[0], CT_MIN_SPACING_MM), max(median[1], CT_MIN_SPACING_MM))


def coarsened(config: PreprocessConfig, volume: Volume, factor: float) -> PreprocessConfig:
    """``config`` with its in-plane target spacing ``factor`` times coarser for ``volume``.

    A bundle trained at a fixed spacing gets that spacing times ``factor``; a native-spacing
    bundle gets the scan's own in-plane spacing times ``factor``. Only the header is read.

    >>> ct = Volume(np.zeros((2, 2, 2)), np.diag([0.8, 0.8, 5.0, 1.0]))
    >>> coarsened(PreprocessConfig("CT", target_spacing_mm=(1.5, 1.5)), ct, 2).target_spacing_mm
    (3.0, 3.0)
    >>> coarsened(PreprocessConfig("CT"), ct, 2).target_spacing_mm
    (1.6, 1.6)
    """
    target = config.target_spacing_mm
    if target is None:
        _, spacing_mm = canonical_grid(volume)
        axis = config.slice_axis if config.slice_axis is not None else choose_slice_axis(spacing_mm)
        target = tuple(spacing_mm[a] for a in range(3) if a != axis)  # type: ignore[assignment]
    assert target is not None
    return replace(config, target_spacing_mm=(target[0] * factor, target[1] * factor))


@dataclass(frozen=True, eq=False)
class CachedScan:
    """A scan's slices as a read-only float16 memory map (and labels as uint8/uint16, if any)."""

    slices: np.ndarray
    labels: np.ndarray | None
    slice_axis: int
    source: Path


class SliceCache:
    """Preprocessed slices on disk, keyed by the scan's content hash and the preprocessing recipe.

    The training loop reads memory-mapped ``.npy`` files and never decodes NIfTI. Entries are
    written atomically; an entry that fails to load is rebuilt.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def key(self, content_hash: str, config: PreprocessConfig, label_hash: str | None) -> str:
        """The entry's name: image content + label content (if any) + the recipe (both hashes
        of the whole files, see `get_or_build`)."""
        slices_recipe = {k: v for k, v in config.to_dict().items() if k != "context"}
        recipe = json.dumps({"config": slices_recipe, "labels": label_hash}, sort_keys=True)
        return text_hash(f"{content_hash}|{recipe}")

    def get_or_build(
        self,
        image_path: Path,
        config: PreprocessConfig,
        *,
        label_path: Path | None = None,
        rebuild: bool = False,
    ) -> CachedScan:
        """Load the cached entry, or prepare the scan and cache it first.

        Image and label are keyed by a hash of their whole content, read here on every call
        (the index's fast header hash never keys training data): an edited file — even in the
        middle, with its size and mtime kept — gets a new entry instead of stale slices.
        """
        from salign_cli.io.hashing import whole_content_hash

        label_hash = whole_content_hash(label_path) if label_path is not None else None
        key = self.key(whole_content_hash(image_path), config, label_hash)
        slices_path = self.folder / f"{key}.npy"
        labels_path = self.folder / f"{key}.labels.npy"
        meta_path = self.folder / f"{key}.json"
        if not rebuild:
            cached = self._load(
                slices_path, labels_path, meta_path, image_path, label_path is not None
            )
            if cached is not None:
                return cached
        self.folder.mkdir(parents=True, exist_ok=True)
        volume = read_volume(image_path)
        labels = read_volume(label_path) if label_path is not None else None
        prepared = prepare_scan(volume, config, labels)
        with atomic_path(slices_path) as temporary:
            np.save(temporary, prepared.slices.astype(np.float16))
        if prepared.labels is not None:
            stored_as = label_dtype(int(prepared.labels.max(initial=0)))
            with atomic_path(labels_path) as temporary:
                np.save(temporary, prepared.labels.astype(stored_as))
        write_json(
            meta_path,
            {
                "source": str(image_path),
                "labels": str(label_path) if label_path else None,
                "slice_axis": prepared.slice_axis,
                "shape": list(prepared.slices.shape),
                "config": config.to_dict(),
            },
        )
        loaded = self._load(slices_path, labels_path, meta_path, image_path, label_path is not None)
        assert loaded is not None  # just written
        return loaded

    @staticmethod
    def _load(
        slices_path: Path, labels_path: Path, meta_path: Path, source: Path, with_labels: bool
    ) -> CachedScan | None:
        try:
            meta = json.loads(meta_path.read_text())
            slices = np.load(slices_path, mmap_mode="r")
            labels = np.load(labels_path, mmap_mode="r") if with_labels else None
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        if list(slices.shape) != meta.get("shape") or (
            labels is not None and labels.shape != slices.shape
        ):
            return None
        if not math.isfinite(float(slices[len(slices) // 2].astype(np.float32).sum())):
            return None
        return CachedScan(
            slices=slices, labels=labels, slice_axis=int(meta["slice_axis"]), source=source
        )
