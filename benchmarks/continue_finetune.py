"""More labels for a model already fine-tuned: continue from it vs a fresh fine-tune (issue 23).

Fine-tunes ``--from BUNDLE`` (a fine-tuned bundle of the same classes: the plan keeps its head
and takes `CONTINUE_STEPS_FRACTION` of the recipe's steps) on ``--labels`` scans drawn with
``--seed`` exactly as a fresh ``few_label.py --k K --seeds S`` run draws them, and scores it on the fixed test split with the protocol's own scorer. Compare with the
fresh run's row (``benchmarks/few_label.py``): Dice and wall time.

    python benchmarks/continue_finetune.py ../shared/data/hippocampus --from K1_BUNDLE --labels 5 \\
        --seed 0 -o OUT -w WS

Prints the row and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from salign_cli.bench.few_label import PROFILES, score_bundle, test_split_of
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.scans import resolve_labelled_cases
from salign_cli.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--from", dest="base", required=True, help="a fine-tuned bundle")
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="instead of the plan's")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    args = parser.parse_args()
    protocol = PROFILES["cpu"]
    workspace = Workspace(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], workspace)
    test_ids = set(test_split_of(cases, protocol.test_cases))
    started = time.perf_counter()
    result = finetune(
        [args.data],
        workspace=workspace,
        base=args.base,
        options=FinetuneOptions(
            labels=args.labels,
            exclude_case_ids=tuple(sorted(test_ids)),
            seed=args.seed,
            recipe=protocol.finetune,
            steps=args.steps,
            max_validation_cases=0,
        ),
        run_dir=args.output / f"continue-k{args.labels}-s{args.seed}",
    )
    finetune_s = time.perf_counter() - started
    test_cases = [c for c in cases if c.case_id in test_ids]
    summary = score_bundle(result.bundle_dir, test_cases, result.class_names)
    row = {
        "benchmark": "continue_finetune",
        "from": args.base,
        "labels": args.labels,
        "seed": args.seed,
        "labelled_case_ids": result.labelled_case_ids,
        "steps": result.report.get("steps"),
        "plan_steps_reason": (result.report.get("plan") or {}).get("reasons", {}).get("steps"),
        "dice": {c.name: round(c.dice.mean, 4) for c in summary.classes},
        "mean_dice": round(summary.overall_dice.mean, 4),
        "finetune_s": round(finetune_s, 1),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(
        f"continue from {args.base}: k = {args.labels}, seed {args.seed}: "
        f"Dice {row['mean_dice']} in {row['finetune_s']} s ({row['steps']} steps)"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    sys.exit(main())
