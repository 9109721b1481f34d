"""Scoring held-out scans: Dice per foreground class of labels predicted in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salign_cli.io.volume import volume_from_array
from salign_cli.train.validation import HeldOutCase, score_predictions


def test_validation_scores_foreground_classes_of_predictions_in_memory(tmp_path: Path) -> None:
    # class 1: TP 1, FP 1 -> Dice 2/3; class 2: TP 1, FN 1 -> 2/3; background is not scored
    reference = np.array([[[1, 0, 0, 2, 2]]])
    prediction = np.array([[[1, 1, 0, 2, 0]]])
    volume = volume_from_array(reference.astype(np.float32), np.eye(4))
    case = HeldOutCase("x", volume, reference, None, tmp_path / "x_seg.nii.gz")  # type: ignore[arg-type]
    summary = score_predictions([(case, prediction)], {0: "background", 1: "a", 2: "b"})
    (result,) = summary.cases
    assert sorted(result.classes) == [1, 2]
    assert result.classes[1].dice == pytest.approx(2 / 3)
    assert result.classes[2].dice == pytest.approx(2 / 3)
    assert result.prediction is None and result.reference == tmp_path / "x_seg.nii.gz"
    assert summary.overall_dice.mean == pytest.approx(2 / 3)
