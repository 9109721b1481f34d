"""Scoring a trained network on held-out scans as `salign segment` would run it.

Each scan is segmented at full resolution on its own grid (`Predictor`, with the given test-time
mirroring) and scored against its label file with `salign_cli.metrics.cases.score_arrays`, so a
validation or benchmark Dice is the Dice a user would measure on the written masks. Used by
fine-tuning (validation, and the one choice it makes: keeping the largest component) and by the
benchmarks (the test split).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from salign_cli.data.preprocess import PreparedScan, PreprocessConfig, prepare_scan
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.io.volume import Volume, label_values, read_volume
from salign_cli.metrics.aggregate import EvaluationSummary, summarise
from salign_cli.metrics.cases import CaseResult, score_arrays
from salign_cli.model.unet import UNet2D
from salign_cli.train.scans import LabelledCase


@dataclass(frozen=True, eq=False)
class HeldOutCase:
    """A held-out scan read once: its volume, reference labels (and their file) and prepared
    slices."""

    case_id: str
    volume: Volume
    reference: np.ndarray
    prepared: PreparedScan
    label_path: Path


def load_held_out(case: LabelledCase, preprocess: PreprocessConfig) -> HeldOutCase:
    """Read a labelled scan for scoring (the label on the image's own grid, as written)."""
    volume = read_volume(case.image_path)
    reference = label_values(read_volume(case.label_path))
    prepared = prepare_scan(volume, preprocess)
    return HeldOutCase(case.case_id, volume, reference, prepared, Path(case.label_path))


def predict_held_out(
    model: UNet2D,
    preprocess: PreprocessConfig,
    cases: Iterable[HeldOutCase],
    *,
    inference: InferenceDefaults,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[tuple[HeldOutCase, np.ndarray]]:
    """Each case segmented at full resolution on its own grid, as `salign segment` would
    (``inference.tta``/``mirror``; post-processing is left to `score_predictions`)."""
    from salign_cli.infer.predictor import Predictor

    predictor = Predictor(
        model.eval(), preprocess, device=device, tta=inference.tta, mirror=inference.mirror
    )
    predictions = []
    for done, case in enumerate(cases, start=1):
        predictions.append((case, predictor.predict(case.volume, prepared=case.prepared).labels))
        if progress is not None:
            progress(done)
    return predictions


def score_predictions(
    predictions: Sequence[tuple[HeldOutCase, np.ndarray]],
    class_names: Mapping[int, str],
    *,
    largest_component: bool = False,
) -> EvaluationSummary:
    """Dice of every foreground class per case; ``largest_component`` post-processes first."""
    from salign_cli.infer.postprocess import keep_largest_component

    foreground = {label: name for label, name in class_names.items() if label > 0}
    results = []
    for case, labels in predictions:
        if largest_component:
            labels = keep_largest_component(labels, list(foreground))
        scores = score_arrays(labels, case.reference, foreground, case.volume.spacing_mm)
        results.append(CaseResult(case.case_id, None, case.label_path, scores, labels.size))
    return summarise(results, dict(foreground), prediction=None, reference=None)


def score_model(
    model: UNet2D,
    preprocess: PreprocessConfig,
    cases: Iterable[HeldOutCase],
    class_names: Mapping[int, str],
    *,
    inference: InferenceDefaults,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvaluationSummary:
    """Segment each case with the given inference defaults and score its foreground classes.

    Labels are predicted on the scan's own grid (as `salign segment` writes them), so the Dice
    is the one a user would measure on the written masks.
    """
    predictions = predict_held_out(
        model, preprocess, cases, inference=inference, device=device, progress=progress
    )
    return score_predictions(
        predictions, class_names, largest_component=inference.largest_component
    )


def dice_table(summary: EvaluationSummary) -> dict[str, dict[str, float | int | None]]:
    """``{class name: {"mean", "sd", "n"}}`` plus ``"mean"`` (per-case mean over classes)."""
    table = {c.name: c.dice.to_dict() for c in summary.classes}
    table["mean"] = summary.overall_dice.to_dict()
    return table
