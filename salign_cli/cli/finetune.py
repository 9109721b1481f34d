"""`salign finetune`: fine-tune a pre-trained bundle with a few labelled scans."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from salign_cli.cli.common import (
    ReportOption,
    WorkspaceOption,
    console,
    err_console,
    reports_errors,
    resolve_workspace,
)
from salign_cli.errors import InputError

if TYPE_CHECKING:
    from salign_cli.train.finetune import FinetuneResult


class _ConsoleReporter:
    """Cache, training and validation progress with Rich; silent when quiet or not a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> _ConsoleReporter:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def _update(self, name: str, done: int, total: int, detail: str = "") -> None:
        if not self.enabled:
            return
        if name not in self._tasks:
            self._tasks[name] = self.progress.add_task(name, total=total, detail="")
        self.progress.update(self._tasks[name], completed=done, total=total, detail=detail)

    def on_cache(self, done: int, total: int) -> None:
        self._update("slice cache", done, total)

    def on_step(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        self._update("fine-tuning", step, total, f"loss {metrics.get('loss', math.nan):.4f}")

    def on_validation(self, done: int, total: int) -> None:
        self._update("validation", done, total)

    def on_message(self, message: str) -> None:
        err_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def _case_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _render(result: FinetuneResult) -> None:
    """The labelled cases, then Dice per class (mean ± sd over validation scans)."""
    console.print(
        f"fine-tuned on {len(result.labelled_case_ids)} labelled scan(s): "
        f"{', '.join(result.labelled_case_ids)}"
    )
    summary = result.validation
    if summary is None:
        console.print("no validation scans left (every labelled scan was used for training)")
    else:
        table = Table(title=f"validation Dice ({len(summary.cases)} held-out scans)")
        for column in ("class", "mean", "sd", "cases"):
            table.add_column(column, justify="left" if column == "class" else "right")
        rows = [(c.name, c.dice) for c in summary.classes] + [("mean", summary.overall_dice)]
        for name, value in rows:
            table.add_row(name, _number(value.mean), _number(value.sd), str(value.n))
        console.print(table)
    console.print(f"bundle: {result.bundle_dir}  (salign segment uses it by default)")


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


@reports_errors
def finetune(
    labels: Annotated[
        Optional[int],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--labels", "-n", help="Number of labelled scans to train on (drawn with --seed)."
        ),
    ] = None,
    cases: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--cases", help="Train on these case ids instead: id,id,..."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for choosing scans, initialisation and data.")
    ] = 0,
    from_bundle: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--from",
            help="Start from: a run or bundle folder, org/name[@rev], or 'scratch'. "
            "Default: the newest pre-training run.",
        ),
    ] = None,
    data: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            "--data", help="Folder of labelled scans (indexed first). Default: the index."
        ),
    ] = None,
    steps: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Optimiser steps. Default: ~30 passes over the labelled slices, 250-3000."
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--batch-size", help="Slices per step. Default: 32 on CUDA, 16 elsewhere."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = 1e-2,
    size: Annotated[int, typer.Option(help="Training crop size in pixels.")] = 64,
    width: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="U-Net width with --from scratch. Default: 32 on CUDA, 16 elsewhere."),
    ] = None,
    max_validation: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--max-validation", help="Score at most N validation scans (0 = none)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the training step.")
    ] = False,
    resume: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--resume",
            is_flag=False,
            flag_value="latest",
            metavar="[RUN_DIR]",
            help="Continue a run exactly (newest run if no folder); other options are ignored.",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    report: ReportOption = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or table (errors still print).")
    ] = False,
) -> None:
    """Fine-tune with a [bold]few labelled scans[/]; every other labelled scan is validation.

    Starts from the newest pre-training run in the workspace (or --from), replaces the head for the
    dataset's classes (names from dataset.json), and trains Dice + cross-entropy with augmentation
    and a warm-up + cosine schedule. The final weights are scored on the validation scans at full
    resolution; the bundle (runs/finetune-<time>/bundle) records the classes, preprocessing,
    labelled case ids, seed and validation Dice, and `salign segment` uses it by default.

    [bold]Examples[/]

      salign finetune --labels 5                         # after salign pretrain

      salign finetune --cases hippocampus_001,hippocampus_003 --data ./Task04_Hippocampus

      salign finetune --labels 1 --from scratch --seed 2

      salign finetune --resume                           # continue the newest run exactly
    """
    from salign_cli.io.atomic import write_json
    from salign_cli.train.engine import RuntimeOptions
    from salign_cli.train.finetune import FinetuneOptions
    from salign_cli.train.finetune import finetune as run_finetune

    space = resolve_workspace(workspace)
    resume_from: Path | bool = False
    options = None
    if resume is not None:
        resume_from = True if resume == "latest" else Path(resume)
    else:
        if labels is None and not cases:
            raise InputError("say how many labelled scans to use: --labels N (or --cases ID,ID)")
        options = FinetuneOptions(
            labels=labels,
            case_ids=_case_list(cases),
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            size=size,
            width=width,
            max_validation_cases=max_validation,
        )
    with _ConsoleReporter(quiet) as reporter:
        result = run_finetune(
            data or [],
            workspace=space,
            base=from_bundle,
            options=options,
            runtime=RuntimeOptions(device=device, compile=compile_model),
            resume=resume_from,
            reporter=reporter,
        )
    if report is not None:
        write_json(report, result.report)
    if not quiet:
        _render(result)
