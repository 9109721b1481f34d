"""Fine-tuning with a few labelled scans: what differs from pre-training, nothing more.

The stage picks the labelled scans (N drawn with the seed, or named by id) and keeps every other
labelled scan for validation; it initialises the whole U-Net from a bundle (the newest
pre-training run by default, ``"scratch"`` for none), gives it a new head for the dataset's
classes, and trains Dice + cross-entropy on augmented labelled slices with the shared loop
(`salign_cli.train.engine.train`: warm-up + cosine, AMP, checkpoints, exact resume, metrics).
The final weights are used — there is no model selection — and scored on the validation scans
at full resolution on each scan's own grid (`salign_cli.infer.predictor.Predictor`), so the
validation Dice in the bundle is the Dice `salign segment` would reach on those scans.

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
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from salign_cli.data.preprocess import PreparedScan, PreprocessConfig, SliceCache, prepare_scan
from salign_cli.data.sampling import AugmentConfig, LabelledSliceDataset
from salign_cli.device import resolve_device
from salign_cli.errors import InputError
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
from salign_cli.objectives.segmentation import dice_ce_loss
from salign_cli.train.engine import (
    Reporter,
    RuntimeOptions,
    SilentReporter,
    TrainConfig,
    latest_checkpoint,
    train,
)
from salign_cli.train.pretrain import CPU_WIDTH, preprocess_config_for
from salign_cli.workspace import Workspace

SCRATCH = "scratch"
# Default length [ours]: about this many passes over the labelled slices, within the bounds.
DEFAULT_EPOCHS = 30
MIN_DEFAULT_STEPS = 250
MAX_DEFAULT_STEPS = 3000
# [ours] 1e-2 rather than pre-training's 1e-3: on hippocampus (k = 1, 150-300 steps, width 8)
# 1e-3 left the foreground unlearnt (test Dice ~0) while 1e-2 reached ~0.55 (docs/benchmarks.md).
DEFAULT_LR = 1e-2


class FinetuneReporter(Reporter, Protocol):
    """A `Reporter` that also hears about slice-cache and validation progress."""

    def on_cache(self, done: int, total: int) -> None: ...

    def on_validation(self, done: int, total: int) -> None: ...


class SilentFinetuneReporter(SilentReporter):
    """Ignores progress; notes become Python warnings."""

    def on_cache(self, done: int, total: int) -> None:
        pass

    def on_validation(self, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class FinetuneOptions:
    """Which scans to learn from and how long (the typed mirror of ``salign finetune``'s flags).

    Exactly one of ``labels`` (N scans drawn with ``seed``) and ``case_ids`` (named scans) is
    given. ``exclude_case_ids`` are never used, neither for training nor for validation (a test
    split). ``steps``/``batch_size`` ``None`` pick the defaults of `default_train_config`.
    ``max_validation_cases`` caps validation (drawn with ``seed``; ``0`` skips it, ``None`` =
    every other labelled scan). ``width`` applies only to ``--from scratch`` (``None``: 32 on
    CUDA, 16 elsewhere).
    """

    labels: int | None = None
    case_ids: tuple[str, ...] = ()
    exclude_case_ids: tuple[str, ...] = ()
    seed: int = 0
    steps: int | None = None
    batch_size: int | None = None
    lr: float = DEFAULT_LR
    size: int = 64
    augment: bool = True
    checkpoint_every: int = 100
    max_validation_cases: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
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
        if self.width is not None and self.width < 1:
            raise InputError(f"--width must be positive, got {self.width}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FinetuneOptions:
        values = dict(payload)
        for name in ("case_ids", "exclude_case_ids"):
            values[name] = tuple(values.get(name, ()))
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
    for note in scan_index.skipped_scan_notes(records) if notify else ():
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


def load_labelled_slices(
    cases: Sequence[LabelledCase],
    config: PreprocessConfig,
    cache: SliceCache,
    reporter: FinetuneReporter | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Float16 image slices and integer label slices ``[D, H, W]`` per case, from the cache."""

    def one(case: LabelledCase) -> tuple[np.ndarray, np.ndarray]:
        cached = cache.get_or_build(
            Path(case.image_path), case.content_hash, config, label_path=Path(case.label_path)
        )
        assert cached.labels is not None
        return cached.slices, cached.labels

    images, labels = [], []
    with ThreadPoolExecutor(max_workers=min(4, len(cases))) as pool:
        for done, (image, label) in enumerate(pool.map(one, cases), start=1):
            images.append(image)
            labels.append(label)
            if reporter is not None:
                reporter.on_cache(done, len(cases))
    return images, labels


# ---------------------------------------------------------------------------------------------
# the starting network


def default_width(device: torch.device) -> int:
    return 32 if device.type == "cuda" else CPU_WIDTH


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
    notify: Callable[[str], None] | None = None,
) -> tuple[UNet2D, PreprocessConfig, dict[str, Any]]:
    """The U-Net to fine-tune, the preprocessing it expects, and where it came from.

    From a bundle: every U-Net weight is loaded and the head is replaced by a fresh one for
    ``num_classes``; the bundle's preprocessing is kept (the network was trained on it).
    From scratch: a seeded network and the cases' own preprocessing (median in-plane spacing).
    """
    torch.manual_seed(seed)
    if base == SCRATCH:
        model = UNet2D(UNetConfig(num_classes=num_classes, width=width))
        return model, preprocess_config_for(cases), {"base_model": None, "pretraining": None}  # type: ignore[arg-type]
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
    torch.manual_seed(seed)
    model.replace_head(num_classes)
    provenance = {
        "base_model": base,
        "base_kind": contract.kind,
        "base_weights_sha256": contract.weights_sha256,
        "pretraining": contract.pretraining,
    }
    return model, PreprocessConfig.from_dict(contract.preprocessing), provenance


