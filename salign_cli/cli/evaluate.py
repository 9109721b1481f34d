"""`salign evaluate PRED LABELS`: Dice (HD95, NSD) per case and class, mean ± sd, summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from salign_cli.cli.common import console, err_console
from salign_cli.cli.tables import dice_table, format_number
from salign_cli.errors import InputError

if TYPE_CHECKING:
    from salign_cli.metrics.aggregate import EvaluationSummary


LISTED_UNMATCHED = 10  # the full list is in summary.json


def parse_classes(text: str) -> list[int]:
    """``"1,2"`` → ``[1, 2]``; anything else is an :class:`InputError` naming the option."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"--classes {text}: give comma-separated label numbers > 0, e.g. --classes 1,2"
        ) from None


def _case_table(summary: EvaluationSummary) -> Table:
    table = Table(title="Per case")
    table.add_column("case")
    for result in summary.classes:
        table.add_column(escape(f"Dice {result.label}"), justify="right")
        if result.hd95_mm is not None:
            table.add_column(escape(f"HD95 {result.label} mm"), justify="right")
        if result.nsd is not None:
            table.add_column(escape(f"NSD {result.label}"), justify="right")
    for case in summary.cases:
        row = [escape(case.case)]
        for class_result in case.classes.values():
            row.append(format_number(class_result.dice, 3))
            if class_result.hd95_mm is not None:
                row.append(format_number(class_result.hd95_mm, 2))
            if class_result.nsd is not None:
                row.append(format_number(class_result.nsd, 3))
        table.add_row(*row)
    return table


def _warn_unmatched(paths: tuple[Path, ...], what: str) -> None:
    if not paths:
        return
    names = ", ".join(path.name for path in paths[:LISTED_UNMATCHED])
    more = f" and {len(paths) - LISTED_UNMATCHED} more" if len(paths) > LISTED_UNMATCHED else ""
    err_console.print(
        f"[yellow]warning:[/] {len(paths)} {what}: {escape(names)}{more}", soft_wrap=True
    )


def evaluate(
    pred: Annotated[
        Path,
        typer.Argument(help="Folder of predicted masks, or one mask file.", show_default=False),
    ],
    labels: Annotated[
        Path,
        typer.Argument(help="Folder of reference label files, or one file.", show_default=False),
    ],
    classes: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--classes",
            help="Comma-separated labels to score, e.g. 1,2. Default: every label > 0 in any reference.",
            show_default=False,
        ),
    ] = None,
    hd95: Annotated[
        bool,
        typer.Option(
            "--hd95", help="Also compute HD95 in mm (95th-percentile Hausdorff distance)."
        ),
    ] = False,
    nsd: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--nsd",
            metavar="TOL_MM",
            help="Also compute the normalised surface Dice at this tolerance in mm: the share of "
            "both surfaces within TOL_MM of the other (Nikolov et al. 2021).",
            show_default=False,
        ),
    ] = None,
    per_case: Annotated[
        bool, typer.Option("--per-case", help="Also print the per-case table.")
    ] = False,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--output", "-o", help="Where to write the JSON summary. Default: PRED/summary.json."
        ),
    ] = None,
) -> None:
    """Score predicted masks against reference labels: Dice (HD95, NSD), mean ± sd.

    Files are matched by case name: a prediction [bold]case.nii.gz[/] or
    [bold]case_seg.nii.gz[/] (what salign segment writes) goes with the label
    [bold]case.nii.gz[/]; unmatched files are listed as a warning. Prediction
    and label must share shape and affine. Class names come from a
    dataset.json beside or above LABELS. The JSON summary holds every number.

    [bold]Empty masks[/]: a class empty in both prediction and reference has
    Dice NaN: excluded from the means and counted in n_empty_both (as nnU-Net
    does). An empty reference with a non-empty prediction has Dice 0. HD95 is
    undefined when either mask is empty: excluded and counted as HD95 n/a.
    NSD follows Dice: NaN when both are empty, 0 when exactly one is.

    Example: salign evaluate predictions/ Task04_Hippocampus/labelsTr --hd95 --nsd 1
    """
    from salign_cli.metrics.folders import default_summary_path, evaluate_folders, write_summary

    chosen = parse_classes(classes) if classes is not None else None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=None)
        summary = evaluate_folders(
            pred,
            labels,
            classes=chosen,
            hd95=hd95,
            nsd_tolerance_mm=nsd,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    _warn_unmatched(summary.unmatched_predictions, "predictions without a label file")
    _warn_unmatched(summary.unmatched_references, "label files without a prediction")
    path = write_summary(summary, output or default_summary_path(pred))
    console.print(dice_table(summary))
    if per_case:
        console.print(_case_table(summary))
    console.print(f"summary written to {escape(str(path))}")
