"""Fine-tuning with a few labelled scans: what differs from pre-training, nothing more.

The stage picks the labelled scans (N drawn with the seed, or named by id) and keeps every other
labelled scan for validation; it initialises the whole U-Net from a bundle (the newest
pre-training run by default, ``"scratch"`` for none), gives it a new head for the dataset's
classes, and trains with the shared loop (`salign_cli.train.engine.train`: warm-up + cosine,
AMP, checkpoints, exact resume, metrics) as the `~salign_cli.train.recipe.FinetuneRecipe` says:
foreground-oversampled patches, batched augmentation on the device, cross-entropy + Dice, an
EMA of the weights. The exported weights (the EMA by default) are not selected on anything;
they are scored on the validation scans at full resolution on each scan's own grid
(`salign_cli.train.validation`, with the recipe's test-time mirroring), so the
validation Dice in the bundle is the Dice `salign segment` would reach on those scans. The one
choice validation makes is whether keeping the largest component of each class helps; the
bundle records it as an inference default.

A run folder ``runs/finetune-<timestamp>/`` holds ``checkpoints/``, ``metrics.jsonl``,
``report.json`` and ``bundle/`` (kind ``"finetuned"``), which ``salign segment`` uses by default.

Case selection [ours] (`salign_cli.train.scans`): the labelled case ids are sorted, permuted
with ``seed`` and the first N are taken, so for one seed the cases for N = 1 are among those for
N = 2, and so on (a smaller labelled set is always a subset of a larger one — Dice against N is
then a curve, not noise).

Why this module is a little over 600 lines: `finetune` tells the stage as one story (choose
scans → starting network → plan the batch → train → validate → bundle) that a reader should see
whole; every piece it calls already lives elsewhere (`scans`, `validation`, `recipe`,
`segmentation`, `engine`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch

from salign_cli.bundles.resolve import latest_bundle_spec
from salign_cli.data.augment import AugmentConfig
from salign_cli.data.preprocess import PreprocessConfig, SliceCache, mirror_axes, parse_spacing
from salign_cli.data.sampling import LabelledAndUnlabelled, LabelledSliceDataset
from salign_cli.device import resolve_device
from salign_cli.errors import InputError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.io.atomic import write_json
from salign_cli.metrics.aggregate import EvaluationSummary
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.train.checkpoint import resume_meta
from salign_cli.train.engine import (
    Reporter,
    RuntimeOptions,
    SilentReporter,
    TrainConfig,
    train,
)
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
    load_labelled_slices,
    resolve_labelled_cases,
    resolve_unlabelled_scans,
    seeded_order,
    split_cases,
)
from salign_cli.train.segmentation import SegmentationObjective, SemiSupervisedObjective
from salign_cli.train.validation import (
    dice_table,
    load_held_out,
    predict_held_out,
    score_predictions,
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


class FinetuneReporter(Reporter, Protocol):
    """A `Reporter` that also hears about slice-cache and validation progress."""

    def on_cache(self, done: int, total: int) -> None: ...

    def on_validation(self, done: int, total: int) -> None: ...

    def on_plan(self, description: str) -> None: ...


class SilentFinetuneReporter(SilentReporter):
    """Ignores progress; notes become Python warnings."""

    def on_cache(self, done: int, total: int) -> None:
        pass

    def on_plan(self, description: str) -> None:
        pass

    def on_validation(self, done: int, total: int) -> None:
        pass


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
    pre-trained at).
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

    def __post_init__(self) -> None:
        parse_spacing(str(self.spacing))
        if (self.labels is None) == (not self.case_ids):
            raise InputError("give either --labels N or --cases ID,ID,... (exactly one of them)")
        if self.labels is not None and self.labels < 1:
            raise InputError(f"--labels must be at least 1, got {self.labels}")
        if len(set(self.case_ids)) != len(self.case_ids):
            raise InputError(f"--cases lists a case twice: {','.join(self.case_ids)}")
        if self.max_validation_cases is not None and self.max_validation_cases < 0:
            raise InputError(
                f"--max-validation must be >= 0 (0 skips validation), got "
                f"{self.max_validation_cases}"
            )
        if self.profile not in PROFILE_CHOICES:
            raise InputError(
                f"--profile must be one of {', '.join(PROFILE_CHOICES)}, got {self.profile!r}"
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
        values = dict(payload)
        for name in ("case_ids", "exclude_case_ids"):
            values[name] = tuple(values.get(name, ()))
        if values.get("recipe") is not None:
            values["recipe"] = FinetuneRecipe.from_dict(values["recipe"])
        return cls(**values)


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run produced. ``validation`` is ``None`` when validation was skipped."""

    run_dir: Path
    bundle_dir: Path
    labelled_case_ids: tuple[str, ...]
    validation_case_ids: tuple[str, ...]
    class_names: dict[int, str]
    validation: EvaluationSummary | None
    report: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# the starting network


