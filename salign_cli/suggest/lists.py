"""The list `salign suggest` makes, in memory and on disk (CSV or JSON), and the reader that
lets ``salign finetune --cases FILE`` take it back. Torch-free: the CLI imports it to parse
``--cases``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salign_cli.errors import InputError

CSV_COLUMNS = ("rank", "case_id", "image_path", "group_size", "expected_dice", "reason")


@dataclass(frozen=True)
class Suggestion:
    """One scan to label next: its place in the list, where it is and why it was picked."""

    rank: int
    case_id: str
    image_path: str
    group_size: int  # scans like it (0 for a farthest-first fill)
    expected_dice: float | None  # the fine-tuned model's, on this scan
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "case_id": self.case_id,
            "image_path": self.image_path,
            "group_size": self.group_size,
            "expected_dice": self.expected_dice,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SuggestResult:
    """The suggestions, best first, and what they were chosen from."""

    suggestions: tuple[Suggestion, ...]
    model: str
    model_kind: str  # "pretrained" (features only) or "finetuned" (features + expected Dice)
    candidates: int
    labelled: int
    seconds: float

    @property
    def case_ids(self) -> list[str]:
        return [s.case_id for s in self.suggestions]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report; ``cases`` is what ``salign finetune --cases FILE.json`` reads."""
        return {
            "cases": self.case_ids,
            "suggestions": [s.to_dict() for s in self.suggestions],
            "model": self.model,
            "model_kind": self.model_kind,
            "candidates": self.candidates,
            "labelled": self.labelled,
            "seconds": round(self.seconds, 1),
        }


def check_list_path(path: Path) -> None:
    """Refuse, before any work, a list path that cannot be written: a folder, or a file in a
    folder that does not exist."""
    if path.is_dir():
        raise InputError(f"-o {path}: a folder; give a file name such as {path / 'next.csv'}")
    if not path.parent.is_dir():
        raise InputError(f"-o {path}: no folder {path.parent}; create it or write elsewhere")


def write_suggestions(path: Path, result: SuggestResult) -> None:
    """The list as CSV (``.csv``: one row per scan, `CSV_COLUMNS`) or JSON (anything else);
    both are what ``salign finetune --cases FILE`` reads. Written atomically; a file that
    cannot be written is an `InputError` naming it."""
    try:
        _write(path, result)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"{path}: cannot write the list ({reason}); choose another -o") from None


def _write(path: Path, result: SuggestResult) -> None:
    from salign_cli.io.atomic import atomic_path, write_json

    if path.suffix.lower() != ".csv":
        write_json(path, result.to_dict())
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for suggestion in result.suggestions:
        row = suggestion.to_dict()
        row["expected_dice"] = "" if row["expected_dice"] is None else row["expected_dice"]
        writer.writerow(row)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")


def read_case_list(path: Path) -> tuple[str, ...]:
    """Case ids from a file: a CSV with a ``case_id`` column, a JSON ``{"cases": [...]}`` (what
    `write_suggestions` writes) or a JSON list, or plain text (ids separated by commas or lines).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read the case list ({error.strerror})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and "case_id" not in rows[0]:
            raise InputError(f"{path}: no case_id column; write it with `salign suggest -o`")
        ids = [row["case_id"].strip() for row in rows]
    elif suffix == ".json":
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        listed = payload.get("cases") if isinstance(payload, dict) else payload
        if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
            raise InputError(f'{path}: expected {{"cases": ["id", ...]}} or a list of case ids')
        ids = [str(i).strip() for i in listed]
    else:
        ids = [part.strip() for line in text.splitlines() for part in line.split(",")]
    ids = [i for i in ids if i]
    if not ids:
        raise InputError(f"{path}: lists no case ids")
    return tuple(ids)
