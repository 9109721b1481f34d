"""What a fine-tuning run is, decided once: the options, the setup derived from them, and the
starting network.

`FinetuneOptions` is what the user asked for (the typed mirror of ``salign finetune``'s flags,
with every default of the stage: the recipe of the profile, then the plan). `plan_setup` turns
options + data + device into a `FinetuneSetup`: which scans train, validate and serve as
unlabelled data, the classes, the recipe after the plan (`salign_cli.train.plan`), the
preprocessing and the network's shape, where its weights came from, and the engine's schedule.
The setup is stored in every checkpoint (`FinetuneSetup.to_task_config`), and resuming is
`FinetuneSetup.from_checkpoint`: the new-run path and the resume path meet in one typed value,
so the stage (`salign_cli.train.finetune`) reads as setup → task → train → validate → bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from salign_cli.bundles.resolve import latest_bundle_spec
from salign_cli.config import known_fields
from salign_cli.data.augment import AugmentConfig
from salign_cli.data.preprocess import PreprocessConfig, parse_spacing
from salign_cli.errors import InputError, OptionError
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.train.engine import TrainConfig
from salign_cli.train.plan import (
    FinetunePlan,
    PlanBudget,
    PlanOverrides,
    fingerprint_of,
    plan_finetune,
)
from salign_cli.train.recipe import (
    FinetuneRecipe,
    SemiMethod,
    profile_for_device,
    recipe_for,
    resolve_mirror,
)
from salign_cli.train.scans import (
    LabelledCase,
    ScanEntry,
    class_names_for,
    resolve_labelled_cases,
    resolve_unlabelled_scans,
    seeded_order,
    split_cases,
)
from salign_cli.workspace import Workspace

if TYPE_CHECKING:
    from salign_cli.bundles.store import Bundle
    from salign_cli.io.modality import Modality

SCRATCH = "scratch"
PROFILE_CHOICES = ("auto", "cpu", "gpu")
# Validation scans when not told: enough for a stable mean, and on a fully labelled dataset the
# other labelled scans stay available as unlabelled data for semi-supervision.
DEFAULT_MAX_VALIDATION = 25


@dataclass(frozen=True)
class FinetuneOptions:
    """Which scans to learn from and how (the typed mirror of ``salign finetune``'s flags).

    Exactly one of ``labels`` (N scans drawn with ``seed``) and ``case_ids`` (named scans) is
    given. ``exclude_case_ids`` are never used, neither for training nor for validation (a test
    split). ``max_validation_cases`` caps validation (drawn with ``seed``; ``0`` skips it,
    ``None`` = every other labelled scan).

    How to train is a `FinetuneRecipe`: ``recipe`` when given, else the default of ``profile``
    (``auto``: ``gpu`` on CUDA, ``cpu`` elsewhere). The remaining fields override single recipe
    fields when not ``None``: ``size`` a square patch, ``augment=False`` switches augmentation
    off; ``width`` applies only to ``--from scratch``, and so does ``spacing`` (``auto``,
    ``native`` or mm, see `default_target_spacing`; a base bundle keeps the spacing it was
    pre-trained at). ``bias_field`` fixes whether the MR bias-field augmentation is drawn
    (``None``: planned from the scans' field of view).
    """

    labels: int | None = None
    case_ids: tuple[str, ...] = ()
    exclude_case_ids: tuple[str, ...] = ()
    seed: int = 0
    profile: str = "auto"
    recipe: FinetuneRecipe | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    width: int | None = None
    context: int | None = None
    mirror: str | None = None
    size: int | None = None
    augment: bool = True
    semi: str | None = None
    unlabelled: str = "auto"
    checkpoint_every: int = 100
    max_validation_cases: int | None = None
    spacing: str | float = "auto"
    bias_field: bool | None = None

    def __post_init__(self) -> None:
        parse_spacing(str(self.spacing))
        if (self.labels is None) == (not self.case_ids):
            raise InputError("give either a number of labels or case ids (exactly one of them)")
        if self.labels is not None and self.labels < 1:
            raise OptionError("labels", f"must be at least 1, got {self.labels}")
        if len(set(self.case_ids)) != len(self.case_ids):
            raise OptionError("case_ids", f"list a case twice: {','.join(self.case_ids)}")
        if self.max_validation_cases is not None and self.max_validation_cases < 0:
            raise OptionError(
                "max_validation_cases",
                f"must be >= 0 (0 skips validation), got {self.max_validation_cases}",
            )
        if self.profile not in PROFILE_CHOICES:
            raise OptionError(
                "profile", f"must be one of {', '.join(PROFILE_CHOICES)}, got {self.profile!r}"
            )
        self.resolved_recipe("cpu")  # validate the overrides now, not after the slice cache

    def resolved_recipe(self, device_type: str) -> FinetuneRecipe:
        """The recipe this run trains with on a device of ``device_type``."""
        profile = profile_for_device(device_type) if self.profile == "auto" else self.profile
        base = self.recipe or recipe_for(profile)
        recipe = base.with_overrides(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            width=self.width,
            context=self.context,
            mirror=self.mirror,
            patch_size=None if self.size is None else (self.size, self.size),
        )
        if not self.augment:
            recipe = dataclasses.replace(recipe, augment=AugmentConfig(enabled=False))
        if self.semi is not None:
            # SemiConfig.__post_init__ checks the name (a clear error for a typo)
            method = cast(SemiMethod, self.semi)
            recipe = dataclasses.replace(
                recipe, semi=dataclasses.replace(recipe.semi, method=method)
            )
        return recipe

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["recipe"] = None if self.recipe is None else self.recipe.to_dict()
        return payload

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FinetuneOptions:
        values = known_fields(cls, payload, "fine-tuning options")
        for name in ("case_ids", "exclude_case_ids"):
            values[name] = tuple(values.get(name, ()))
        if values.get("recipe") is not None:
            values["recipe"] = FinetuneRecipe.from_dict(values["recipe"])
        return cls(**values)


@dataclass(frozen=True)
class FinetuneSetup:
    """Everything a fine-tuning run does, derived once (`plan_setup`) and stored in each
    checkpoint (`to_task_config`), so a resumed run (`from_checkpoint`) is the same run.

    ``recipe`` is the profile's recipe after the flags and the plan (context, steps, patch,
    batch); ``semi`` is what actually runs (``none`` without unlabelled scans). ``origin`` says
    where the starting weights came from (``base_model`` is ``None`` from scratch).
    """

    options: FinetuneOptions
    recipe: FinetuneRecipe
    plan: FinetunePlan
    labelled_cases: tuple[LabelledCase, ...]
    validation_cases: tuple[LabelledCase, ...]
    unlabelled_scans: tuple[ScanEntry, ...]
    class_names: dict[int, str]
    preprocess: PreprocessConfig
    architecture: UNetConfig
    origin: dict[str, Any]
    train_config: TrainConfig

    @property
    def semi(self) -> str:
        """The semi-supervised method that runs: the recipe's, or none without unlabelled scans."""
        return self.recipe.semi.method if self.unlabelled_scans else "none"

    @property
    def recipe_as_run(self) -> FinetuneRecipe:
        """The recipe the bundle records: its semi-supervision is what ran."""
        semi = dataclasses.replace(self.recipe.semi, method=cast(SemiMethod, self.semi))
        return dataclasses.replace(self.recipe, semi=semi)

    @property
    def lr_scale(self) -> float:
        """Learning-rate scale of the pre-trained weights (1 from scratch); the recipe holds the
        plan's (`plan_setup`)."""
        scale = self.recipe.pretrained_lr_scale
        return 1.0 if self.origin["base_model"] is None or scale is None else scale

    def describe(self) -> str:
        """The plan line `finetune` prints before training, one reason per choice below it."""
        semi = (
            f"semi-supervised ({self.semi}) with {len(self.unlabelled_scans)} unlabelled scans"
            if self.semi != "none"
            else "supervised"
        )
        return (
            f"{self.recipe.profile} profile, width {self.architecture.width}, "
            f"mirror {self.recipe.mirror}, {semi}"
            + "".join(f"\n  {line}" for line in self.plan.describe())
        )

    def to_task_config(self) -> dict[str, Any]:
        """The JSON-ready record every checkpoint stores (the engine keeps ``train_config``)."""
        return {
            "stage": "finetune",
            "unlabelled_scans": [dataclasses.asdict(s) for s in self.unlabelled_scans],
            "options": self.options.to_dict(),
            "labelled_cases": [dataclasses.asdict(c) for c in self.labelled_cases],
            "validation_cases": [dataclasses.asdict(c) for c in self.validation_cases],
            "classes": {str(k): v for k, v in self.class_names.items()},
            "preprocessing": self.preprocess.to_dict(),
            "architecture": self.architecture.to_dict(),
            "origin": self.origin,
            "recipe": self.recipe.to_dict(),
            "plan": self.plan.to_dict(),
        }

    @classmethod
    def from_checkpoint(cls, stored: Mapping[str, Any], run_dir: Path) -> FinetuneSetup:
        """The setup a checkpoint's sidecar recorded (`resume_meta`'s answer for ``run_dir``)."""
        task_config = stored["task_config"]
        if "plan" not in task_config:
            raise InputError(
                f"{run_dir}: this run was made before fine-tuning plans were recorded and "
                "cannot be resumed; start a new run (salign finetune without --resume)"
            )
        return cls(
            options=FinetuneOptions.from_dict(task_config["options"]),
            recipe=FinetuneRecipe.from_dict(task_config["recipe"]),
            plan=FinetunePlan.from_dict(task_config["plan"]),
            labelled_cases=tuple(LabelledCase.from_dict(c) for c in task_config["labelled_cases"]),
            validation_cases=tuple(
                LabelledCase.from_dict(c) for c in task_config["validation_cases"]
            ),
            unlabelled_scans=tuple(ScanEntry.from_dict(e) for e in task_config["unlabelled_scans"]),
            class_names={int(k): v for k, v in task_config["classes"].items()},
            preprocess=PreprocessConfig.from_dict(task_config["preprocessing"]),
            architecture=UNetConfig.from_dict(task_config["architecture"]),
            origin=task_config["origin"],
            train_config=TrainConfig.from_dict(stored["train_config"]),
        )


def plan_setup(
    folders: Sequence[Path],
    space: Workspace,
    base: str | None,
    options: FinetuneOptions,
    device_type: str,
    notify: Callable[[str], None],
) -> tuple[FinetuneSetup, UNet2D]:
    """A new run's setup and its starting network, in the order the choices depend on each
    other: the labelled scans and their split → classes → recipe → unlabelled scans → the base
    bundle → the plan (from the labelled scans' fingerprint) → the network."""
    cases, dataset_names = resolve_labelled_cases(folders, space, notify)
    excluded = set(options.exclude_case_ids)
    unknown = sorted(excluded - {c.case_id for c in cases})
    if unknown:
        # a held-out id that matches nothing means the test split is not held out at all
        raise InputError(
            f"excluded case ids not found among the labelled scans: {', '.join(unknown[:5])}; "
            "check the ids against `salign index --json`"
        )
    pool = {c.case_id: c for c in cases if c.case_id not in excluded}
    labelled_ids, validation_ids = split_cases(
        list(pool), labels=options.labels, chosen=options.case_ids, seed=options.seed
    )
    validation_ids = _capped(validation_ids, options.max_validation_cases, options.seed)
    train_cases = [pool[i] for i in labelled_ids]
    class_names = class_names_for((v for c in pool.values() for v in c.label_values), dataset_names)
    recipe = options.resolved_recipe(device_type)
    recipe = dataclasses.replace(
        recipe, mirror=resolve_mirror(recipe.mirror, list(class_names.values()))
    )
    fingerprint = fingerprint_of(train_cases)
    unlabelled_scans = []
    if recipe.semi.method != "none":
        unlabelled_scans = resolve_unlabelled_scans(
            options.unlabelled,
            folders,
            space,
            held_back=set(labelled_ids) | set(validation_ids) | excluded,
            modality=fingerprint.modality,
            notify=notify,
        )
    base_spec = base or latest_bundle_spec(space, "pretrain")
    base_bundle = None
    if base_spec != SCRATCH:
        base_bundle = load_base(base_spec, fingerprint.modality, notify)
    overrides = plan_overrides(options, recipe, base_bundle, _ordered_names(class_names))
    plan = plan_finetune(
        dataclasses.replace(fingerprint, unlabelled_scans=len(unlabelled_scans)),
        PlanBudget.of(recipe),
        overrides,
    )
    wanted = recipe.semi.method != "none" and options.unlabelled != "none"
    if wanted and not (plan.semi and unlabelled_scans):
        notify(
            "fine-tuning without semi-supervision: "
            + (plan.reasons["semi"] if unlabelled_scans else "no unlabelled scans found")
        )
    recipe = dataclasses.replace(
        recipe,
        context=plan.context,
        steps=plan.steps,
        patch_size=plan.patch_size,
        batch_size=plan.batch_size,
        augment=recipe.augment if plan.bias_field else recipe.augment.without_bias_field(),
        pretrained_lr_scale=plan.pretrained_lr_scale,
    )
    model, preprocess, origin = initial_network(
        base_bundle,
        len(class_names),
        plan,
        modality=fingerprint.modality,
        width=recipe.width,
        seed=options.seed,
        base_spec=base_spec,
        keep_head=overrides.continues_finetuned,
    )
    setup = FinetuneSetup(
        options=options,
        recipe=recipe,
        plan=plan,
        labelled_cases=tuple(train_cases),
        validation_cases=tuple(pool[i] for i in validation_ids),
        unlabelled_scans=tuple(unlabelled_scans) if plan.semi else (),
        class_names=class_names,
        preprocess=preprocess,
        architecture=model.config,
        origin=origin,
        train_config=train_config_for(
            recipe, plan.batch_size, options.seed, options.checkpoint_every
        ),
    )
    return setup, model


# ---------------------------------------------------------------------------------------------
# the starting network


def load_base(base: str, modality: str, notify: Callable[[str], None] | None = None) -> Bundle:
    """The pre-trained (or fine-tuned) bundle to start from; it must be of the scans' modality."""
    from salign_cli.bundles.store import load_bundle

    bundle = load_bundle(base, notify=notify)
    if bundle.contract.modality != modality:
        raise OptionError(
            "from_bundle",
            f"{base}: a {bundle.contract.modality} bundle, but the labelled scans are "
            f"{modality}; fine-tune a bundle of the scans' modality (or --from scratch)",
        )
    return bundle


def is_alignment_pretraining(base: Bundle | None) -> bool:
    """Whether ``base`` is a SAL pre-training: the plan then raises the steps less and, where
    the labelled slices are drawn rarely, trains its layers slower than the new head (what was
    measured; an untrained ``--method scratch`` or a PCL bundle keeps the from-scratch rules)."""
    return (
        base is not None
        and base.contract.kind == "pretrained"
        and (base.contract.pretraining or {}).get("method") == "sal"
    )


def continues_finetuned(base: Bundle | None, class_names: Sequence[str]) -> bool:
    """Whether ``base`` is a fine-tuned model of exactly these classes: then its head is kept
    and the plan takes a shorter schedule (more labels for the same task)."""
    return (
        base is not None
        and base.contract.kind == "finetuned"
        and list(base.contract.class_names) == list(class_names)
    )


def plan_overrides(
    options: FinetuneOptions,
    recipe: FinetuneRecipe,
    base: Bundle | None,
    class_names: Sequence[str] = (),
) -> PlanOverrides:
    """What the user's flags (and a base bundle's network) fix, leaving the rest to the plan:
    a base fixes spacing, depth and slice axis, and a 2.5D base its context too. The patch and
    the slices a step come from ``recipe`` (the run's, ``--size`` and ``--batch-size`` already
    in it), so a recipe that fixes them is obeyed rather than re-planned."""
    spacing: str | float | tuple[float, float] = options.spacing
    depth, context = None, options.context
    if base is not None:
        bundle_spacing = base.contract.preprocessing.target_spacing_mm
        spacing = "native" if bundle_spacing is None else bundle_spacing
        depth = base.contract.architecture.depth
        if context is None and base.contract.architecture.in_channels > 1:
            context = base.contract.preprocessing.context
    return PlanOverrides(
        spacing=spacing,
        patch_size=recipe.patch_size,
        batch_size=recipe.batch_size,
        depth=depth,
        context=context,
        steps=options.steps,
        semi=_semi_fixed_by(options),
        bias_field=options.bias_field,
        slice_axis_from_base=base is not None,
        continues_finetuned=continues_finetuned(base, class_names),
        from_alignment=is_alignment_pretraining(base),
        pretrained_lr_scale=recipe.pretrained_lr_scale,
    )


def _ordered_names(class_names: Mapping[int, str]) -> list[str]:
    return [class_names[label] for label in sorted(class_names)]


def _semi_fixed_by(options: FinetuneOptions) -> bool | None:
    """``--semi`` or an explicit ``--unlabelled`` decide semi-supervision; else the plan does."""
    if options.semi is not None:
        return options.semi != "none"
    if options.unlabelled != "auto":
        return options.unlabelled != "none"
    return None


def initial_network(
    base: Bundle | None,
    num_classes: int,
    plan: FinetunePlan,
    *,
    modality: str,
    width: int,
    seed: int,
    base_spec: str = SCRATCH,
    keep_head: bool = False,
) -> tuple[UNet2D, PreprocessConfig, dict[str, Any]]:
    """The U-Net to fine-tune, the preprocessing it expects, and where it came from.

    From a bundle: every U-Net weight is loaded and the head is replaced by a fresh one for
    ``num_classes``; the bundle's preprocessing is kept (the network was trained on it), and a
    1-channel network takes the plan's context neighbours per side through
    `UNet2D.expand_input_channels`. From scratch (``base=None``): a seeded network of the
    plan's depth, preprocessing at the plan's spacing.
    """
    torch.manual_seed(seed)
    in_channels = 2 * plan.context + 1
    if base is None:
        config = UNetConfig(
            num_classes=num_classes, width=width, in_channels=in_channels, depth=plan.depth
        )
        preprocess = PreprocessConfig(
            modality=cast("Modality", modality),
            target_spacing_mm=plan.target_spacing_mm,
            context=plan.context,
        )
        return UNet2D(config), preprocess, {"base_model": None, "pretraining": None}
    from salign_cli.bundles.store import build_model

    contract = base.contract
    model = build_model(base)
    try:
        model.expand_input_channels(in_channels)
    except ValueError as error:
        raise OptionError(
            "from_bundle", f"{base_spec}: {error}; pass --context to match the bundle"
        ) from None
    torch.manual_seed(seed)
    if not keep_head:  # a fine-tuned model of the same classes keeps what its head learnt
        model.replace_head(num_classes)
    provenance = {
        "base_model": base_spec,
        "base_kind": contract.kind,
        "base_weights_sha256": contract.weights_sha256,
        "pretraining": contract.pretraining,
    }
    return model, dataclasses.replace(contract.preprocessing, context=plan.context), provenance


def train_config_for(
    recipe: FinetuneRecipe, batch_size: int, seed: int, checkpoint_every: int
) -> TrainConfig:
    """The engine's schedule for a recipe: AdamW, warm-up, cosine, clipping."""
    return TrainConfig(
        steps=recipe.steps,
        batch_size=batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup_steps=recipe.warmup_steps(),
        min_lr_ratio=recipe.min_lr_ratio,
        seed=seed,
        checkpoint_every=min(checkpoint_every, recipe.steps),
    )


def _capped(case_ids: list[str], cap: int | None, seed: int) -> list[str]:
    cap = DEFAULT_MAX_VALIDATION if cap is None else cap
    if cap >= len(case_ids):
        return case_ids
    return sorted(seeded_order(case_ids, seed + 1)[:cap])
