"""Case results summarised: mean ± sd per class and overall (:func:`summarise`).

Means are over the cases where a value is defined; ``sd`` is the sample standard deviation
(ddof = 1; NaN for fewer than two values). The overall figure first averages each case over its
defined classes, then takes mean ± sd across cases, so the sd reflects case-to-case spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salign_cli.metrics.cases import CaseResult, ClassResult, json_float
from salign_cli.metrics.masks import EMPTY_MASK_RULE


@dataclass(frozen=True)
class MeanSd:
    """Mean ± sample sd over the ``n`` defined (finite) values; NaN where undefined."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanSd:
        defined = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
        mean = float(defined.mean()) if defined.size else math.nan
        sd = float(defined.std(ddof=1)) if defined.size >= 2 else math.nan
        return cls(mean=mean, sd=sd, n=int(defined.size))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": json_float(self.mean), "sd": json_float(self.sd), "n": self.n}


@dataclass(frozen=True)
class ClassSummary:
    """One class over all cases. ``hd95_mm`` / ``nsd`` are None when not asked for."""

    label: int
    name: str
    dice: MeanSd
    n_empty_both: int
    hd95_mm: MeanSd | None = None
    n_hd95_undefined: int = 0
    nsd: MeanSd | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "dice": self.dice.to_dict(),
            "n_empty_both": self.n_empty_both,
        }
        if self.hd95_mm is not None:
            result |= {"hd95_mm": self.hd95_mm.to_dict(), "n_hd95_undefined": self.n_hd95_undefined}
        if self.nsd is not None:
            result["nsd"] = self.nsd.to_dict()
        return result


@dataclass(frozen=True)
class EvaluationSummary:
    """Everything :func:`evaluate_folders` found; :meth:`to_dict` is what ``summary.json`` holds.

    ``prediction``/``reference`` are the folders compared, ``None`` for cases scored in memory.
    """

    prediction: Path | None
    reference: Path | None
    cases: tuple[CaseResult, ...]
    classes: tuple[ClassSummary, ...]
    overall_dice: MeanSd
    overall_hd95_mm: MeanSd | None
    unmatched_predictions: tuple[Path, ...] = ()
    unmatched_references: tuple[Path, ...] = ()
    overall_nsd: MeanSd | None = None
    nsd_tolerance_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        overall: dict[str, Any] = {"dice": self.overall_dice.to_dict()}
        if self.overall_hd95_mm is not None:
            overall["hd95_mm"] = self.overall_hd95_mm.to_dict()
        if self.overall_nsd is not None:
            overall["nsd"] = self.overall_nsd.to_dict()
        tolerance = (
            {} if self.nsd_tolerance_mm is None else {"nsd_tolerance_mm": self.nsd_tolerance_mm}
        )
        return {
            "prediction": None if self.prediction is None else str(self.prediction),
            "reference": None if self.reference is None else str(self.reference),
            "empty_mask_rule": EMPTY_MASK_RULE,
            **tolerance,
            "n_cases": len(self.cases),
            "classes": {str(c.label): c.to_dict() for c in self.classes},
            "overall": overall,
            "metric_per_case": [case.to_dict() for case in self.cases],
            "unmatched": {
                "predictions": [str(p) for p in self.unmatched_predictions],
                "references": [str(p) for p in self.unmatched_references],
            },
        }


def summarise_class(label: int, name: str, cases: Sequence[CaseResult]) -> ClassSummary:
    """Mean ± sd of one class over cases, applying the empty-mask rule."""
    results = [case.classes[label] for case in cases]
    hd95_values = _computed(results, "hd95_mm")
    nsd_values = _computed(results, "nsd")
    return ClassSummary(
        label=label,
        name=name,
        dice=MeanSd.of(r.dice for r in results),
        n_empty_both=sum(r.counts.empty_both for r in results),
        hd95_mm=MeanSd.of(hd95_values) if hd95_values else None,
        n_hd95_undefined=sum(not math.isfinite(v) for v in hd95_values),
        nsd=MeanSd.of(nsd_values) if nsd_values else None,
    )


def _computed(results: Iterable[ClassResult], metric: str) -> list[float]:
    """The values of an optional metric (``hd95_mm``, ``nsd``) where it was computed."""
    return [value for r in results if (value := getattr(r, metric)) is not None]


def _overall(cases: Sequence[CaseResult], metric: str) -> MeanSd | None:
    """Mean ± sd across cases of each case's mean of an optional metric; None if never computed."""
    if not any(_computed(case.classes.values(), metric) for case in cases):
        return None
    return MeanSd.of(_case_mean(_computed(case.classes.values(), metric)) for case in cases)


def _case_mean(values: Iterable[float]) -> float:
    """A case's mean over its defined classes (NaN when none is defined)."""
    return MeanSd.of(values).mean


def summarise(
    cases: Sequence[CaseResult],
    class_names: dict[int, str],
    *,
    prediction: Path | None,
    reference: Path | None,
    unmatched_predictions: Sequence[Path] = (),
    unmatched_references: Sequence[Path] = (),
    nsd_tolerance_mm: float | None = None,
) -> EvaluationSummary:
    """Per-class and overall mean ± sd of case results that all hold the classes of ``class_names``.

    ``nsd_tolerance_mm`` is recorded in the summary when the results hold NSD at that tolerance.
    """
    classes = tuple(summarise_class(label, name, cases) for label, name in class_names.items())
    return EvaluationSummary(
        prediction=prediction,
        reference=reference,
        cases=tuple(cases),
        classes=classes,
        overall_dice=MeanSd.of(_case_mean(r.dice for r in case.classes.values()) for case in cases),
        overall_hd95_mm=_overall(cases, "hd95_mm"),
        unmatched_predictions=tuple(unmatched_predictions),
        unmatched_references=tuple(unmatched_references),
        overall_nsd=_overall(cases, "nsd"),
        nsd_tolerance_mm=nsd_tolerance_mm,
    )
