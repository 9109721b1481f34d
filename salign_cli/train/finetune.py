"""Fine-tuning with a few labelled scans: what differs from pre-training, nothing more.

The stage picks the labelled scans (N drawn with the seed, or named by id) and keeps every other
labelled scan for validation; it initialises the whole U-Net from a bundle (the newest
pre-training run by default, ``"scratch"`` for none), gives it a new head for the dataset's
classes, and trains with the shared loop (`salign_cli.train.engine.train`: warm-up + cosine,
AMP, checkpoints, exact resume, metrics) as the `~salign_cli.train.recipe.FinetuneRecipe` says:
foreground-oversampled patches, batched augmentation on the device, cross-entropy + Dice, an
EMA of the weights. The exported weights (the EMA by default) are not selected on anything;
they are scored on the validation scans at full resolution on each scan's own grid
(`salign_cli.infer.predictor.Predictor`, with the recipe's test-time mirroring), so the
validation Dice in the bundle is the Dice `salign segment` would reach on those scans. The one
choice validation makes is whether keeping the largest component of each class helps; the
bundle records it as an inference default.

A run folder ``runs/finetune-<timestamp>/`` holds ``checkpoints/``, ``metrics.jsonl``,
``report.json`` and ``bundle/`` (kind ``"finetuned"``), which ``salign segment`` uses by default.

Case selection [ours]: the labelled case ids are sorted, permuted with ``seed`` and the first N
are taken, so for one seed the cases for N = 1 are among those for N = 2, and so on (a smaller
labelled set is always a subset of a larger one — Dice against N is then a curve, not noise).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from salign_cli.data.augment import AugmentConfig
from salign_cli.data.preprocess import (
    PreparedScan,
    PreprocessConfig,
    SliceCache,
    mirror_axes,
    parse_spacing,
    prepare_scan,
)
from salign_cli.data.sampling import LabelledAndUnlabelled, LabelledSliceDataset
from salign_cli.device import resolve_device
from salign_cli.errors import InputError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.io.atomic import write_json
from salign_cli.io.volume import Volume, read_volume
from salign_cli.metrics import (
    CaseResult,
    ClassResult,
    EvaluationSummary,
    confusion_counts,
    dice_from_counts,
    label_array,
    summarise,
)
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.train.engine import (
    Reporter,
    RuntimeOptions,
    SilentReporter,
    TrainConfig,
    latest_checkpoint,
    train,
)
from salign_cli.train.pretrain import ScanEntry, preprocess_config_for, resolve_scans
from salign_cli.train.recipe import (
    FinetuneRecipe,
    SemiMethod,
    batch_size_for,
    patch_size_for,
    profile_for_device,
    recipe_for,
    resolve_mirror,
)
from salign_cli.train.segmentation import SegmentationObjective, SemiSupervisedObjective
from salign_cli.workspace import Workspace

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
class LabelledCase:
    """A labelled scan: where its image and label are, and the hash the slice cache is keyed by."""

    case_id: str
    image_path: str
    label_path: str
    content_hash: str
    modality: str
    spacing_mm: tuple[float, float, float]
    label_values: tuple[int, ...] = ()  # classes the index found in the label file

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> LabelledCase:
        return cls(
            **{
                **payload,
                "spacing_mm": tuple(payload["spacing_mm"]),
                "label_values": tuple(payload.get("label_values", ())),
            }
        )


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
# the labelled scans


def resolve_labelled_cases(
    folders: Sequence[Path], workspace: Workspace, notify: Callable[[str], None] | None = None
) -> tuple[list[LabelledCase], dict[int, str]]:
    """Labelled scans under ``folders`` (indexed first) or every labelled scan in the index.

    Also returns the class names ``dataset.json`` gives for them (``{}`` when none). Labelled
    scans with index errors are skipped, each with a note through ``notify``. Raises
    `InputError` when there is no usable labelled scan.
    """
    from salign_cli.data import index as scan_index

    roots = [Path(f).expanduser().resolve() for f in folders]  # as the index stores them
    for folder in roots:
        if not folder.is_dir():
            raise InputError(f"--data {folder}: no such folder; pass a folder of labelled scans")
    if roots:
        scan_index.index_folders(roots, workspace)
    records = [
        r
        for r in scan_index.load_index(workspace)
        if r.is_labelled
        and (
            not roots or any(r.image_path == root or root in r.image_path.parents for root in roots)
        )
    ]
    if notify:
        for note in scan_index.skipped_scan_notes(records):
            notify(note)
    records = scan_index.labelled_scans(records)
    if not records:
        where = ", ".join(map(str, roots)) or str(workspace.index_path)
        raise InputError(
            f"{where}: no usable labelled scan (image with a label file, e.g. imagesTr/ + "
            "labelsTr/); index labelled data with `salign index DIR` or pass --data DIR"
        )
    datasets = scan_index.load_datasets(workspace)
    names: dict[int, str] = {}
    for record in records:
        info = datasets.get(record.dataset_root)
        if info is not None and info.label_names:
            names = {**dict(info.label_names), **names}
    cases = [
        LabelledCase(
            case_id=r.case_id,
            image_path=str(r.image_path),
            label_path=str(r.label_path),
            content_hash=str(r.content_hash),
            modality=r.modality,
            spacing_mm=tuple(float(s) for s in r.spacing_mm),  # type: ignore[union-attr,arg-type]
            label_values=tuple(int(v) for v in r.label_values or ()),
        )
        for r in records
    ]
    return cases, names


def seeded_order(case_ids: Iterable[str], seed: int) -> list[str]:
    """The sorted ids permuted by ``seed``: labelled sets are prefixes of this order."""
    ordered = sorted(case_ids)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation]


def split_cases(
    case_ids: Sequence[str],
    *,
    labels: int | None = None,
    chosen: Sequence[str] = (),
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """``(labelled, validation)`` ids: N drawn with ``seed`` (or ``chosen``), the rest validation.

    Both lists are sorted. Raises `InputError` for an unknown id or too few cases.

    >>> split_cases(["a", "b", "c"], chosen=["c"])
    (['c'], ['a', 'b'])
    """
    available = set(case_ids)
    if chosen:
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise InputError(
                f"--cases {','.join(unknown)}: not among the {len(available)} labelled scans "
                f"(e.g. {', '.join(sorted(available)[:3])}); check the ids with `salign index`"
            )
        labelled = set(chosen)
    else:
        assert labels is not None
        if labels > len(available):
            raise InputError(
                f"--labels {labels}: only {len(available)} labelled scans are available; "
                "pass a smaller N or index more labelled scans"
            )
        labelled = set(seeded_order(available, seed)[:labels])
    return sorted(labelled), sorted(available - labelled)


def class_names_for(
    label_values: Iterable[int], dataset_names: Mapping[int, str]
) -> dict[int, str]:
    """Class id → name for ids 0..max: ``dataset.json``'s names, else ``class_<id>``.

    The number of classes is one more than the largest id seen in the labels or named in
    ``dataset.json``; id 0 is ``background`` unless ``dataset.json`` says otherwise.
    """
    largest = max([0, *label_values, *dataset_names])
    names = {0: "background"} | {int(k): str(v) for k, v in dataset_names.items()}
    result = {i: names.get(i) or f"class_{i}" for i in range(largest + 1)}
    if len(set(result.values())) != len(result):
        result = {i: f"{name}_{i}" for i, name in result.items()}  # keep names unique
    if len(result) < 2:
        raise InputError("every label file is empty (only background); nothing to learn")
    return result


@dataclass(frozen=True, eq=False)
class LabelledSlices:
    """Scans as the network sees them: float16 image slices and (labelled scans) integer label
    slices ``[D, H, W]`` per scan — memory maps from the cache — and each canonical slice axis."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    slice_axes: list[int]

    @property
    def slice_shapes(self) -> list[tuple[int, int]]:
        return [(int(v.shape[1]), int(v.shape[2])) for v in self.images]


