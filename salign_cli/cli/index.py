"""`salign index`: find scans, pair them with labels, check them, and record them in the workspace.

Parsing and rendering only; the work is :func:`salign_cli.data.index.index_folders`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from salign_cli.cli.common import QuietOption, WorkspaceOption, console, err_console

if TYPE_CHECKING:
    from salign_cli.data.index import IndexResult, IndexSummary, Problem

MAX_WARNINGS_SHOWN = (
    20  # errors are always all shown; warnings repeat (e.g. every CT is anisotropic)
)
MAX_SKIPPED_NAMES_SHOWN = 5  # the warnings (and --json's absence of rows) name every one


def _span(low: tuple[float, ...], high: tuple[float, ...], digits: int) -> str:
    return " x ".join(
        f"{a:.{digits}f}" if a == b else f"{a:.{digits}f}-{b:.{digits}f}"
        for a, b in zip(low, high, strict=True)
    )


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counter.items()) or "-"


def skipped_labels_line(paths: list[Path]) -> str:
    """``2 label maps without a matching image skipped: a_seg.nii.gz, b_seg.nii.gz``."""
    names = [path.name for path in paths[:MAX_SKIPPED_NAMES_SHOWN]]
    more = len(paths) - len(names)
    return (
        f"{len(paths)} label map{'s' if len(paths) != 1 else ''} without a matching image "
        f"skipped: {', '.join(names)}" + (f" and {more} more" if more else "")
    )


def _summary_table(result: IndexResult, summary: IndexSummary) -> Table:
    table = Table(title="salign index", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("scans", str(summary.scans))
    table.add_row(
        "labelled / unlabelled",
        f"{summary.labelled} / {summary.unlabelled}"
        + (f"  (+{summary.with_errors} with errors)" if summary.with_errors else ""),
    )
    if summary.shape_range:
        table.add_row("shape (voxels)", _span(*summary.shape_range, digits=0))
    if summary.spacing_range_mm:
        table.add_row("spacing (mm)", _span(*summary.spacing_range_mm, digits=2))
    table.add_row("orientations", _counts(summary.orientations))
    table.add_row("modalities", _counts(summary.modalities))
    if result.skipped_labels:
        table.add_row("skipped", escape(skipped_labels_line(result.skipped_labels)))
    table.add_row("voxel types", _counts(summary.dtypes))
    for dataset in result.datasets:
        labels = ", ".join(f"{k}={v}" for k, v in (dataset.label_names or {}).items())
        table.add_row("dataset", escape(f"{dataset.name or dataset.root.name}: {labels or '-'}"))
    problems = f"{summary.errors} errors, {summary.warnings} warnings"
    table.add_row("problems", f"[red]{problems}[/]" if summary.errors else problems)
    table.add_row("index", escape(str(result.index_path)))
    return table


def _print_problems(problems: list[Problem], quiet: bool) -> None:
    errors = [p for p in problems if p.severity == "error"]
    warnings = [] if quiet else [p for p in problems if p.severity == "warning"]
    for problem in errors:
        err_console.print(f"[bold red]error:[/] {escape(problem.message)}", soft_wrap=True)
    for problem in warnings[:MAX_WARNINGS_SHOWN]:
        err_console.print(f"[yellow]warning:[/] {escape(problem.message)}", soft_wrap=True)
    if len(warnings) > MAX_WARNINGS_SHOWN:
        err_console.print(
            f"[yellow]... and {len(warnings) - MAX_WARNINGS_SHOWN} more warnings[/] "
            "(--json lists every scan's problems)"
        )


def index(
    folders: Annotated[
        list[Path],
        typer.Argument(help="Folders to search (sub-folders included).", show_default=False),
    ],
    workspace: WorkspaceOption = None,
    stats: Annotated[
        bool,
        typer.Option(
            "--stats",
            help="Read every image voxel, not a sample: exact intensity range and NaN/Inf checks.",
        ),
    ] = False,
    check_labels: Annotated[
        bool,
        typer.Option(
            "--check-labels/--no-check-labels",
            help="Read label voxels to check they are whole, non-negative class numbers.",
        ),
    ] = True,
    modality: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--modality",
            help="CT or MR for every scan found. Default: the DICOM Modality tag, else "
            "dataset.json, else intensities (a sample of voxels; air below -500 means CT).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the scans' rows as JSON on stdout.")
    ] = False,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--workers", min=1, help="Threads reading headers.", show_default=False),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Find scans, pair images with labels, check them and record them in the workspace index.

    Reads headers and a strided sample of image voxels (plus label voxels, which are small); a
    re-run skips unchanged files. Pairs labels by MSD folders (imagesTr/labelsTr, dataset.json),
    nnU-Net names (case_0000), or <name>_seg, _label, _labels, _mask files beside the image;
    label maps no image claims are skipped, never indexed as images. DICOM series are found
    whatever their files are called; several series in one folder are separate scans.
    Exit code 2 if any scan has an error; the good ones are indexed all the same.

    [bold]Examples[/]

      salign index ./scans
      salign index /data/Task04_Hippocampus -w ./ws --stats
      salign index ./scans --json > scans.json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from salign_cli.data.index import index_folders, summarise

    progress = Progress(
        TextColumn("[bold]index[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )
    task = progress.add_task("", total=None)
    with progress:
        result = index_folders(
            folders,
            workspace,
            stats=stats,
            check_labels=check_labels,
            modality=modality,
            workers=workers,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in result.records], indent=2) + "\n")
    elif not quiet:
        console.print(
            f"indexed {len(result.records)} scans in {result.seconds:.1f} s: {result.new} new, "
            f"{result.changed} changed, {result.unchanged} unchanged"
            + (f", {result.rechecked} re-checked" if result.rechecked else "")
            + f", {result.removed} removed from disk"
        )
        console.print(_summary_table(result, summarise(result.records, result.notes)))
    _print_problems(result.problems, quiet)
    if result.has_errors:
        raise typer.Exit(2)
