"""The fine-tuning recipe: one typed config, two device defaults, recorded in every bundle.

Everything that decides how a fine-tune trains and what inference then does by default lives in
`FinetuneRecipe`; ``salign finetune``'s flags only override its fields. Two profiles:

- ``cpu`` — fits ``salign finetune --labels 5`` on MSD Hippocampus in under 30 minutes on two
  cores with the default semi-supervision (17 min measured alone on both cores, 26-29 min at
  one thread beside another run), about 6 minutes supervised (fp32: these CPUs have no bf16
  units, and bf16 autocast on them is ~10x slower);
- ``gpu`` — the field's budget (>= 100k slice samples, width 32).

Why these values (numbers in docs/benchmarks.md, all measured on validation scans, never on the
test split): AdamW 1e-3 with a 10 % warm-up replaced 1e-2 with a ~12-step warm-up, which wiped a
pre-trained initialisation and never learnt small structures well; training with the same
padding as inference (`salign_cli.data.preprocess.OUTSIDE_SCAN`) was the largest single fix.
The CPU profile then took a one-cycle schedule (peak 3e-3, 30 % warm-up, cosine to zero):
+0.006 validation Dice on both hippocampus (k = 5, supervised) and LA 2018 (k = 4,
semi-supervised), both seeds up on each; the GPU profile keeps 1e-3 (not measured there).

Patch size: the median in-plane size of the labelled slices rounded to a multiple of
``2**depth`` — up, as nnU-Net plans it, or (the cpu profile) to the nearest — capped by
``max_patch_px``; the batch then holds about ``batch_pixels`` pixels, so a CT with 256²
patches takes fewer slices per step than a hippocampus crop with 32×48 patches and a step
costs about the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from salign_cli.config import known_fields
from salign_cli.data.augment import AugmentConfig
from salign_cli.errors import InputError, OptionError

Profile = Literal["cpu", "gpu"]

# The fine-tuning augmentation: nnU-Net's 2D spatial ranges, with wider and more frequent
# intensity ops than nnU-Net's (noise variance up to 0.3 instead of 0.1, brightness 0.6–1.4,
# contrast 0.5–1.5, gamma 0.5–2, each drawn for 30–40 % of the slices instead of 10–30 %).
# Why: with a handful of labelled scans the network otherwise learns their particular
# intensities. On LA 2018 with 4 labels (validation, 2 seeds, docs/benchmarks.md) the atria that
# are dimmer or noisier than any labelled one were lost (0.02–0.25 Dice); with these ranges
# validation Dice rose from 0.761 to 0.794 and the worst such scan from 0.02–0.07 to 0.84–0.86.
# The MR bias field (``bias_p``) is drawn only where the plan says a scan's field of view is
# large enough to be shaded by its coil (`salign_cli.train.plan.BIAS_FIELD_MIN_FOV_MM`).
WIDE_INTENSITY_AUGMENT = AugmentConfig(
    noise_p=0.3,
    noise_variance=(0.0, 0.3),
    brightness_p=0.3,
    brightness_range=(0.6, 1.4),
    contrast_p=0.3,
    contrast_range=(0.5, 1.5),
    gamma_p=0.4,
    gamma_range=(0.5, 2.0),
    bias_p=0.3,
)
PROFILES: tuple[str, ...] = ("cpu", "gpu")
Mirror = Literal["auto", "lr", "none", "all"]
MIRRORS: tuple[str, ...] = ("auto", "lr", "none", "all")
ExportWeights = Literal["ema", "final"]
SemiMethod = Literal["none", "fixmatch", "bcp"]
PatchRounding = Literal["up", "nearest"]
PATCH_ROUNDINGS: tuple[PatchRounding, ...] = ("up", "nearest")
SEMI_METHODS: tuple[str, ...] = ("none", "fixmatch", "bcp")
# Words in class names that mean a structure has a side: mirroring left-right would teach the
# network that a left kidney may look like a right one (TotalSegmentator's classes do this).
_LATERAL_WORDS = ("left", "right")


@dataclass(frozen=True)
class SemiConfig:
    """How the unlabelled scans take part in fine-tuning (`salign_cli.train.segmentation`).

    ``method``: ``fixmatch`` (mean teacher, confidence-thresholded pseudo-labels on weak →
    strong views, CutMix between unlabelled slices), ``bcp`` (bidirectional copy-paste between
    labelled and unlabelled slices) or ``none``. Both start after ``start_fraction`` of the steps
    (supervised until then, so the teacher has something to teach; BCP's own first stage) and
    ramp the unlabelled term up over ``ramp_fraction`` of the steps. ``threshold`` and
    ``unlabelled_weight`` are FixMatch's τ and λ_u; ``unlabelled_fraction`` is the share of a
    step's unlabelled slices FixMatch uses (teacher and student; 1 = as many as labelled ones,
    fewer make a semi-supervised step cheaper; BCP pairs them one to one); ``pasted_weight``
    weights BCP's pseudo-labelled part (its u_weight) and ``box_fraction`` is the side of the
    pasted box (and of the CutMix box) as a fraction of the patch.
    """

    method: SemiMethod = "fixmatch"
    threshold: float = 0.95
    unlabelled_weight: float = 1.0
    unlabelled_fraction: float = 1.0
    pasted_weight: float = 0.5
    start_fraction: float = 0.2
    ramp_fraction: float = 0.2
    box_fraction: float = 2 / 3

    def __post_init__(self) -> None:
        if self.method not in SEMI_METHODS:
            raise OptionError(
                "semi", f"must be one of {', '.join(SEMI_METHODS)}, got {self.method!r}"
            )
        if not 0 <= self.threshold < 1 or not 0 < self.box_fraction < 1:
            raise InputError("semi-supervision threshold and box fraction must lie in [0, 1)")
        if not 0 < self.unlabelled_fraction <= 1:
            raise InputError(
                f"the unlabelled fraction must lie in (0, 1], got {self.unlabelled_fraction}"
            )
        if self.unlabelled_weight < 0 or self.pasted_weight < 0:
            raise InputError("semi-supervision weights must be >= 0")
        if not 0 <= self.start_fraction < 1 or not 0 <= self.ramp_fraction <= 1:
            raise InputError("semi-supervision start and ramp fractions must lie in [0, 1)")


@dataclass(frozen=True)
class FinetuneRecipe:
    """How fine-tuning trains, and the inference defaults it leaves in the bundle.

    - network: ``width`` (U-Net width, only used from scratch), ``context`` (neighbouring slices
      on each side given as extra input channels: 2.5D; the bundle records it and `salign
      segment` stacks the same neighbours);
    - schedule: ``steps`` optimiser steps of about ``batch_pixels`` pixels each (``batch_size``
      fixes the slice count instead; the plan may raise the steps up to ``max_steps_factor``
      times for data whose labelled slices a step visits rarely, and with ``max_slice_passes``
      it takes fewer slices a step for data whose labelled slices the steps would draw more
      often than that), AdamW at ``lr`` with a
      linear warm-up over ``warmup_fraction`` of the steps, then cosine to
      ``lr * min_lr_ratio``; the first ``coarse_fraction`` of the steps see their patch at half
      resolution (twice the spacing, about a quarter of the pixels: `coarse_patch_size`);
      ``pretrained_lr_scale`` multiplies the rate of every layer that came from a pre-trained
      bundle (the new head always trains at ``lr``; ``None``: the plan's, 0.3 from a SAL
      pre-training on rarely drawn slices and 1 otherwise,
      `salign_cli.train.plan.PRETRAINED_LR_SCALE`);
    - patch: the median labelled slice rounded to the U-Net's multiple, ``up`` (whole slices,
      padded) or to the ``nearest`` (a crop up to half a multiple inside the slice: MSD
      Hippocampus' 35×50 slices train on 32×48 instead of 48×64, whose padding was 43 % of
      the pixels); ``patch_size`` fixes it;
    - data: ``foreground_fraction`` of the samples is centred on a labelled voxel (nnU-Net's
      oversampling), ``augment`` (ranges of `AugmentConfig`; its ``mirror_axes`` is replaced
      for each scan by what ``mirror`` allows along that scan's slice axis), ``mirror`` (which in-plane axes may
      be flipped: ``lr`` = only the left-right one, ``none``, ``all``; ``auto`` = ``lr`` unless a
      class name has a side, see `resolve_mirror`);
    - loss: cross-entropy + soft Dice, the Dice over foreground classes only unless
      ``dice_background``;
    - weights: ``ema_decay`` keeps an exponential moving average of the weights (``None``: off),
      ``export`` chooses which weights the bundle gets;
    - unlabelled scans: ``semi`` (`SemiConfig`), used when the run has unlabelled scans;
    - inference defaults: ``tta`` averages over the mirrored views the network was trained on.
    """

    profile: Profile = "cpu"
    width: int = 16
    context: int = 1
    steps: int = 1000
    max_steps_factor: float = 2.0
    max_slice_passes: int | None = None
    batch_size: int | None = None
    batch_pixels: int = 32 * 48 * 64
    max_patch_px: int = 256
    patch_size: tuple[int, int] | None = None
    patch_rounding: PatchRounding = "up"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.01
    coarse_fraction: float = 0.0
    pretrained_lr_scale: float | None = None
    foreground_fraction: float = 0.33
    mirror: Mirror = "auto"
    augment: AugmentConfig = WIDE_INTENSITY_AUGMENT
    dice_background: bool = False
    ema_decay: float | None = 0.99
    export: ExportWeights = "ema"
    tta: bool = True
    semi: SemiConfig = field(default_factory=SemiConfig)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise OptionError(
                "profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}"
            )
        if self.patch_rounding not in PATCH_ROUNDINGS:
            raise OptionError(
                "patch_rounding",
                f"must be one of {', '.join(PATCH_ROUNDINGS)}, got {self.patch_rounding!r}",
            )
        if self.mirror not in MIRRORS:
            raise OptionError("mirror", f"must be one of {', '.join(MIRRORS)}, got {self.mirror!r}")
        if self.export not in ("ema", "final"):
            raise InputError(f"export must be 'ema' or 'final', got {self.export!r}")
        for name in ("width", "steps", "batch_pixels", "max_patch_px"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("batch_size", "max_slice_passes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionError(name, f"must be at least 1, got {value}")
        if not self.max_steps_factor >= 1:
            raise OptionError(
                "max_steps_factor", f"must be at least 1, got {self.max_steps_factor}"
            )
        if self.context < 0:
            raise OptionError("context", f"must be >= 0 slices, got {self.context}")
        if not self.lr > 0:
            raise OptionError("lr", f"must be positive, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.foreground_fraction <= 1:
            raise InputError("warm-up and foreground fractions must lie in [0, 1)")
        if not 0 <= self.coarse_fraction < 1:
            raise OptionError("coarse_fraction", f"must lie in [0, 1), got {self.coarse_fraction}")
        if self.pretrained_lr_scale is not None and not 0 < self.pretrained_lr_scale <= 1:
            raise OptionError(
                "pretrained_lr_scale", f"must be in (0, 1], got {self.pretrained_lr_scale}"
            )
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise InputError(f"EMA decay must be in (0, 1), got {self.ema_decay}")
        if (self.export == "ema" or self.semi.method != "none") and self.ema_decay is None:
            raise InputError(
                "the EMA is exported (and is the semi-supervised teacher): it needs a decay"
            )
        if self.patch_size is not None and min(self.patch_size) < 8:
            raise InputError(f"patch size must be at least 8 pixels, got {self.patch_size}")

    @property
    def in_channels(self) -> int:
        """Input channels of the network: the slice and ``context`` neighbours on each side."""
        return 2 * self.context + 1

    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["augment"] = self.augment.to_dict()
        payload["semi"] = dataclasses.asdict(self.semi)
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FinetuneRecipe:
        values = known_fields(cls, payload, "fine-tuning recipe")
        if "augment" in values:
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        if "semi" in values:
            values["semi"] = SemiConfig(
                **known_fields(SemiConfig, values["semi"], "semi-supervision")
            )
        if values.get("patch_size") is not None:
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> FinetuneRecipe:
        """A copy with the given fields replaced; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


