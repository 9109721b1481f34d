"""`salign finetune`: fine-tune a pre-trained bundle with a few labelled scans."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from salign_cli.cli.common import (
    BatchSizeOption,
    CompileOption,
    DeviceOption,
    QuietOption,
    ReportOption,
    ResumeFromOption,
    ResumeOption,
    SeedOption,
    WorkspaceOption,
    case_list,
    console,
    resolve_workspace,
    resume_target,
)
from salign_cli.cli.progress import TrainingProgress
from salign_cli.errors import InputError

if TYPE_CHECKING:
    from salign_cli.train.finetune import FinetuneResult


def _render(result: FinetuneResult) -> None:
    """The labelled cases, then Dice per class (mean ± sd over validation scans)."""
    from salign_cli.cli.tables import dice_table

    console.print(
        f"fine-tuned on {len(result.labelled_case_ids)} labelled scan(s): "
        f"{', '.join(result.labelled_case_ids)}"
    )
    if result.validation is None:
        console.print("no validation scans left (every labelled scan was used for training)")
    else:
        table = dice_table(result.validation)
        table.title = f"validation Dice over {len(result.validation.cases)} held-out scans"
        console.print(table)
    console.print(f"bundle: {result.bundle_dir}  (salign segment uses it by default)")


def finetune(
    labels: Annotated[
        Optional[int],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--labels", "-n", help="Number of labelled scans to train on (drawn with --seed)."
        ),
    ] = None,
    cases: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--cases",
            help="Train on these case ids instead: id,id,... or a file listing them (the .csv "
            "or .json that salign suggest writes, or plain text).",
        ),
    ] = None,
    exclude: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--exclude",
            help="Case ids never to use (a test split): not for training, validation or as "
            "unlabelled data. id,id,...",
        ),
    ] = None,
    seed: SeedOption = 0,
    from_bundle: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--from",
            help="Start from: a run or bundle folder, org/name[@rev], or 'scratch'. "
            "Default: the newest pre-training run. A fine-tuned model of the same classes "
            "(more labels for the same task) keeps its head and trains 30% of the steps.",
        ),
    ] = None,
    data: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            "--data", help="Folder of labelled scans (indexed first). Default: the index."
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="Recipe defaults: cpu (5 hippocampus scans on 2 cores: about 17 min with the "
            "default semi-supervision, about 6 min with --semi none), gpu (>= 100k slice "
            "samples, width 32), or auto (gpu on CUDA, cpu elsewhere).",
        ),
    ] = "auto",
    steps: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Optimiser steps. Default: the profile's (cpu 1000, gpu 2000)."),
    ] = None,
    batch_size: BatchSizeOption = None,
    lr: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Peak learning rate (AdamW, warm-up + cosine). Default: the profile's (cpu "
            "3e-3 with a 30 % warm-up and cosine to 0; gpu 1e-3, 10 % warm-up, cosine to 1 %)."
        ),
    ] = None,
    size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--size",
            help="Square training patch in pixels. Default: planned, the median slice at the "
            "planned spacing rounded to a multiple of 2**depth (to the nearest on the cpu "
            "profile, up on the gpu one).",
        ),
    ] = None,
    context: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Neighbouring slices per side given to the network (2.5D). Default: planned, "
            "about 1 mm each side (1 on 1 mm slices, 2 on 0.625 mm); recorded in the bundle "
            "and applied by segment.",
        ),
    ] = None,
    mirror: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="In-plane flips allowed in training and test-time augmentation: lr (left-right "
            "only), none, all, or auto (lr unless a class name says left/right).",
        ),
    ] = None,
    width: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="U-Net width with --from scratch. Default: 16 (cpu), 32 (gpu)."),
    ] = None,
    spacing: Annotated[
        str,
        typer.Option(
            help="In-plane spacing the model is trained and run at: auto (planned: the median "
            "of the scans, CT at least 1.5 mm, coarsened up to 2x so a step holds 8 whole "
            "slices), native (each scan's own), or mm (e.g. 1.0). With --from scratch; a base "
            "bundle keeps its own.",
        ),
    ] = "auto",
    unlabelled: Annotated[
        str,
        typer.Option(
            help="Unlabelled scans to learn from while fine-tuning: auto (every other scan of "
            "the data that is neither labelled for training, validation nor excluded), none, "
            "or a folder of scans.",
        ),
    ] = "auto",
    semi: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Semi-supervised method: fixmatch (mean teacher, confident pseudo-labels), "
            "bcp (bidirectional copy-paste) or none. Default: the profile's.",
        ),
    ] = None,
    bias_field: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--bias-field/--no-bias-field",
            help="Augment with a smooth MR bias field (coil shading). Default: planned, on for "
            "MR slices at least 64 mm across, off for smaller crops and for CT.",
        ),
    ] = None,
    max_validation: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--max-validation",
            help="Score at most N validation scans, drawn with --seed (0 = none). Default: 25.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    compile_model: CompileOption = False,
    resume: ResumeOption = False,
    resume_from: ResumeFromOption = None,
    workspace: WorkspaceOption = None,
    report: ReportOption = None,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune with a [bold]few labelled scans[/]; every other labelled scan is validation.

    First it plans the run from the labelled scans and prints the plan, one reason per choice:
    in-plane spacing, patch, batch, U-Net depth, 2.5D context, steps, semi-supervision,
    whether to keep each class's largest piece and whether to augment with an MR bias field
    (every flag below overrides what it names). Then it times a few steps of each kind on this
    machine and prints how long training will take; the bar's time left counts down from that.
    Starts from the newest pre-training run in the workspace (or --from), replaces the head for the
    dataset's classes (names from dataset.json), and trains cross-entropy + Dice on
    foreground-oversampled, augmented patches (AdamW, warm-up + cosine, an average of the weights),
    and learns from the unlabelled scans too (semi-supervision; --unlabelled, --semi).
    The averaged weights are scored on the validation scans at full resolution with test-time
    mirroring; the bundle (runs/finetune-<time>/bundle) records the recipe, classes,
    preprocessing, labelled case ids, seed, validation Dice and inference defaults, and
    `salign segment` uses it by default.

    [bold]Examples[/]

      salign finetune --labels 5                         # after salign pretrain

      salign finetune --cases hippocampus_001,hippocampus_003 --data ./Task04_Hippocampus

      salign finetune --labels 1 --from scratch --seed 2

      salign finetune --resume                           # continue the newest run exactly
    """
    from salign_cli.io.atomic import write_json
    from salign_cli.train.engine import RuntimeOptions
    from salign_cli.train.finetune import finetune as run_finetune
    from salign_cli.train.finetune_setup import FinetuneOptions

    space = resolve_workspace(workspace)
    resume_run = resume_target(resume, resume_from)
    options = None
    if not resume_run:
        if labels is None and not cases:
            raise InputError("say how many labelled scans to use: --labels N (or --cases ID,ID)")
        options = FinetuneOptions(
            labels=labels,
            case_ids=case_list(cases),
            exclude_case_ids=case_list(exclude),
            seed=seed,
            profile=profile,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            size=size,
            context=context,
            mirror=mirror,
            width=width,
            spacing=spacing,
            unlabelled=unlabelled,
            semi=semi,
            max_validation_cases=max_validation,
            bias_field=bias_field,
        )
    with TrainingProgress(quiet) as reporter:
        reporter.begin("fine-tuning")
        result = run_finetune(
            data or [],
            workspace=space,
            base=from_bundle,
            options=options,
            runtime=RuntimeOptions(device=device, compile=compile_model),
            resume=resume_run,
            reporter=reporter,
        )
    if report is not None:
        write_json(report, result.report)
    if not quiet:
        _render(result)
