"""`salign demo` end to end: the smoke test of the whole product (index → … → evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_real_pipeline_and_writes_masks_beside_the_inputs(cli, tmp_path: Path):
    workspace = tmp_path / "ws"
    report = tmp_path / "demo.json"
    result = cli(
        "demo", "--pretrain-steps", "6", "--finetune-steps", "60", "-w", str(workspace),
        "--report", str(report), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Dice over 4 cases" in result.output
    assert "Traceback" not in result.output

    test_images = workspace / "demo" / "data" / "imagesTs"
    masks = sorted(test_images.glob("*_seg.nii.gz"))
    assert len(masks) == 4
    for mask in masks:
        image = nib.load(test_images / mask.name.replace("_seg", ""))
        written = nib.load(mask)
        assert written.shape == image.shape
        assert np.array_equal(written.affine, image.affine)
        assert written.get_data_dtype() == np.uint8

    payload = json.loads(report.read_text())
    assert payload["synthetic"] is True
    # a flipped or shifted mask would score near 0 on these structures; a working pipeline,
    # even this briefly trained, clearly overlaps them
    assert payload["evaluation"]["overall"]["dice"]["mean"] > 0.4
    assert (workspace / "demo" / "summary.json").is_file()
    assert (workspace / "index.sqlite").is_file()


def test_demo_on_a_missing_folder_is_a_one_line_input_error(cli, tmp_path: Path):
    result = cli("demo", "--data", str(tmp_path / "nowhere"), "-w", str(tmp_path / "ws"))
    assert result.exit_code == 2
    assert "no such folder" in result.output
    assert "Traceback" not in result.output
