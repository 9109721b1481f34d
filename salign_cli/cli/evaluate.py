"""`salign evaluate PRED LABELS`: Dice (and HD95) per case and class, mean ± sd, summary.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from salign_cli.cli.common import console, err_console, reports_errors
from salign_cli.errors import InputError

if TYPE_CHECKING:
    from salign_cli.metrics import EvaluationSummary, MeanSd


LISTED_UNMATCHED = 10  # the full list is in summary.json


def parse_classes(text: str) -> list[int]:
    """``"1,2"`` → ``[1, 2]``; anything else is an :class:`InputError` naming the option."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"--classes {text}: give comma-separated label numbers > 0, e.g. --classes 1,2"
        ) from None


def _mean_sd(value: MeanSd, digits: int) -> str:
    if not math.isfinite(value.mean):
        return "—"
    if not math.isfinite(value.sd):
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.sd:.{digits}f}"


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _class_table(summary: EvaluationSummary) -> Table:
    with_hd95 = summary.overall_hd95_mm is not None
    table = Table(title=f"Dice over {len(summary.cases)} cases (mean ± sd)")
    table.add_column("class")
    table.add_column("Dice", justify="right")
    table.add_column("n", justify="right")
    table.add_column("n_empty_both", justify="right")
    if with_hd95:
        table.add_column("HD95 mm", justify="right")
        table.add_column("HD95 n/a", justify="right")
    for result in summary.classes:
        row = [
            escape(f"{result.label}: {result.name}"),
            _mean_sd(result.dice, 3),
            str(result.dice.n),
            str(result.n_empty_both),
        ]
        if result.hd95_mm is not None:
            row += [_mean_sd(result.hd95_mm, 2), str(result.n_hd95_undefined)]
        table.add_row(*row)
    overall = ["overall", _mean_sd(summary.overall_dice, 3)]
    overall += [str(summary.overall_dice.n), ""]
    if summary.overall_hd95_mm is not None:
        overall += [_mean_sd(summary.overall_hd95_mm, 2), ""]
    table.add_row(*overall, style="bold")
    return table


def _case_table(summary: EvaluationSummary) -> Table:
    table = Table(title="Per case")
    table.add_column("case")
    for result in summary.classes:
        table.add_column(escape(f"Dice {result.label}"), justify="right")
        if result.hd95_mm is not None:
            table.add_column(escape(f"HD95 {result.label} mm"), justify="right")
    for case in summary.cases:
        row = [escape(case.case)]
        for result in case.classes.values():
            row.append(_number(result.dice, 3))
            if result.hd95_mm is not None:
                row.append(_number(result.hd95_mm, 2))
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


@reports_errors
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
            "--hd95", help="Also compute HD95 in mm (needs SciPy: pip install 'salign\\[metrics]')."
        ),
    ] = False,
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
    """Score predicted masks against reference labels: Dice (and HD95), mean ± sd.

    Files are matched by case name: a prediction [bold]case.nii.gz[/] or
    [bold]case_seg.nii.gz[/] (what salign segment writes) goes with the label
    [bold]case.nii.gz[/]; unmatched files are listed as a warning. Prediction
    and label must share shape and affine. Class names come from a
    dataset.json beside or above LABELS. The JSON summary holds every number.

    [bold]Empty masks[/]: a class empty in both prediction and reference has
    Dice NaN: excluded from the means and counted in n_empty_both (as nnU-Net
    does). An empty reference with a non-empty prediction has Dice 0. HD95 is
    undefined when either mask is empty: excluded and counted as HD95 n/a.

    Example: salign evaluate predictions/ Task04_Hippocampus/labelsTr --hd95
    """
    from salign_cli.metrics import default_summary_path, evaluate_folders, write_summary

    chosen = parse_classes(classes) if classes is not None else None
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=None)
        summary = evaluate_folders(
            pred,
            labels,
            classes=chosen,
            hd95=hd95,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    _warn_unmatched(summary.unmatched_predictions, "predictions without a label file")
    _warn_unmatched(summary.unmatched_references, "label files without a prediction")
    path = write_summary(summary, output or default_summary_path(pred))
    console.print(_class_table(summary))
    if per_case:
        console.print(_case_table(summary))
    console.print(f"summary written to {escape(str(path))}")
