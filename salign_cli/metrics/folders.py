"""Two folders (or two files) evaluated: :func:`evaluate_folders` → ``summary.json``.

Pairs the files (:mod:`salign_cli.metrics.pairing`), scores each pair
(:func:`~salign_cli.metrics.cases.evaluate_case`), and summarises the cases
(:func:`~salign_cli.metrics.aggregate.summarise`) with class names from ``dataset.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from salign_cli.data.dataset_json import find_dataset_json, read_dataset_json
from salign_cli.errors import InputError, OptionError
from salign_cli.io.atomic import write_json
from salign_cli.metrics.aggregate import EvaluationSummary, summarise
from salign_cli.metrics.cases import CaseResult, ClassResult, evaluate_case
from salign_cli.metrics.masks import ConfusionCounts
from salign_cli.metrics.pairing import match_cases

SUMMARY_NAME = "summary.json"


def class_names_from_dataset_json(labels: Path) -> dict[int, str]:
    """Label → name from the ``dataset.json`` beside or one level above the labels (MSD or
    nnU-Net v2, read by :func:`~salign_cli.data.dataset_json.read_dataset_json`). No file → ``{}``.
    """
    root = find_dataset_json(labels)
    if root is None:
        return {}
    return dict(read_dataset_json(root).label_names or {})


def _validated_classes(classes: Iterable[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(classes)))
    if not chosen or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in chosen):
        raise OptionError(
            "classes", f"{','.join(map(str, chosen))}: give label numbers > 0, e.g. 1,2"
        )
    return chosen


def _reference_labels(case: CaseResult) -> set[int]:
    return {label for label, result in case.classes.items() if result.counts.n_ref > 0}


def evaluate_folders(
    pred: Path,
    labels: Path,
    *,
    classes: Sequence[int] | None = None,
    hd95: bool = False,
    nsd_tolerance_mm: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationSummary:
    """Dice (HD95 with ``hd95=True``, NSD at ``nsd_tolerance_mm``) per case and class, with
    mean ± sd per class and overall.

    ``pred`` and ``labels`` are two folders (matched by case name, see :func:`match_cases`) or
    two files. ``classes`` defaults to every label > 0 present in any reference. Empty masks
    follow :data:`EMPTY_MASK_RULE`. ``progress(done, total)`` is called after each case.
    Raises :class:`InputError` for no matches, grids that differ, fractional label values, or
    a negative NSD tolerance.

    Example (folders on disk)::

        summary = evaluate_folders(Path("predictions"), Path("labelsTr"), hd95=True)
        write_summary(summary, Path("predictions/summary.json"))
        print(summary.classes[0].name, summary.classes[0].dice.mean)
    """
    chosen = _validated_classes(classes) if classes is not None else None
    if nsd_tolerance_mm is not None and not (
        math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0
    ):
        raise OptionError(
            "nsd_tolerance_mm", f"{nsd_tolerance_mm:g}: give a tolerance in mm >= 0, e.g. 2"
        )
    match = match_cases(pred, labels)
    results: list[CaseResult] = []
    for done, pair in enumerate(match.pairs, start=1):
        # Without --classes, score every label seen in the pair now and drop below those found
        # in no reference at all, so each file is read only once.
        results.append(
            evaluate_case(
                pair.prediction,
                pair.reference,
                chosen,
                with_hd95=hd95,
                case=pair.case,
                nsd_tolerance_mm=nsd_tolerance_mm,
            )
        )
        if progress:
            progress(done, len(match.pairs))
    if chosen is None:
        chosen = tuple(sorted(set().union(*map(_reference_labels, results))))
        if not chosen:
            raise InputError(
                f"{labels}: every reference is empty (no label > 0); name the labels to score "
                "with --classes"
            )
        results = [
            _restricted(case, chosen, with_hd95=hd95, with_nsd=nsd_tolerance_mm is not None)
            for case in results
        ]
    names = class_names_from_dataset_json(labels)
    return summarise(
        results,
        {label: names.get(label, f"class {label}") for label in chosen},
        prediction=pred,
        reference=labels,
        unmatched_predictions=match.unmatched_predictions,
        unmatched_references=match.unmatched_references,
        nsd_tolerance_mm=nsd_tolerance_mm,
    )


def _restricted(
    case: CaseResult, classes: Sequence[int], *, with_hd95: bool, with_nsd: bool
) -> CaseResult:
    """``case`` with exactly ``classes``: a class it did not score was absent from both masks."""
    empty = ClassResult(
        ConfusionCounts(0, 0, 0, case.n_voxels),
        math.nan,
        math.nan if with_hd95 else None,
        math.nan if with_nsd else None,
    )
    return CaseResult(
        case.case,
        case.prediction,
        case.reference,
        {label: case.classes.get(label, empty) for label in classes},
        n_voxels=case.n_voxels,
    )


def default_summary_path(pred: Path) -> Path:
    """``PRED/summary.json`` (beside the prediction when PRED is a single file)."""
    return (pred if pred.is_dir() else pred.parent) / SUMMARY_NAME


def write_summary(summary: EvaluationSummary, path: Path) -> Path:
    """Write ``summary.to_dict()`` as JSON atomically (NaN written as null), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary.to_dict())
    return path