def load_labelled_slices(
    cases: Sequence[LabelledCase | ScanEntry],
    config: PreprocessConfig,
    cache: SliceCache,
    reporter: FinetuneReporter | None = None,
) -> LabelledSlices:
    """Every case from the slice cache (built in threads where missing); labels for the
    `LabelledCase` ones (a run passes either labelled cases or unlabelled `ScanEntry` ones)."""

    def one(case: LabelledCase | ScanEntry) -> tuple[np.ndarray, np.ndarray | None, int]:
        label_path = Path(case.label_path) if isinstance(case, LabelledCase) else None
        cached = cache.get_or_build(Path(case.image_path), config, label_path=label_path)
        return cached.slices, cached.labels, cached.slice_axis

    loaded = LabelledSlices([], [], [])
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(cases)))) as pool:
        for done, (image, label, axis) in enumerate(pool.map(one, cases), start=1):
            loaded.images.append(image)
            if label is not None:
                loaded.labels.append(label)
            loaded.slice_axes.append(axis)
            if reporter is not None:
                reporter.on_cache(done, len(cases))
    return loaded


def resolve_unlabelled_scans(
    source: str,
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    held_back: set[str],
    modality: str,
    notify: Callable[[str], None] | None = None,
) -> list[ScanEntry]:
    """The unlabelled scans of a run (see `FinetuneOptions.unlabelled`).

    ``auto`` takes every usable indexed scan under ``folders`` (the whole index when none)
    whose case id is not ``held_back`` (the labelled, validation and excluded ids); a folder
    is indexed and taken whole. Scans of another modality are left out with a note.
    """
    if source == "none":
        return []
    if source == "auto":
        scans = resolve_scans(folders, workspace, index_first=False, notify=notify)
        scans = [scan for scan in scans if scan.case_id not in held_back]
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise InputError(
                f"--unlabelled {source}: no such folder; pass a folder of scans, auto or none"
            )
        scans = resolve_scans([folder], workspace, notify=notify)
    other = [scan for scan in scans if scan.modality != modality]
    if other and notify is not None:
        notify(
            f"{len(other)} unlabelled scan(s) are not {modality} (e.g. {other[0].image_path}); "
            "left out of semi-supervision"
        )
    return [scan for scan in scans if scan.modality == modality]


