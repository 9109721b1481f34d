"""benchmarks/quality_scores.py: the worst-10 % overlap, and a run on a tiny bundle."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from nifti import write_nifti

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality_scores.py"


def _module():
    spec = importlib.util.spec_from_file_location("quality_scores", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worst_overlap_counts_the_truly_worst_the_score_also_flags() -> None:
    worst_overlap = _module().worst_overlap
    truth = [0.9, 0.2, 0.8, 0.7, 0.3, 0.95, 0.85, 0.6, 0.75, 0.88, 0.5, 0.1]  # 12 -> n = 2
    assert worst_overlap(truth, truth) == (2, 2)
    assert worst_overlap(truth, [-t for t in truth]) == (0, 2)
    flags_one = [0.0 if i == 1 else 1.0 + i for i in range(12)]  # flags case 1 and then case 0
    assert worst_overlap(truth, flags_one) == (1, 2)
    assert worst_overlap([0.5], [0.1]) == (1, 1)


def test_a_run_prints_rows_and_a_final_json_line(tmp_path: Path, make_bundle) -> None:
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for index in range(3):
        name = f"case_{index}.nii.gz"
        write_nifti(images / name, rng.normal(size=(10, 12, 3)).astype(np.float32), affine)
        write_nifti(labels / name, (rng.random((10, 12, 3)) > 0.7).astype(np.uint8), affine)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(make_bundle()), str(images), str(labels), "--last", "2"],
        capture_output=True, encoding="utf-8", check=True,  # it prints ρ, whatever the locale
    )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 2 and summary["worst_10pct_found"].endswith("/1")
    assert "case_1" in done.stdout and "case_2" in done.stdout and "case_0" not in done.stdout
