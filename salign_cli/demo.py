"""`salign demo`: the real pipeline, end to end, on data that needs no download.

Without ``data``, a small synthetic MR-like dataset is generated (see
:mod:`salign_cli.data.synthetic`); with ``data`` (an MSD-style folder such as
``../shared/data/hippocampus``) the same steps run on the user's scans. Nothing is special-cased
for the demo: it calls the same typed API as the commands:

    index → pretrain → finetune --labels 2 → segment → evaluate

Test cases are held out from fine-tuning and only segmented and scored, so the Dice it prints is
an honest held-out number. Synthetic masks are written beside their inputs (as `salign segment`
does by default); for a user's folder they go to the workspace, since data folders are often
read-only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from salign_cli.data.index import ScanRecord, index_folders, labelled_scans
from salign_cli.data.synthetic import write_dataset
from salign_cli.errors import InputError
from salign_cli.infer.jobs import SegmentOptions
from salign_cli.infer.pipeline import segment
from salign_cli.infer.report import SegmentSummary
from salign_cli.metrics.aggregate import EvaluationSummary
from salign_cli.metrics.folders import evaluate_folders, write_summary
from salign_cli.train.engine import RuntimeOptions, TrainConfig
from salign_cli.train.finetune import FinetuneReporter, FinetuneResult, finetune
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.pretrain import PretrainOptions, PretrainResult, pretrain
from salign_cli.workspace import Workspace

DEMO_FOLDER = "demo"
MAX_TEST_CASES = 20


@dataclass(frozen=True)
class DemoSettings:
    """How much work each stage does; the defaults finish in a few minutes on 2 CPU cores."""

    labels: int = 2
    cases: int = 16
    test_cases: int = 4
    pretrain_steps: int = 60
    finetune_steps: int = 150
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class DemoResult:
    """Where everything went, and the held-out Dice."""

    data_dir: Path
    synthetic: bool
    pretraining: PretrainResult
    finetuning: FinetuneResult
    segmentation: SegmentSummary
    evaluation: EvaluationSummary
    summary_path: Path
    seconds: float


def _split_test_cases(
    data_dir: Path, workspace: Workspace, count: int
) -> tuple[list[ScanRecord], Path]:
    """Index ``data_dir``; return the held-out test cases (the last by id) and their labels dir."""
    result = index_folders([data_dir], workspace)
    labelled = labelled_scans(result.records)
    if len(labelled) < 2:
        raise InputError(
            f"{data_dir}: the demo needs at least 2 labelled scans (found {len(labelled)}); "
            "use an MSD-style folder with imagesTr/ and labelsTr/"
        )
    test = labelled[-min(count, len(labelled) - 1) :]
    label_dirs = {record.label_path.parent for record in test if record.label_path}
    if len(label_dirs) != 1:
        raise InputError(f"{data_dir}: test labels must share one folder (found {len(label_dirs)})")
    return test, label_dirs.pop()


def run_demo(
    workspace: Workspace,
    data: Path | None = None,
    *,
    settings: DemoSettings | None = None,
    on_stage: Callable[[str], None] | None = None,
    reporter: FinetuneReporter | None = None,
) -> DemoResult:
    """Run index → pretrain → finetune → segment → evaluate and return what each produced.

    ``on_stage`` is told the name of each stage as it starts; ``reporter`` receives progress
    (``on_cache``, ``on_step``, ``on_validation``, ``on_message``) from both training stages.
    """
    settings = settings or DemoSettings()
    announce = on_stage or (lambda _stage: None)
    started = time.perf_counter()
    synthetic = data is None
    demo_dir = workspace.root / DEMO_FOLDER
    if synthetic:
        announce("generating synthetic data")
        data_dir = write_dataset(
            demo_dir / "data",
            cases=settings.cases,
            test_cases=settings.test_cases,
            seed=settings.seed,
        )
        train_dir, test_images, test_labels = (
            data_dir / "imagesTr",
            [data_dir / "imagesTs"],
            data_dir / "labelsTs",
        )
        index_folders([train_dir], workspace)
        exclude: tuple[str, ...] = ()
        masks_dir = None
    else:
        data_dir = Path(data)  # type: ignore[arg-type]
        if not data_dir.is_dir():
            raise InputError(f"{data_dir}: no such folder; give an MSD-style dataset folder")
        announce("indexing")
        test_cases, test_labels = _split_test_cases(data_dir, workspace, MAX_TEST_CASES)
        test_images = [record.image_path for record in test_cases]
        train_dir = data_dir
        exclude = tuple(record.case_id for record in test_cases)
        masks_dir = demo_dir / "masks"
        masks_dir.mkdir(parents=True, exist_ok=True)

    runtime = RuntimeOptions(device=settings.device)
    announce("pre-training")
    pretraining = pretrain(
        [train_dir],
        workspace=workspace,
        options=PretrainOptions(),
        train_config=TrainConfig(
            steps=settings.pretrain_steps, batch_size=settings.batch_size, seed=settings.seed
        ),
        runtime=runtime,
        reporter=reporter,
    )
    announce(f"fine-tuning with {settings.labels} labelled scans")
    finetuning = finetune(
        [train_dir],
        workspace=workspace,
        base=str(pretraining.bundle_dir),
        options=FinetuneOptions(
            labels=settings.labels,
            exclude_case_ids=exclude,
            seed=settings.seed,
            steps=settings.finetune_steps,
            batch_size=settings.batch_size,
            max_validation_cases=4,
        ),
        runtime=runtime,
        reporter=reporter,
    )
    announce("segmenting the held-out scans")
    segmentation = segment(
        test_images,
        masks_dir,
        model=str(finetuning.bundle_dir),
        workspace=workspace,
        options=SegmentOptions(device=settings.device, overwrite=True),
    )
    announce("evaluating")
    evaluation = evaluate_folders(masks_dir or test_images[0], test_labels)
    summary_path = write_summary(evaluation, demo_dir / "summary.json")
    return DemoResult(
        data_dir=data_dir,
        synthetic=synthetic,
        pretraining=pretraining,
        finetuning=finetuning,
        segmentation=segmentation,
        evaluation=evaluation,
        summary_path=summary_path,
        seconds=time.perf_counter() - started,
    )