# ---------------------------------------------------------------------------------------------
# the starting network


def base_bundle_spec(base: str | None, workspace: Workspace) -> str:
    """``--from`` → something `load_bundle` takes; ``None`` = the newest pre-training run.

    A run folder (``runs/pretrain-…``) means its ``bundle/``.
    """
    if base is None:
        run = workspace.latest_run("pretrain")
        if run is None:
            raise InputError(
                f"{workspace.runs_dir}: no finished pre-training run; run `salign pretrain "
                "SCANS` first, or pass --from scratch (or --from a bundle / org/name)"
            )
        return str(run / "bundle")
    candidate = Path(base).expanduser()
    if (candidate / "bundle" / "salign.json").is_file():
        return str(candidate / "bundle")
    return base


def initial_network(
    base: str,
    num_classes: int,
    cases: Sequence[LabelledCase],
    *,
    width: int,
    seed: int,
    context: int = 0,
    spacing: str | float = "auto",
    notify: Callable[[str], None] | None = None,
) -> tuple[UNet2D, PreprocessConfig, dict[str, Any]]:
    """The U-Net to fine-tune, the preprocessing it expects, and where it came from.

    From a bundle: every U-Net weight is loaded and the head is replaced by a fresh one for
    ``num_classes``; the bundle's preprocessing is kept (the network was trained on it), and a
    1-channel network takes ``context`` neighbours per side through
    `UNet2D.expand_input_channels`. From scratch: a seeded network and the cases' own
    preprocessing at ``spacing`` (``auto``: median in-plane spacing, CT floored at 1.5 mm).
    """
    torch.manual_seed(seed)
    in_channels = 2 * context + 1
    if base == SCRATCH:
        model = UNet2D(UNetConfig(num_classes=num_classes, width=width, in_channels=in_channels))
        preprocess = dataclasses.replace(preprocess_config_for(cases, spacing), context=context)  # type: ignore[arg-type]
        return model, preprocess, {"base_model": None, "pretraining": None}
    from salign_cli.model.bundle import build_model, load_bundle

    bundle = load_bundle(base, report=notify)
    contract = bundle.contract
    modalities = sorted({case.modality for case in cases})
    if modalities != [contract.modality]:
        raise InputError(
            f"--from {base}: a {contract.modality} bundle, but the labelled scans are "
            f"{'/'.join(modalities)}; fine-tune a bundle of the scans' modality (or --from scratch)"
        )
    model = build_model(bundle)
    try:
        model.expand_input_channels(in_channels)
    except ValueError as error:
        raise InputError(f"--from {base}: {error}; pass --context to match the bundle") from None
    torch.manual_seed(seed)
    model.replace_head(num_classes)
    provenance = {
        "base_model": base,
        "base_kind": contract.kind,
        "base_weights_sha256": contract.weights_sha256,
        "pretraining": contract.pretraining,
    }
    preprocess = PreprocessConfig.from_dict(contract.preprocessing)
    return model, dataclasses.replace(preprocess, context=context), provenance


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
# scoring on the original grid


