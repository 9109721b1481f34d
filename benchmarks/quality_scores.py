"""Does `salign segment`'s quality score find the bad masks? (issue 23, the clinician's loop)

Segments held-out labelled scans with a bundle exactly as ``salign segment`` does (its
largest-component default included), and compares each mask's expected Dice
(`salign_cli.infer.quality`) with its true Dice (mean over the foreground classes,
`salign_cli.metrics.cases.score_arrays`): Spearman's ρ (scipy) over the cases, and how many of
the truly worst 10 % (at least one case) the score also puts in its worst 10 %.

    python benchmarks/quality_scores.py BUNDLE IMAGES LABELS [--cases ID,ID | --last N] [--json OUT]

``--last N`` takes the last N case names in sorted order (the hippocampus test split is
``--last 50``). Prints a per-case table, the summary, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from salign_cli.infer.predictor import Predictor, segment_volume
from salign_cli.io.naming import case_name
from salign_cli.io.volume import label_values, read_volume
from salign_cli.metrics.cases import score_arrays


def worst_overlap(truth: list[float], score: list[float], fraction: float = 0.1) -> tuple[int, int]:
    """(hits, n): of the ``n`` truly worst cases (``fraction`` of them, at least one), how many
    the score also ranks among its ``n`` worst."""
    n = max(1, math.ceil(fraction * len(truth)))
    truly = set(np.argsort(truth, kind="stable")[:n].tolist())
    flagged = set(np.argsort(score, kind="stable")[:n].tolist())
    return len(truly & flagged), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("images", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--cases", help="comma-separated case names")
    parser.add_argument("--last", type=int, help="the last N case names in sorted order")
    parser.add_argument("--json", type=Path, help="write the per-case rows here")
    args = parser.parse_args()
    files = {case_name(p): p for p in sorted(args.images.glob("*.nii*"))}
    cases = args.cases.split(",") if args.cases else sorted(files)
    if args.last:
        cases = cases[-args.last :]
    predictor = Predictor.from_bundle(args.bundle)
    classes = range(1, predictor.num_classes)
    rows = []
    started = time.perf_counter()
    for case in cases:
        volume = read_volume(files[case])
        reference = label_values(read_volume(args.labels / files[case].name))
        prediction = segment_volume(
            predictor, volume, largest_component=predictor.largest_component()
        )
        scores = score_arrays(prediction.labels, reference, classes, volume.spacing_mm)
        quality = prediction.quality.score if prediction.quality else None
        dice = float(np.mean([scores[c].dice for c in classes]))
        rows.append({"case": case, "dice": dice, "expected_dice": quality})
        print(
            f"{case:28s} Dice {dice:.3f}  expected {quality if quality is None else round(quality, 3)}"
        )
    usable = [r for r in rows if r["expected_dice"] is not None]
    truth = [r["dice"] for r in usable]
    score = [float(r["expected_dice"]) for r in usable]
    rho = float(spearmanr(truth, score).statistic)
    hits, n = worst_overlap(truth, score)
    summary = {
        "benchmark": "quality_scores",
        "bundle": args.bundle,
        "cases": len(rows),
        "scored": len(usable),
        "spearman": round(rho, 3),
        "worst_10pct_found": f"{hits}/{n}",
        "mean_dice": round(float(np.mean(truth)), 4),
        "mean_expected_dice": round(float(np.mean(score)), 4),
        "seconds": round(time.perf_counter() - started, 1),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"\nSpearman ρ {rho:.3f}; worst 10 % found {hits}/{n}; mean Dice {summary['mean_dice']}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