def load_base(base: str, modality: str, notify: Callable[[str], None] | None = None) -> Bundle:
    """The pre-trained (or fine-tuned) bundle to start from; it must be of the scans' modality."""
    from salign_cli.bundles.store import load_bundle

    bundle = load_bundle(base, notify=notify)
    if bundle.contract.modality != modality:
        raise InputError(
            f"--from {base}: a {bundle.contract.modality} bundle, but the labelled scans are "
            f"{modality}; fine-tune a bundle of the scans' modality (or --from scratch)"
        )
    return bundle


def continues_finetuned(base: Bundle | None, class_names: Sequence[str]) -> bool:
    """Whether ``base`` is a fine-tuned model of exactly these classes: then its head is kept
    and the plan takes a shorter schedule (more labels for the same task)."""
    return (
        base is not None
        and base.contract.kind == "finetuned"
        and list(base.contract.class_names) == list(class_names)
    )


def plan_overrides(
    options: FinetuneOptions, base: Bundle | None, class_names: Sequence[str] = ()
) -> PlanOverrides:
    """What the user's flags (and a base bundle's network) fix, leaving the rest to the plan:
    a base fixes spacing, depth and slice axis, and a 2.5D base its context too."""
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
        patch_size=None if options.size is None else (options.size, options.size),
        batch_size=options.batch_size,
        depth=depth,
        context=context,
        steps=options.steps,
        semi=_semi_fixed_by(options),
        slice_axis_from_base=base is not None,
        continues_finetuned=continues_finetuned(base, class_names),
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
        raise InputError(
            f"--from {base_spec}: {error}; pass --context to match the bundle"
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


# ---------------------------------------------------------------------------------------------
# the objective


@dataclass
class FinetuneTask:
    """The `TrainingTask` of fine-tuning (``slices_per_sample``: 2 with unlabelled slices)."""

    module: SegmentationObjective
    dataset: LabelledSliceDataset | LabelledAndUnlabelled
    slices_per_sample: int = 1


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


# ---------------------------------------------------------------------------------------------
# the stage


def finetune(
    folders: Sequence[Path] = (),
    *,
    workspace: Workspace | Path | str | None = None,
    base: str | None = None,
    options: FinetuneOptions | None = None,
    runtime: RuntimeOptions | None = None,
    resume: Path | bool = False,
    run_dir: Path | None = None,
    reporter: FinetuneReporter | None = None,
) -> FinetuneResult:
    """Fine-tune a bundle (or a scratch U-Net) on a few labelled scans; validate on the rest.

    ``folders``: labelled data (indexed first); empty = every labelled scan in the index.
    ``base``: a bundle folder, run folder or ``org/name[@rev]``; ``None`` = the newest
    pre-training run in the workspace; ``"scratch"`` = no pre-training. ``resume`` (a run
    folder, or ``True`` for the newest fine-tuning run) continues that run exactly with the
    options and cases stored in its checkpoint.

    Example::

        result = finetune(options=FinetuneOptions(labels=5))
        result.validation.overall_dice.mean   # Dice on every other labelled scan
    """
    space = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    space = space.ensure()
    runtime = runtime or RuntimeOptions()
    reporter = reporter or SilentFinetuneReporter()
    device = resolve_device(runtime.device)

    if resume:
        run_dir = space.run_to_resume("finetune", resume)
        stored = resume_meta(run_dir, "finetune", reporter.on_message)
        task_config = stored["task_config"]
        train_config = TrainConfig.from_dict(stored["train_config"])
        if "plan" not in task_config:
            raise InputError(
                f"{run_dir}: this run was made before fine-tuning plans were recorded and "
                "cannot be resumed; start a new run (salign finetune without --resume)"
            )
        plan = FinetunePlan.from_dict(task_config["plan"])
        options = FinetuneOptions.from_dict(task_config["options"])
        recipe = FinetuneRecipe.from_dict(task_config["recipe"])
        train_cases = [LabelledCase.from_dict(c) for c in task_config["labelled_cases"]]
        validation_cases = [LabelledCase.from_dict(c) for c in task_config["validation_cases"]]
        class_names = {int(k): v for k, v in task_config["classes"].items()}
        preprocess = PreprocessConfig.from_dict(task_config["preprocessing"])
        model = UNet2D(UNetConfig.from_dict(task_config["architecture"]))
        origin = task_config["origin"]
        unlabelled_scans = [ScanEntry.from_dict(e) for e in task_config["unlabelled_scans"]]
    else:
        if options is None:  # there is no sane default for how many scans to learn from
            raise InputError(
                "a new fine-tuning run needs options: FinetuneOptions(labels=N) or "
                "FinetuneOptions(case_ids=(...)); only a resumed run takes them from its checkpoint"
            )
        cases, dataset_names = resolve_labelled_cases(folders, space, reporter.on_message)
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
        validation_cases = [pool[i] for i in validation_ids]
        class_names = class_names_for(
            (v for c in pool.values() for v in c.label_values), dataset_names
        )
        recipe = options.resolved_recipe(device.type)
        recipe = dataclasses.replace(
            recipe, mirror=resolve_mirror(recipe.mirror, list(class_names.values()))
        )
        fingerprint = fingerprint_of(train_cases)
        modality = fingerprint.modality
        unlabelled_scans = []
        if recipe.semi.method != "none":
            unlabelled_scans = resolve_unlabelled_scans(
                options.unlabelled,
                folders,
                space,
                held_back=set(labelled_ids) | set(validation_ids) | excluded,
                modality=modality,
                notify=reporter.on_message,
            )
        base_spec = base or latest_bundle_spec(space, "pretrain")
        base_bundle = None
        if base_spec != SCRATCH:
            base_bundle = load_base(base_spec, modality, reporter.on_message)
        overrides = plan_overrides(options, base_bundle, _ordered_names(class_names))
        plan = plan_finetune(
            dataclasses.replace(fingerprint, unlabelled_scans=len(unlabelled_scans)),
            PlanBudget(recipe.batch_pixels, recipe.max_patch_px, recipe.steps),
            overrides,
        )
        wanted = recipe.semi.method != "none" and options.unlabelled != "none"
        if wanted and not (plan.semi and unlabelled_scans):
            reporter.on_message(
                "fine-tuning without semi-supervision: "
                + (plan.reasons["semi"] if unlabelled_scans else "no unlabelled scans found")
            )
        if not plan.semi:
            unlabelled_scans = []
        recipe = dataclasses.replace(
            recipe,
            context=plan.context,
            steps=plan.steps,
            patch_size=plan.patch_size,
            batch_size=plan.batch_size,
        )
        model, preprocess, origin = initial_network(
            base_bundle,
            len(class_names),
            plan,
            modality=modality,
            width=recipe.width,
            seed=options.seed,
            base_spec=base_spec,
            keep_head=overrides.continues_finetuned,
        )
        run_dir = Path(run_dir) if run_dir is not None else space.new_run_dir("finetune")
        run_dir.mkdir(parents=True, exist_ok=True)
        train_config = train_config_for(
            recipe, plan.batch_size, options.seed, options.checkpoint_every
        )
        task_config = {
            "stage": "finetune",
            "unlabelled_scans": [dataclasses.asdict(s) for s in unlabelled_scans],
            "options": options.to_dict(),
            "labelled_cases": [dataclasses.asdict(c) for c in train_cases],
            "validation_cases": [dataclasses.asdict(c) for c in validation_cases],
            "classes": {str(k): v for k, v in class_names.items()},
            "preprocessing": preprocess.to_dict(),
            "architecture": model.config.to_dict(),
            "origin": origin,
            "recipe": recipe.to_dict(),
            "plan": plan.to_dict(),
        }

    semi = recipe.semi.method if unlabelled_scans else "none"
    # the bundle records what ran: no unlabelled scans means no semi-supervision
    recipe = dataclasses.replace(recipe, semi=dataclasses.replace(recipe.semi, method=semi))
    reporter.on_plan(
        f"{recipe.profile} profile, width {model.config.width}, mirror {recipe.mirror}, "
        + (
            f"semi-supervised ({semi}) with {len(unlabelled_scans)} unlabelled scans"
            if semi != "none"
            else "supervised"
        )
        + "".join(f"\n  {line}" for line in plan.describe())
    )
    cache = SliceCache(space.cache_dir)
    slices = load_labelled_slices(train_cases, preprocess, cache, reporter)
    _check_label_range(train_cases, slices.labels, len(class_names))
    assert recipe.patch_size is not None
    patch_size = recipe.patch_size
    labelled_data = LabelledSliceDataset(
        slices.images,
        slices.labels,
        patch_size=patch_size,
        augment=recipe.augment,
        context=recipe.context,
        foreground_fraction=recipe.foreground_fraction,
        mirror_axes=[mirror_axes(recipe.mirror, axis) for axis in slices.slice_axes],
        seed=train_config.seed,
        names=[c.image_path for c in train_cases],
    )
    lr_scale = 1.0 if origin["base_model"] is None else recipe.pretrained_lr_scale
    task: FinetuneTask
    if semi == "none":
        objective = SegmentationObjective(
            model,
            patch_size=patch_size,
            dice_background=recipe.dice_background,
            ema_decay=recipe.ema_decay,
            pretrained_lr_scale=lr_scale,
        )
        task = FinetuneTask(module=objective, dataset=labelled_data)
    else:
        unlabelled = load_labelled_slices(unlabelled_scans, preprocess, cache, reporter)
        unlabelled_data = LabelledSliceDataset(
            unlabelled.images,
            None,
            patch_size=patch_size,
            augment=recipe.augment.strong() if semi == "fixmatch" else recipe.augment,
            context=recipe.context,
            foreground_fraction=0.0,
            mirror_axes=[mirror_axes(recipe.mirror, axis) for axis in unlabelled.slice_axes],
            seed=train_config.seed + 1,  # an independent stream
            names=[s.image_path for s in unlabelled_scans],
        )
        assert recipe.ema_decay is not None  # the teacher (checked by the recipe)
        objective = SemiSupervisedObjective(
            model,
            patch_size=patch_size,
            semi=dataclasses.replace(recipe.semi, method=semi),
            total_steps=train_config.steps,
            ema_decay=recipe.ema_decay,
            dice_background=recipe.dice_background,
            pretrained_lr_scale=lr_scale,
            seed=train_config.seed,
        )
        task = FinetuneTask(
            module=objective,
            dataset=LabelledAndUnlabelled(labelled_data, unlabelled_data),
            slices_per_sample=LabelledAndUnlabelled.slices_per_sample,
        )
    result = train(
        task,
        train_config,
        run_dir,
        task_config=task_config,
        runtime=runtime,
        resume=bool(resume),
        reporter=reporter,
    )
    exported = objective.exported(recipe.export).cpu().eval()

    inference = InferenceDefaults(
        tta=recipe.tta, mirror=recipe.mirror, largest_component=plan.largest_component
    )
    validation = None
    if validation_cases:
        held_out = (load_held_out(c, preprocess) for c in validation_cases)
        predictions = predict_held_out(
            exported,
            preprocess,
            held_out,
            inference=inference,
            device=device,
            progress=lambda done: reporter.on_validation(done, len(validation_cases)),
        )
        plain = score_predictions(predictions, class_names)
        largest = score_predictions(predictions, class_names, largest_component=True)
        # the one choice validation makes: it confirms or overrules the plan's largest-component
        # rule (keep only the largest part of each class when that scores higher)
        inference = dataclasses.replace(
            inference, largest_component=largest.overall_dice.mean > plain.overall_dice.mean
        )
        validation = largest if inference.largest_component else plain
    finetuning = {
        "labelled_case_ids": [c.case_id for c in train_cases],
        "validation_case_ids": [c.case_id for c in validation_cases],
        "excluded_case_ids": list(options.exclude_case_ids),
        "seed": options.seed,
        "selection": "given" if options.case_ids else "seeded",
        "steps": result.steps,
        "train": train_config.to_dict(),
        "recipe": recipe.to_dict(),
        "plan": plan.to_dict(),
        "semi_supervision": {
            "method": semi,
            "unlabelled_scans": len(unlabelled_scans),
            "unlabelled_source": options.unlabelled,
        },
        "options": options.to_dict(),
        "run": run_dir.name,
        **origin,
    }
    evaluation = None
    if validation is not None:
        cap = options.max_validation_cases
        cap = DEFAULT_MAX_VALIDATION if cap is None else cap
        evaluation = {
            "per_class_dice": {
                c.name: c.dice.mean for c in validation.classes if math.isfinite(c.dice.mean)
            },
            "dice": dice_table(validation),
            "held_out_cases": len(validation.cases),
            "split": f"validation (at most {cap} labelled scans not used for training)",
            "empty_mask_rule": validation.to_dict()["empty_mask_rule"],
            "inference": inference.to_dict(),
        }
    bundle_dir = _write_bundle(
        run_dir / "bundle", exported, preprocess, class_names, finetuning, evaluation, inference
    )
    report = {
        "kind": "finetune",
        "run_dir": str(run_dir),
        "bundle": str(bundle_dir),
        **finetuning,
        "classes": {str(k): v for k, v in class_names.items()},
        "inference": inference.to_dict(),
        "resumed_from_step": result.start_step,
        "elapsed_s": result.elapsed_s,
        "slices_per_s": result.slices_per_s,
        "final_metrics": result.last_metrics,
        "device": str(device),
        "validation": None if validation is None else validation.to_dict(),
    }
    write_json(run_dir / "report.json", report)
    return FinetuneResult(
        run_dir=run_dir,
        bundle_dir=bundle_dir,
        labelled_case_ids=tuple(c.case_id for c in train_cases),
        validation_case_ids=tuple(c.case_id for c in validation_cases),
        class_names=class_names,
        validation=validation,
        report=report,
    )


def _capped(case_ids: list[str], cap: int | None, seed: int) -> list[str]:
    cap = DEFAULT_MAX_VALIDATION if cap is None else cap
    if cap >= len(case_ids):
        return case_ids
    return sorted(seeded_order(case_ids, seed + 1)[:cap])


def _check_label_range(
    cases: Sequence[LabelledCase], labels: Sequence[np.ndarray], num_classes: int
) -> None:
    for case, label in zip(cases, labels, strict=True):
        largest = int(np.max(label)) if label.size else 0
        if largest >= num_classes:
            raise InputError(
                f"{case.label_path}: holds class {largest} but the model has {num_classes} "
                "classes (ids 0..N-1); re-index the data or fix dataset.json's labels"
            )


def _write_bundle(
    folder: Path,
    model: UNet2D,
    preprocess: PreprocessConfig,
    class_names: Mapping[int, str],
    finetuning: dict[str, Any],
    evaluation: dict[str, Any] | None,
    inference: InferenceDefaults,
) -> Path:
    from salign_cli.bundles.contract import BundleContract
    from salign_cli.bundles.store import save_bundle

    contract = BundleContract(
        kind="finetuned",
        architecture=model.config,
        modality=preprocess.modality,
        classes={str(k): v for k, v in class_names.items()},
        preprocessing=preprocess,
        pretraining=finetuning.get("pretraining"),
        finetuning={k: v for k, v in finetuning.items() if k != "pretraining"},
        evaluation=evaluation,
        inference=inference,
    )
    return save_bundle(folder, model.state_dict(), contract)