@dataclass(frozen=True, eq=False)
class HeldOutCase:
    """A held-out scan read once: its volume, reference labels and prepared slices."""

    case_id: str
    volume: Volume
    reference: np.ndarray
    prepared: PreparedScan


def load_held_out(case: LabelledCase, preprocess: PreprocessConfig) -> HeldOutCase:
    """Read a labelled scan for scoring (the label on the image's own grid, as written)."""
    volume = read_volume(case.image_path)
    reference = label_array(read_volume(case.label_path))
    return HeldOutCase(case.case_id, volume, reference, prepare_scan(volume, preprocess))


def score_labels(
    case_id: str, prediction: np.ndarray, reference: np.ndarray, classes: Iterable[int]
) -> CaseResult:
    """Dice per class of one case (empty-mask rule of `salign_cli.metrics`)."""
    results = {}
    for label in classes:
        counts = confusion_counts(prediction == label, reference == label)
        results[label] = ClassResult(counts, dice_from_counts(counts))
    return CaseResult(case_id, Path(case_id), Path(case_id), results, n_voxels=reference.size)


def predict_held_out(
    model: UNet2D,
    preprocess: PreprocessConfig,
    cases: Iterable[HeldOutCase],
    *,
    inference: InferenceDefaults,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[tuple[HeldOutCase, np.ndarray]]:
    """Each case segmented at full resolution on its own grid, as `salign segment` would
    (``inference.tta``/``mirror``; post-processing is left to `score_predictions`)."""
    from salign_cli.infer.predictor import Predictor

    predictor = Predictor(
        model.eval(), preprocess, device=device, tta=inference.tta, mirror=inference.mirror
    )
    predictions = []
    for done, case in enumerate(cases, start=1):
        predictions.append((case, predictor.predict(case.volume, prepared=case.prepared).labels))
        if progress is not None:
            progress(done)
    return predictions


def score_predictions(
    predictions: Sequence[tuple[HeldOutCase, np.ndarray]],
    class_names: Mapping[int, str],
    *,
    largest_component: bool = False,
) -> EvaluationSummary:
    """Dice of every foreground class per case; ``largest_component`` post-processes first."""
    from salign_cli.infer.postprocess import keep_largest_component

    foreground = {label: name for label, name in class_names.items() if label > 0}
    results = []
    for case, labels in predictions:
        if largest_component:
            labels = keep_largest_component(labels, list(foreground))
        results.append(score_labels(case.case_id, labels, case.reference, foreground))
    where = Path("held-out")
    return summarise(results, dict(foreground), prediction=where, reference=where)


def score_model(
    model: UNet2D,
    preprocess: PreprocessConfig,
    cases: Iterable[HeldOutCase],
    class_names: Mapping[int, str],
    *,
    inference: InferenceDefaults,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvaluationSummary:
    """Segment each case with the given inference defaults and score its foreground classes.

    Labels are predicted on the scan's own grid (as `salign segment` writes them), so the Dice
    is the one a user would measure on the written masks.
    """
    predictions = predict_held_out(
        model, preprocess, cases, inference=inference, device=device, progress=progress
    )
    return score_predictions(
        predictions, class_names, largest_component=inference.largest_component
    )


def dice_table(summary: EvaluationSummary) -> dict[str, dict[str, float | int | None]]:
    """``{class name: {"mean", "sd", "n"}}`` plus ``"mean"`` (per-case mean over classes)."""
    table = {c.name: c.dice.to_dict() for c in summary.classes}
    table["mean"] = summary.overall_dice.to_dict()
    return table


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
        stored = latest_checkpoint(run_dir, reporter.on_message).meta
        task_config = stored["task_config"]
        train_config: TrainConfig | None = TrainConfig.from_dict(stored["train_config"])
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
        options = options or FinetuneOptions(labels=1)
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
        base_spec = SCRATCH if base == SCRATCH else base_bundle_spec(base, space)
        model, preprocess, origin = initial_network(
            base_spec,
            len(class_names),
            train_cases,
            width=recipe.width,
            seed=options.seed,
            context=recipe.context,
            spacing=options.spacing,
            notify=reporter.on_message,
        )
        unlabelled_scans = []
        if recipe.semi.method != "none":
            unlabelled_scans = resolve_unlabelled_scans(
                options.unlabelled,
                folders,
                space,
                held_back=set(labelled_ids) | set(validation_ids) | excluded,
                modality=preprocess.modality,
                notify=reporter.on_message,
            )
            if not unlabelled_scans and options.unlabelled != "none":
                reporter.on_message(
                    "no unlabelled scans (every other scan is validation or excluded); "
                    "fine-tuning without semi-supervision"
                )
        run_dir = Path(run_dir) if run_dir is not None else space.new_run_dir("finetune")
        run_dir.mkdir(parents=True, exist_ok=True)
        train_config = None  # known once the slices are measured
        task_config = {
            "unlabelled_scans": [dataclasses.asdict(s) for s in unlabelled_scans],
            "options": options.to_dict(),
            "labelled_cases": [dataclasses.asdict(c) for c in train_cases],
            "validation_cases": [dataclasses.asdict(c) for c in validation_cases],
            "classes": {str(k): v for k, v in class_names.items()},
            "preprocessing": preprocess.to_dict(),
            "architecture": model.config.to_dict(),
            "origin": origin,
        }

    cache = SliceCache(space.cache_dir)
    slices = load_labelled_slices(train_cases, preprocess, cache, reporter)
    _check_label_range(train_cases, slices.labels, len(class_names))
    if train_config is None:
        patch = recipe.patch_size or patch_size_for(
            slices.slice_shapes, model.config.depth, recipe.max_patch_px
        )
        recipe = dataclasses.replace(recipe, patch_size=patch)
        task_config["recipe"] = recipe.to_dict()
        train_config = train_config_for(
            recipe, batch_size_for(recipe, patch), options.seed, options.checkpoint_every
        )
    assert recipe.patch_size is not None
    patch_size = recipe.patch_size
    semi = recipe.semi.method if unlabelled_scans else "none"
    # the bundle records what ran: no unlabelled scans means no semi-supervision
    recipe = dataclasses.replace(recipe, semi=dataclasses.replace(recipe.semi, method=semi))
    reporter.on_plan(
        f"{recipe.profile} profile: {train_config.steps} steps × {train_config.batch_size} "
        f"slices of {patch_size[0]}×{patch_size[1]}, width "
        f"{model.config.width}, context ±{recipe.context}, mirror {recipe.mirror}, "
        + (
            f"semi-supervised ({semi}) with {len(unlabelled_scans)} unlabelled scans"
            if semi != "none"
            else "supervised"
        )
    )
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

    inference = InferenceDefaults(tta=recipe.tta, mirror=recipe.mirror)
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
        # the one choice validation makes: keep only the largest part of each class if it helps
        if largest.overall_dice.mean > plain.overall_dice.mean:
            inference = dataclasses.replace(inference, largest_component=True)
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
    from salign_cli.model.bundle import BundleContract, save_bundle

    contract = BundleContract(
        kind="finetuned",
        architecture=model.config.to_dict(),
        modality=preprocess.modality,
        classes={str(k): v for k, v in class_names.items()},
        preprocessing=preprocess.to_dict(),
        pretraining=finetuning.get("pretraining"),
        finetuning={k: v for k, v in finetuning.items() if k != "pretraining"},
        evaluation=evaluation,
        inference=inference.to_dict(),
    )
    return save_bundle(folder, model.state_dict(), contract)
