"""Does `salign suggest` pick better scans to label than chance? (issue 23)

Two questions, each answered on the fixed test split (never used for a choice):

- **cold** (no label yet): fine-tune on the ``--k`` scans `suggest_scans` picks from the
  training pool with ``--model`` (a pre-training run: SAL features), against ``--draws``
  random draws of ``k`` (``seeded_order`` with seeds 0 … draws − 1, as ``--labels k --seed s``
  draws them).
- **loop** (``--start CASE_ID``): fine-tune on that one scan (or take ``--start-model``, its
  fine-tuned bundle), then the start scan plus ``k − 1`` that `suggest_scans` picks with that
  model (features + expected Dice), against the start scan plus ``k − 1`` random additions.

With ``--test DIR`` (LA 2018: ``SCRATCH/train`` as DATA, ``SCRATCH/test`` as the test folder)
every scan of DATA is in the pool and the test scans are DIR's. Every arm is fine-tuned alike: the CPU recipe, supervised (``--unlabelled none``, so four to
eight fine-tunes fit a session on 2 cores; the selection is what is compared), from scratch
unless ``--from``, no validation scans (the plan decides from the labelled scans), seed 0.

    python benchmarks/suggest_vs_random.py ../shared/data/hippocampus --model runs/pretrain-X \\
        --k 5 --draws 3 -o OUT -w WS
    python benchmarks/suggest_vs_random.py ../shared/data/hippocampus --start hippocampus_101 \\
        --k 5 --draws 3 -o OUT -w WS

Prints one row per arm, the summary, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from salign_cli.bench.few_label import PROFILES, score_bundle, test_split_of
from salign_cli.suggest.stage import suggest_scans
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.scans import ScanEntry, resolve_labelled_cases, seeded_order
from salign_cli.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", help="a pre-training run or bundle (cold start)")
    parser.add_argument("--start", help="the one case already labelled (loop)")
    parser.add_argument("--start-model", help="the bundle fine-tuned on --start (loop)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--from", dest="base", default="scratch")
    parser.add_argument("--test-cases", type=int, help="default: the CPU protocol's")
    parser.add_argument(
        "--test", type=Path, help="a folder of labelled test scans instead (LA 2018's test 20)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    args = parser.parse_args()
    if (args.start is None) == (args.model is None):
        parser.error("give --model (cold start) or --start (loop)")
    protocol = PROFILES["cpu"]
    workspace = Workspace(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], workspace)
    if args.test is None:
        test_ids = set(test_split_of(cases, args.test_cases or protocol.test_cases))
        pool = [c for c in cases if c.case_id not in test_ids]
        test_cases = [c for c in cases if c.case_id in test_ids]
    else:  # every scan of DATA is in the pool; the test scans are a folder of their own
        pool, (test_cases, _) = cases, resolve_labelled_cases([args.test], workspace)
    start = [] if args.start is None else [args.start]
    candidates = [_unlabelled(c) for c in pool if c.case_id not in start]

    rows: list[dict[str, Any]] = []
    if start and args.start_model is None:
        rows.append(_finetune_and_score("start", start, args, protocol, test_cases, workspace))
        args.start_model = rows[0]["bundle"]
    started = time.perf_counter()
    picked = suggest_scans(
        candidates,
        args.k - len(start),
        labelled=[_unlabelled(c) for c in pool if c.case_id in start],
        model=args.model or args.start_model,
        workspace=workspace,
        device="cpu",
    )
    suggest_s = time.perf_counter() - started
    arms = [("suggested", [*start, *picked.case_ids])]
    others = [c.case_id for c in candidates]
    for draw in range(args.draws):
        arms.append(
            (f"random {draw}", [*start, *seeded_order(others, draw)[: args.k - len(start)]])
        )

    rows += [
        _finetune_and_score(name, ids, args, protocol, test_cases, workspace) for name, ids in arms
    ]
    suggested = next(row for row in rows if row["arm"] == "suggested")
    random_dice = [row["mean_dice"] for row in rows if row["arm"].startswith("random")]
    summary: dict[str, Any] = {
        "benchmark": "suggest_vs_random",
        "mode": "loop" if start else "cold",
        "model": args.model or args.start_model,
        "k": args.k,
        "start": args.start,
        "suggested_dice": suggested["mean_dice"],
        "random_mean": round(statistics.mean(random_dice), 4),
        "random_sd": round(statistics.stdev(random_dice), 4) if len(random_dice) > 1 else None,
        "suggest_s": round(suggest_s, 1),
        "rows": rows,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    summary["suggested_minus_random"] = round(summary["suggested_dice"] - summary["random_mean"], 4)
    print("| arm | labelled cases | test Dice | fine-tune s |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['arm']} | {', '.join(row['cases'])} | {row['mean_dice']:.3f} | {row['finetune_s']:.0f} |"
        )
    print(
        f"suggested {summary['suggested_dice']:.3f} vs random {summary['random_mean']:.3f}"
        f" ± {summary['random_sd'] or 0:.3f} over {args.draws} draws"
    )
    print(json.dumps(summary))


def _unlabelled(case: Any) -> ScanEntry:
    """A labelled case as the scan suggest sees (its label unused)."""
    return ScanEntry(
        case_id=case.case_id,
        image_path=case.image_path,
        content_hash=case.content_hash,
        modality=case.modality,
        spacing_mm=case.spacing_mm,
    )


def _finetune_and_score(
    arm: str,
    case_ids: list[str],
    args: argparse.Namespace,
    protocol: Any,
    test_cases: list[Any],
    workspace: Workspace,
) -> dict[str, Any]:
    started = time.perf_counter()
    slug = arm.replace(" ", "-")
    result = finetune(
        [args.data],
        workspace=workspace,
        base=args.base,
        options=FinetuneOptions(
            case_ids=tuple(case_ids),
            seed=0,
            recipe=protocol.finetune,
            unlabelled="none",
            max_validation_cases=0,
            checkpoint_every=protocol.finetune.steps,
        ),
        run_dir=args.output / f"{'loop' if args.start else 'cold'}-k{args.k}-{slug}",
    )
    finetune_s = time.perf_counter() - started
    scored = score_bundle(result.bundle_dir, test_cases, result.class_names)
    row = {
        "arm": arm,
        "cases": case_ids,
        "dice": {c.name: round(c.dice.mean, 4) for c in scored.classes},
        "mean_dice": round(scored.overall_dice.mean, 4),
        "finetune_s": round(finetune_s, 1),
        "bundle": str(result.bundle_dir),
    }
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
