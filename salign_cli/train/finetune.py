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

The stage reads as setup → task → train → validate → bundle. The setup — which scans, the
recipe after the plan, the network's shape and origin, the schedule — is one typed value,
`~salign_cli.train.finetune_setup.FinetuneSetup`, made once for a new run (`plan_setup`) and
read back from the checkpoint on resume (`FinetuneSetup.from_checkpoint`); every default of the
stage lives in that module (`FinetuneOptions`, the profile's recipe, the plan).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from salign_cli.data.preprocess import PreprocessConfig, SliceCache, mirror_axes
from salign_cli.data.sampling import LabelledAndUnlabelled, LabelledSliceDataset
from salign_cli.device import resolve_device
from salign_cli.errors import InputError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.io.atomic import write_json
from salign_cli.metrics.aggregate import EvaluationSummary
from salign_cli.model.unet import UNet2D
from salign_cli.train.checkpoint import resume_meta
from salign_cli.train.distributed import distributed_from_env
from salign_cli.train.engine import (
    Reporter,
    RuntimeOptions,
    SilentReporter,
    TrainResult,
    seconds_per_step,
    train,
)
from salign_cli.train.finetune_setup import (
    DEFAULT_MAX_VALIDATION,
    FinetuneOptions,
    FinetuneSetup,
    plan_setup,
)
from salign_cli.train.recipe import coarse_field_of_view, coarse_patch_size
from salign_cli.train.scans import LabelledCase, load_cached_slices
from salign_cli.train.segmentation import SegmentationObjective, SemiSupervisedObjective
from salign_cli.train.step_costs import Phase, StepCosts
from salign_cli.train.validation import (
    dice_table,
    load_held_out,
    predict_held_out,
    score_predictions,
)
from salign_cli.workspace import Workspace


class FinetuneReporter(Reporter, Protocol):
    """A `Reporter` that also hears about slice-cache and validation progress, the plan, and
    what the run's steps cost on this machine (``on_estimate``, before training starts)."""

    def on_cache(self, done: int, total: int) -> None: ...

    def on_validation(self, done: int, total: int) -> None: ...

    def on_plan(self, description: str) -> None: ...

    def on_estimate(self, costs: StepCosts) -> None: ...


class SilentFinetuneReporter(SilentReporter):
    """Ignores progress; notes become Python warnings."""

    def on_cache(self, done: int, total: int) -> None:
        pass

    def on_plan(self, description: str) -> None:
        pass

    def on_estimate(self, costs: StepCosts) -> None:
        pass

    def on_validation(self, done: int, total: int) -> None:
        pass


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
# the objective


@dataclass
class FinetuneTask:
    """The `TrainingTask` of fine-tuning (``slices_per_sample``: 2 with unlabelled slices)."""

    module: SegmentationObjective
    dataset: LabelledSliceDataset | LabelledAndUnlabelled
    slices_per_sample: int = 1


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
        meta = resume_meta(run_dir, "finetune", reporter.on_message)
        setup = FinetuneSetup.from_checkpoint(meta, run_dir)
        start_step = int(meta.get("sampler", {}).get("position", 0))
        model = UNet2D(setup.architecture)  # the checkpoint brings the weights
    else:
        if options is None:  # there is no sane default for how many scans to learn from
            raise InputError(
                "a new fine-tuning run needs options: FinetuneOptions(labels=N) or "
                "FinetuneOptions(case_ids=(...)); only a resumed run takes them from its checkpoint"
            )
        setup, model = plan_setup(folders, space, base, options, device.type, reporter.on_message)
        run_dir = Path(run_dir) if run_dir is not None else space.new_run_dir("finetune")
        run_dir.mkdir(parents=True, exist_ok=True)
        start_step = 0
    reporter.on_plan(setup.describe())
    task, objective = _training_task(setup, model, SliceCache(space.cache_dir), reporter)
    costs = None if distributed_from_env().active else _step_costs(task, setup, device, start_step)
    if costs is not None:
        reporter.on_estimate(costs)
    result = train(
        task,
        setup.train_config,
        run_dir,
        task_config=setup.to_task_config(),
        runtime=runtime,
        resume=bool(resume),
        reporter=reporter,
    )
    exported = objective.exported(setup.recipe.export).cpu().eval()
    validation, inference = _validate(setup, exported, device, reporter)
    return _export(setup, run_dir, exported, validation, inference, result, costs, device)


def _training_task(
    setup: FinetuneSetup, model: UNet2D, cache: SliceCache, reporter: FinetuneReporter
) -> tuple[FinetuneTask, SegmentationObjective]:
    """The datasets (labelled, and unlabelled when semi-supervised) and the objective."""
    recipe, seed = setup.recipe, setup.train_config.seed
    slices = load_cached_slices(setup.labelled_cases, setup.preprocess, cache, reporter)
    _check_label_range(setup.labelled_cases, slices.labels, len(setup.class_names))
    assert recipe.patch_size is not None  # the plan always sets it
    patch_size = recipe.patch_size
    coarse_steps = round(recipe.coarse_fraction * setup.train_config.steps)
    coarse_patch = coarse_patch_size(patch_size, model.config.depth)
    # the canvases must hold the field of view of a half-resolution step too
    field_of_view = coarse_field_of_view(patch_size, coarse_patch) if coarse_steps else patch_size
    labelled_data = LabelledSliceDataset(
        slices.images,
        slices.labels,
        patch_size=field_of_view,
        augment=recipe.augment,
        context=recipe.context,
        foreground_fraction=recipe.foreground_fraction,
        mirror_axes=[mirror_axes(recipe.mirror, axis) for axis in slices.slice_axes],
        seed=seed,
        names=[c.image_path for c in setup.labelled_cases],
    )
    if setup.semi == "none":
        objective = SegmentationObjective(
            model,
            patch_size=patch_size,
            dice_background=recipe.dice_background,
            ema_decay=recipe.ema_decay,
            pretrained_lr_scale=setup.lr_scale,
            coarse_steps=coarse_steps,
            coarse_patch=coarse_patch,
        )
        return FinetuneTask(module=objective, dataset=labelled_data), objective
    unlabelled = load_cached_slices(setup.unlabelled_scans, setup.preprocess, cache, reporter)
    unlabelled_data = LabelledSliceDataset(
        unlabelled.images,
        None,
        patch_size=field_of_view,
        augment=recipe.augment.strong() if setup.semi == "fixmatch" else recipe.augment,
        context=recipe.context,
        foreground_fraction=0.0,
        mirror_axes=[mirror_axes(recipe.mirror, axis) for axis in unlabelled.slice_axes],
        seed=seed + 1,  # an independent stream
        names=[s.image_path for s in setup.unlabelled_scans],
    )
    assert recipe.ema_decay is not None  # the teacher (checked by the recipe)
    semi_objective = SemiSupervisedObjective(
        model,
        patch_size=patch_size,
        semi=setup.recipe_as_run.semi,
        total_steps=setup.train_config.steps,
        ema_decay=recipe.ema_decay,
        dice_background=recipe.dice_background,
        pretrained_lr_scale=setup.lr_scale,
        seed=seed,
        coarse_steps=coarse_steps,
        coarse_patch=coarse_patch,
    )
    task = FinetuneTask(
        module=semi_objective,
        dataset=LabelledAndUnlabelled(labelled_data, unlabelled_data),
        slices_per_sample=LabelledAndUnlabelled.slices_per_sample,
    )
    return task, semi_objective


def _step_costs(
    task: FinetuneTask, setup: FinetuneSetup, device: torch.device, start_step: int
) -> StepCosts:
    """The run's steps timed on ``device`` before it trains (`seconds_per_step`), one phase at
    a time: half-resolution steps (coarse-to-fine), supervised ones and — for a
    semi-supervised run — steps with the teacher and the unlabelled half, each timed on a copy
    of the objective at the phase's first step. Phases already behind a resumed run are not
    timed. Not under torchrun: one process's step is not a DDP step."""
    config, objective = setup.train_config, task.module
    coarse = objective.coarse_steps
    supervised = (
        objective.supervised_steps
        if isinstance(objective, SemiSupervisedObjective)
        else config.steps
    )
    ends = sorted({end for end in (coarse, supervised) if 0 < end < config.steps} | {config.steps})
    phases, begin = [], 0
    for end in ends:
        resolution = "half-resolution" if begin < coarse else "full-resolution" if coarse else ""
        teacher = "semi-supervised" if begin >= supervised else ""
        kind = " ".join(word for word in (resolution, teacher) if word)
        seconds = 0.0
        if end > start_step:
            at_phase = copy.deepcopy(objective)
            at_phase.steps_done.fill_(begin)
            seconds = seconds_per_step(at_phase, task.dataset, config, device)
        phases.append(Phase(end, seconds, kind))
        begin = end
    return StepCosts(config.steps, tuple(phases), start_step)


def _validate(
    setup: FinetuneSetup, exported: UNet2D, device: torch.device, reporter: FinetuneReporter
) -> tuple[EvaluationSummary | None, InferenceDefaults]:
    """Dice of the exported weights on the validation scans (``None`` without any), and the
    inference defaults the bundle records."""
    recipe = setup.recipe
    inference = InferenceDefaults(
        tta=recipe.tta, mirror=recipe.mirror, largest_component=setup.plan.largest_component
    )
    cases = setup.validation_cases
    if not cases:
        return None, inference
    held_out = (load_held_out(c, setup.preprocess) for c in cases)
    predictions = predict_held_out(
        exported,
        setup.preprocess,
        held_out,
        inference=inference,
        device=device,
        progress=lambda done: reporter.on_validation(done, len(cases)),
    )
    plain = score_predictions(predictions, setup.class_names)
    largest = score_predictions(predictions, setup.class_names, largest_component=True)
    # the one choice validation makes: it confirms or overrules the plan's largest-component
    # rule (keep only the largest part of each class when that scores higher)
    keep_largest = largest.overall_dice.mean > plain.overall_dice.mean
    inference = dataclasses.replace(inference, largest_component=keep_largest)
    return (largest if keep_largest else plain), inference


def _export(
    setup: FinetuneSetup,
    run_dir: Path,
    exported: UNet2D,
    validation: EvaluationSummary | None,
    inference: InferenceDefaults,
    result: TrainResult,
    costs: StepCosts | None,
    device: torch.device,
) -> FinetuneResult:
    """The bundle and ``report.json`` of the run, and the result `finetune` returns."""
    options, class_names = setup.options, setup.class_names
    finetuning = {
        "labelled_case_ids": [c.case_id for c in setup.labelled_cases],
        "validation_case_ids": [c.case_id for c in setup.validation_cases],
        "excluded_case_ids": list(options.exclude_case_ids),
        "seed": options.seed,
        "selection": "given" if options.case_ids else "seeded",
        "steps": result.steps,
        "train": setup.train_config.to_dict(),
        "recipe": setup.recipe_as_run.to_dict(),
        "plan": setup.plan.to_dict(),
        "semi_supervision": {
            "method": setup.semi,
            "unlabelled_scans": len(setup.unlabelled_scans),
            "unlabelled_source": options.unlabelled,
        },
        "options": options.to_dict(),
        "run": run_dir.name,
        **setup.origin,
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
        run_dir / "bundle",
        exported,
        setup.preprocess,
        class_names,
        finetuning,
        evaluation,
        inference,
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
        "step_costs": None if costs is None else costs.to_dict(),
        "slices_per_s": result.slices_per_s,
        "final_metrics": result.last_metrics,
        "device": str(device),
        "validation": None if validation is None else validation.to_dict(),
    }
    write_json(run_dir / "report.json", report)
    return FinetuneResult(
        run_dir=run_dir,
        bundle_dir=bundle_dir,
        labelled_case_ids=tuple(c.case_id for c in setup.labelled_cases),
        validation_case_ids=tuple(c.case_id for c in setup.validation_cases),
        class_names=class_names,
        validation=validation,
        report=report,
    )


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
