"""One self-contained HTML page to review a batch of masks, worst first.

A row per case: axial, coronal and sagittal slices through the mask with the labels drawn over
them (`salign_cli.infer.preview.orthogonal_views`: side letters on every view), the volume of
each class in mL, the model's expected Dice (`salign_cli.infer.quality`) and, when reference
labels were given, the true Dice. Rows are sorted by the true Dice when every row has one, else
by the expected Dice, lowest first, so the masks to correct come first. A legend names each
class with its colour.

Self-contained on purpose: the pictures are inline PNGs (``data:`` URIs) and the style sheet is
inline, so the file opens offline, from a USB stick or an e-mail, with no server and no CDN.
Every text from a file (case and class names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from salign_cli.infer.preview import Convention, label_colour, orthogonal_views
from salign_cli.io.atomic import atomic_path
from salign_cli.io.volume import Volume

REVIEW_NAME = "review.html"
VIEW_NAMES = ("axial", "coronal", "sagittal")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
          vertical-align: middle; border: 1px solid #555; }
table { border-collapse: collapse; margin-top: 1em; }
td, th { border-bottom: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: middle;
         text-align: left; }
td.views img { height: 160px; margin-right: 4px; background: #000; }
td.number { font-variant-numeric: tabular-nums; text-align: right; }
"""


@dataclass(frozen=True)
class ReviewRow:
    """One case of the page; ``views`` are PNG bytes (axial, coronal, sagittal)."""

    case: str
    mask: str
    views: tuple[bytes, ...]
    volumes_ml: dict[str, float] = field(default_factory=dict)
    expected_dice: float | None = None
    dice: float | None = None


def review_row(
    case: str,
    mask: Path | str,
    volume: Volume,
    labels: np.ndarray,
    *,
    volumes_ml: dict[str, float],
    expected_dice: float | None,
    dice: float | None = None,
    convention: Convention = "radiological",
) -> ReviewRow:
    """Render one case's three views now, so the page needs no volume kept in memory."""
    pictures = []
    for view in orthogonal_views(volume, labels, convention):
        buffer = io.BytesIO()
        view.save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
    return ReviewRow(case, str(mask), tuple(pictures), volumes_ml, expected_dice, dice)


def ordered_rows(rows: Sequence[ReviewRow]) -> list[ReviewRow]:
    """Worst first: by true Dice when every row has one, else by expected Dice (rows without
    a score last), then by case name."""
    by_truth = _ranked_by_truth(rows)

    def key(row: ReviewRow) -> tuple[bool, float, str]:
        value = row.dice if by_truth else row.expected_dice
        return (value is None, value if value is not None else 0.0, row.case)

    return sorted(rows, key=key)


def _ranked_by_truth(rows: Sequence[ReviewRow]) -> bool:
    return bool(rows) and all(row.dice is not None for row in rows)


def write_review(
    rows: Sequence[ReviewRow], class_names: Sequence[str], path: Path, title: str
) -> Path:
    """Write the page atomically to ``path``; ``class_names[label]`` names label values."""
    with_dice = any(row.dice is not None for row in rows)
    ranked_by = "Dice" if _ranked_by_truth(rows) else "expected Dice"
    legend = " ".join(
        f'<span><i class="swatch" style="background: {_colour(label)}"></i>'
        f"{html.escape(name)}</span>"
        for label, name in enumerate(class_names)
        if label > 0
    )
    header = "<th>#</th><th>case</th><th>" + "</th><th>".join(VIEW_NAMES) + "</th>"
    header += "<th>volume (mL)</th><th>expected Dice</th>"
    header += "<th>Dice</th>" if with_dice else ""
    body = "\n".join(
        _row_html(rank, row, with_dice) for rank, row in enumerate(ordered_rows(rows), 1)
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>{len(rows)} mask(s), worst first (lowest {ranked_by} first). "
        "Views through the centre of the mask; letters mark the patient's sides.</p>\n"
        f'<p class="legend">{legend}</p>\n'
        f'<table id="cases"><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>\n'
        "</body></html>\n"
    )
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return path


def _row_html(rank: int, row: ReviewRow, with_dice: bool) -> str:
    views = "".join(
        f'<td class="views"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"></td>'
        for name, png in zip(VIEW_NAMES, row.views, strict=True)
    )
    volumes = "<br>".join(
        f"{html.escape(name)} {value:.2f}" for name, value in row.volumes_ml.items()
    )
    cells = [
        f'<td class="number">{rank}</td>',
        f'<td class="case" title="{html.escape(row.mask)}">{html.escape(row.case)}</td>',
        views,
        f'<td class="number">{volumes}</td>',
        f'<td class="number expected">{_number(row.expected_dice)}</td>',
    ]
    if with_dice:
        cells.append(f'<td class="number dice">{_number(row.dice)}</td>')
    return f"<tr>{''.join(cells)}</tr>"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _colour(label: int) -> str:
    return "rgb({}, {}, {})".format(*label_colour(label))
