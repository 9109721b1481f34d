"""Rich tables shared by the commands that report Dice (evaluate, finetune, demo)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from salign_cli.metrics.aggregate import EvaluationSummary, MeanSd


def format_mean_sd(value: MeanSd, digits: int) -> str:
    """``0.812 ± 0.034``; the mean alone when sd is undefined; a dash when there is no value."""
    if not math.isfinite(value.mean):
        return "—"
    if not math.isfinite(value.sd):
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.sd:.{digits}f}"


def format_number(value: float | None, digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def dice_table(summary: EvaluationSummary) -> Table:
    """Per-class Dice (and HD95, NSD when computed), mean ± sd, with an overall row."""
    with_hd95 = summary.overall_hd95_mm is not None
    table = Table(title=f"Dice over {len(summary.cases)} cases (mean ± sd)")
    table.add_column("class")
    table.add_column("Dice", justify="right")
    table.add_column("n", justify="right")
    table.add_column("n_empty_both", justify="right")
    if with_hd95:
        table.add_column("HD95 mm", justify="right")
        table.add_column("HD95 n/a", justify="right")
    if summary.overall_nsd is not None:
        table.add_column(f"NSD@{summary.nsd_tolerance_mm:g} mm", justify="right")
    for result in summary.classes:
        row = [
            escape(f"{result.label}: {result.name}"),
            format_mean_sd(result.dice, 3),
            str(result.dice.n),
            str(result.n_empty_both),
        ]
        if result.hd95_mm is not None:
            row += [format_mean_sd(result.hd95_mm, 2), str(result.n_hd95_undefined)]
        if result.nsd is not None:
            row.append(format_mean_sd(result.nsd, 3))
        table.add_row(*row)
    overall = ["overall", format_mean_sd(summary.overall_dice, 3)]
    overall += [str(summary.overall_dice.n), ""]
    if summary.overall_hd95_mm is not None:
        overall += [format_mean_sd(summary.overall_hd95_mm, 2), ""]
    if summary.overall_nsd is not None:
        overall.append(format_mean_sd(summary.overall_nsd, 3))
    table.add_row(*overall, style="bold")
    return table