# ---------------------------------------------------------------------------------------------
# the objective


class SegmentationObjective(nn.Module):
    """``forward(batch) -> {"loss"}``: Dice + cross-entropy of the U-Net's logits."""

    def __init__(self, unet: UNet2D) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        return {"loss": dice_ce_loss(self.unet(batch["image"]), batch["label"])}


@dataclass
class FinetuneTask:
    """The `TrainingTask` of fine-tuning."""

    module: SegmentationObjective
    dataset: LabelledSliceDataset
    slices_per_sample: int = LabelledSliceDataset.slices_per_sample


def default_train_config(
    options: FinetuneOptions, labelled_slices: int, device: torch.device
) -> TrainConfig:
    """Steps and batch size by dataset size and device, unless ``options`` fix them.

    Batch: 32 slices on CUDA, 16 elsewhere. Steps: about `DEFAULT_EPOCHS` passes over the
    labelled slices, at least `MIN_DEFAULT_STEPS` (a single scan still trains long enough) and
    at most `MAX_DEFAULT_STEPS`.
    """
    batch = options.batch_size or (32 if device.type == "cuda" else 16)
    steps = options.steps or int(
        min(
            MAX_DEFAULT_STEPS,
            max(MIN_DEFAULT_STEPS, round(DEFAULT_EPOCHS * labelled_slices / batch)),
        )
    )
    return TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=options.lr,
        seed=options.seed,
        checkpoint_every=min(options.checkpoint_every, steps),
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


