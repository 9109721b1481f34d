"""What the test-time flip buys in Dice, and what it costs in time, for one fine-tuned bundle.

`salign segment` averages the network's softmax over the mirrored views the model was trained
with (``tta``, on by default); each view is one more forward pass over every slice, so it is
the largest part of the CPU time on a large volume (issue "Time to a good mask": a 512×512×200
CT at 27 s with it, the network 13–15 s of that). This scores the same bundle with and without
it on labelled volumes — each case's mean foreground Dice, the bundle's own post-processing —
and times both.

    python benchmarks/tta_dice_cost.py BUNDLE_DIR DATA_DIR [--cases ID,ID] [--classes 1,2]

``DATA_DIR`` is MSD-style (``imagesTr/`` and ``labelsTr/`` with matching names). Prints a table
and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's salign, not whichever one is installed

from salign_cli.infer.predictor import Predictor, segment_volume  # noqa: E402 (after the path)
from salign_cli.io.volume import read_volume  # noqa: E402 (after the path)
from salign_cli.metrics.aggregate import MeanSd  # noqa: E402 (after the path)
from salign_cli.metrics.masks import dice  # noqa: E402 (after the path)

SCAN_ENDING = ".nii.gz"


def case_dice(labels: np.ndarray, reference: np.ndarray, classes: list[int]) -> float:
    """Mean Dice over ``classes`` (a class absent from both masks is left out)."""
    scores = [dice(labels == c, reference == c) for c in classes]
    kept = [s for s in scores if not np.isnan(s)]
    return float(np.mean(kept)) if kept else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("data", type=Path, help="MSD-style folder: imagesTr/ + labelsTr/")
    parser.add_argument("--cases", help="comma-separated case ids (default: every image)")
    parser.add_argument("--classes", help="comma-separated label values (default: all > 0)")
    args = parser.parse_args()

    images = sorted((args.data / "imagesTr").glob(f"*{SCAN_ENDING}"))
    if args.cases:
        wanted = set(args.cases.split(","))
        images = [p for p in images if p.name.removesuffix(SCAN_ENDING) in wanted]
    predictors = {
        tta: Predictor.from_bundle(str(args.bundle), device="cpu", tta=tta) for tta in (True, False)
    }
    rows = []
    for image in images:
        case = image.name.removesuffix(SCAN_ENDING)
        volume = read_volume(image)
        reference = np.asarray(read_volume(args.data / "labelsTr" / image.name).array).astype(int)
        classes = (
            [int(c) for c in args.classes.split(",")]
            if args.classes
            else [int(c) for c in np.unique(reference) if c > 0]
        )
        row: dict[str, object] = {"case": case}
        for tta, predictor in predictors.items():
            started = time.perf_counter()
            labels = segment_volume(
                predictor, volume, largest_component=predictor.largest_component()
            ).labels
            row[f"seconds_tta_{tta}"] = round(time.perf_counter() - started, 2)
            row[f"dice_tta_{tta}"] = case_dice(np.asarray(labels), reference, classes)
        rows.append(row)
        print(
            f"| {case} | {row['dice_tta_True']:.4f} | {row['dice_tta_False']:.4f} | "
            f"{row['seconds_tta_True']} | {row['seconds_tta_False']} |",
            flush=True,
        )
    summary = {
        name: MeanSd.of(float(r[name]) for r in rows).mean  # type: ignore[arg-type]
        for name in ("dice_tta_True", "dice_tta_False", "seconds_tta_True", "seconds_tta_False")
    }
    print(
        f"| mean of {len(rows)} | {summary['dice_tta_True']:.4f} | {summary['dice_tta_False']:.4f}"
        f" | {summary['seconds_tta_True']:.2f} | {summary['seconds_tta_False']:.2f} |"
    )
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    env = {
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "bundle": str(args.bundle),
    }
    print(json.dumps({"env": env, "summary": summary, "cases": rows}))


if __name__ == "__main__":
    main()