# The cpu profile's measured choices (docs/benchmarks.md): the one-cycle schedule, labelled
# slices drawn at most ~100 times (fewer slices a step where 1,000 steps would draw more),
# patches rounded to the nearest multiple (a crop inside the slice, not padding around it),
# and FixMatch on half a step's unlabelled slices from 40 % of the steps (20 % before) — all
# but the first for time, at no validation loss beyond 0.005 on hippocampus k = 5 or LA 2018
# k = 4. Hippocampus k = 1 pays 0.011 of validation Dice for them (four seeds), a stated trade-off.
CPU_RECIPE = FinetuneRecipe(
    lr=3e-3,
    warmup_fraction=0.3,
    min_lr_ratio=0.0,
    max_slice_passes=100,
    patch_rounding="nearest",
    semi=SemiConfig(unlabelled_fraction=0.5, start_fraction=0.4),
)
GPU_RECIPE = FinetuneRecipe(
    profile="gpu",
    width=32,
    steps=2000,
    max_steps_factor=1.0,
    batch_pixels=64 * 48 * 64,
    max_patch_px=512,
    pretrained_lr_scale=1.0,  # the plan's 0.3 from SAL was measured on the cpu profile only
)


def recipe_for(profile: str) -> FinetuneRecipe:
    """The default recipe of a profile (``cpu`` or ``gpu``)."""
    if profile not in PROFILES:
        raise OptionError("profile", f"must be one of auto, {', '.join(PROFILES)}, got {profile!r}")
    return GPU_RECIPE if profile == "gpu" else CPU_RECIPE