def score_model(
    model: UNet2D,
    preprocess: PreprocessConfig,
    cases: Iterable[HeldOutCase],
    class_names: Mapping[int, str],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvaluationSummary:
    """Segment each case at full resolution and score its foreground classes.

    Labels are predicted on the scan's own grid (as `salign segment` writes them), so the Dice
    is the one a user would measure on the written masks.
    """
    from salign_cli.infer.predictor import Predictor

    predictor = Predictor(model.eval(), preprocess, device=device)
    foreground = {label: name for label, name in class_names.items() if label > 0}
    results = []
    for done, case in enumerate(cases, start=1):
        prediction = predictor.predict(case.volume, prepared=case.prepared).labels
        results.append(score_labels(case.case_id, prediction, case.reference, foreground))
        if progress is not None:
            progress(done)
    where = Path("held-out")
    return summarise(results, dict(foreground), prediction=where, reference=where)


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
        train_config = TrainConfig.from_dict(stored["train_config"])
        options = FinetuneOptions.from_dict(task_config["options"])
        train_cases = [LabelledCase.from_dict(c) for c in task_config["labelled_cases"]]
        validation_cases = [LabelledCase.from_dict(c) for c in task_config["validation_cases"]]
        class_names = {int(k): v for k, v in task_config["classes"].items()}
        preprocess = PreprocessConfig.from_dict(task_config["preprocessing"])
        model = UNet2D(UNetConfig.from_dict(task_config["architecture"]))
        origin = task_config["origin"]
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
        base_spec = SCRATCH if base == SCRATCH else base_bundle_spec(base, space)
        model, preprocess, origin = initial_network(
            base_spec,
            len(class_names),
            train_cases,
            width=options.width or default_width(device),
            seed=options.seed,
            notify=reporter.on_message,
        )
        run_dir = Path(run_dir) if run_dir is not None else space.new_run_dir("finetune")
        run_dir.mkdir(parents=True, exist_ok=True)
        train_config = None  # known once the slices are counted
        task_config = {
            "options": options.to_dict(),
            "labelled_cases": [dataclasses.asdict(c) for c in train_cases],
            "validation_cases": [dataclasses.asdict(c) for c in validation_cases],
            "classes": {str(k): v for k, v in class_names.items()},
            "preprocessing": preprocess.to_dict(),
            "architecture": model.config.to_dict(),
            "origin": origin,
        }

    cache = SliceCache(space.cache_dir)
    images, labels = load_labelled_slices(train_cases, preprocess, cache, reporter)
    _check_label_range(train_cases, labels, len(class_names))
    if train_config is None:
        train_config = default_train_config(options, sum(len(v) for v in images), device)
    dataset = LabelledSliceDataset(
        images,
        labels,
        augment=AugmentConfig(size=options.size, enabled=options.augment),
        seed=train_config.seed,
        names=[c.image_path for c in train_cases],
    )
    task = FinetuneTask(module=SegmentationObjective(model), dataset=dataset)
    result = train(
        task,
        train_config,
        run_dir,
        task_config=task_config,
        runtime=runtime,
        resume=bool(resume),
        reporter=reporter,
    )

    validation = None
    if validation_cases:
        held_out = (load_held_out(c, preprocess) for c in validation_cases)
        validation = score_model(
            model,
            preprocess,
            held_out,
            class_names,
            device=device,
            progress=lambda done: reporter.on_validation(done, len(validation_cases)),
        )
    finetuning = {
        "labelled_case_ids": [c.case_id for c in train_cases],
        "validation_case_ids": [c.case_id for c in validation_cases],
        "excluded_case_ids": list(options.exclude_case_ids),
        "seed": options.seed,
        "selection": "given" if options.case_ids else "seeded",
        "steps": result.steps,
        "train": train_config.to_dict(),
        "options": options.to_dict(),
        "run": run_dir.name,
        **origin,
    }
    evaluation = None
    if validation is not None:
        evaluation = {
            "per_class_dice": {
                c.name: c.dice.mean for c in validation.classes if math.isfinite(c.dice.mean)
            },
            "dice": dice_table(validation),
            "held_out_cases": len(validation.cases),
            "split": "validation (every labelled scan not used for training)",
            "empty_mask_rule": validation.to_dict()["empty_mask_rule"],
        }
    bundle_dir = _write_bundle(
        run_dir / "bundle", model.cpu(), preprocess, class_names, finetuning, evaluation
    )
    report = {
        "kind": "finetune",
        "run_dir": str(run_dir),
        "bundle": str(bundle_dir),
        **finetuning,
        "classes": {str(k): v for k, v in class_names.items()},
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
    if cap is None or cap >= len(case_ids):
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
    )
    return save_bundle(folder, model.state_dict(), contract)
