"""benchmarks/train_step_layout.py: both layouts timed per slice count, a final JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step_layout.py"


def test_a_run_prints_a_row_per_slice_count_and_a_final_json_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--slices", "2,4", "--height", "16", "--width-px", "32",
         "--width", "4", "--steps", "1", "--threads", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert [row["slices"] for row in summary["rows"]] == [2, 4]
    assert all(row["nchw_s"] > 0 and row["channels_last_s"] > 0 for row in summary["rows"])
    assert summary["threads"] == 1
    assert [line.split()[0] for line in lines[2:4]] == ["2", "4"]  # the table's rows