def profile_for_device(device_type: str) -> Profile:
    """``gpu`` on CUDA, ``cpu`` elsewhere (MPS trains like a small GPU but has no bf16 path)."""
    return "gpu" if device_type == "cuda" else "cpu"


def patch_size_for(
    slice_shapes: Sequence[tuple[int, int]],
    depth: int,
    max_patch_px: int,
    rounding: PatchRounding = "up",
) -> tuple[int, int]:
    """Median in-plane slice shape, rounded (``up``: a patch holds a whole slice; ``nearest``:
    a crop at most half a multiple inside it) to a multiple of ``2**depth``, capped.

    >>> patch_size_for([(35, 50), (31, 40), (43, 59)], 4, 256)
    (48, 64)
    >>> patch_size_for([(35, 50), (31, 40), (43, 59)], 4, 256, "nearest")
    (32, 48)
    """
    if not slice_shapes:
        raise InputError("no labelled slices to plan a patch size from")
    multiple = 2**depth
    result = []
    for axis in range(2):
        sizes = sorted(shape[axis] for shape in slice_shapes)
        median = sizes[len(sizes) // 2]
        whole = median / multiple
        rounded = max(multiple, (math.ceil(whole) if rounding == "up" else round(whole)) * multiple)
        result.append(min(rounded, max(multiple, max_patch_px // multiple * multiple)))
    return (result[0], result[1])


def coarse_patch_size(patch_size: tuple[int, int], depth: int) -> tuple[int, int]:
    """The patch of a half-resolution step: half of each side, rounded up to a multiple of
    ``2**depth`` (the U-Net pads to that multiple anyway, so the rounding shows it scan instead of
    padding). Sampled at half resolution it covers at least the full patch's field of view.

    >>> coarse_patch_size((48, 64), 4), coarse_patch_size((128, 96), 4)
    ((32, 32), (64, 48))
    """
    multiple = 2**depth
    halves = (max(multiple, math.ceil(n / 2 / multiple) * multiple) for n in patch_size)
    return (next(halves), next(halves))


def coarse_field_of_view(
    patch_size: tuple[int, int], coarse_patch: tuple[int, int]
) -> tuple[int, int]:
    """The source pixels both the patch and the half-resolution ``coarse_patch`` need (the
    sampler's canvas is cut around it), each side keeping the patch's parity so that identity
    parameters still cut the full patch exactly from the canvas' centre.

    >>> coarse_field_of_view((48, 64), (32, 32)), coarse_field_of_view((35, 64), (32, 32))
    ((64, 64), (65, 64))
    """
    sides = []
    for full, coarse in zip(patch_size, coarse_patch, strict=True):
        extra = max(0, 2 * coarse - full)
        sides.append(full + extra + extra % 2)
    return (sides[0], sides[1])


def slices_per_step(patch_size: tuple[int, int], batch_pixels: int) -> int:
    """As many slices of ``patch_size`` as fill ``batch_pixels`` (at least 2, at most 256).

    >>> slices_per_step((48, 64), 32 * 48 * 64), slices_per_step((128, 96), 32 * 48 * 64)
    (32, 8)
    """
    return int(min(256, max(2, round(batch_pixels / (patch_size[0] * patch_size[1])))))


def resolve_mirror(mirror: str, class_names: Sequence[str]) -> Mirror:
    """``auto`` → ``lr``, unless a class name has a side (``kidney_left``): then ``none``,
    because a left-right flip would teach the network to call a left kidney right.

    >>> resolve_mirror("auto", ["background", "anterior"]), resolve_mirror("auto", ["lung_left"])
    ('lr', 'none')
    """
    if mirror != "auto":
        return mirror  # type: ignore[return-value]
    for name in class_names:
        words = name.lower().replace("-", "_").replace(" ", "_").split("_")
        if any(word in _LATERAL_WORDS for word in words):
            return "none"
    return "lr"
