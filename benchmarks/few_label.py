"""The few-label benchmark with the plain reference beside salign, in one run.

    python benchmarks/few_label.py ../shared/data/hippocampus --profile cpu
    python benchmarks/few_label.py ../shared/data/hippocampus --profile full --device cuda
    python benchmarks/few_label.py ../shared/data/hippocampus --methods scratch --k 5 --steps 2000

Runs `salign bench few-label`'s protocol (`salign_cli.bench.few_label`) and then
``benchmarks/plain_unet.py`` on the same k, seeds, labelled scans and test split, on the same
machine, with the plain script's own budget (600 steps × 32 slices at width 16 on a CPU profile,
1,500 × 64 at width 32 on the full profile; docs/explanation/method.md, "Baselines"). Prints
the table and, last, one JSON line with every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plain_unet

from salign_cli.bench.few_label import PROFILES, markdown_table, run_few_label, split_methods
from salign_cli.train.engine import RuntimeOptions

PLAIN_BUDGET = {"full": (1500, 64, 32), "cpu": (600, 32, 16), "quick": (150, 32, 16)}


def plain_reference(data: Path, profile: str):
    steps, batch, width = PLAIN_BUDGET[profile]
    names = json.loads((data / "dataset.json").read_text()).get("labels", {})

    def run(k: int, seed: int, labelled: Sequence[str], test: Sequence[str]) -> Mapping[str, float]:
        result = plain_unet.run(
            data, k, seed, steps=steps, batch=batch, width=width, test_cases=len(test)
        )
        if sorted(result["labelled"]) != sorted(labelled) or result["test"] != list(test):
            raise RuntimeError("plain_unet.py drew other cases than salign; the split rules differ")
        dice = {names.get(str(c), f"class_{c}"): d for c, d in result["dice"].items()}
        return {**dice, "mean": result["mean"]}

    return run


def finite(value: float) -> float | None:
    """JSON has no NaN (one seed has no sd): write null."""
    return value if math.isfinite(value) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", help="comma-separated, e.g. scratch,sal")
    parser.add_argument("--k", help="e.g. 1,5")
    parser.add_argument("--seeds", help="e.g. 0,1")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("-w", "--workspace", type=Path)
    parser.add_argument("--steps", type=int, help="fine-tuning steps instead of the profile's")
    args = parser.parse_args()
    protocol = PROFILES[args.profile]
    overrides = {
        "methods": split_methods(args.methods) if args.methods else None,
        "ks": tuple(int(v) for v in args.k.split(",")) if args.k else None,
        "seeds": tuple(int(v) for v in args.seeds.split(",")) if args.seeds else None,
    }
    protocol = dataclasses.replace(protocol, **{k: v for k, v in overrides.items() if v})
    protocol = dataclasses.replace(
        protocol, finetune=protocol.finetune.with_overrides(steps=args.steps)
    )
    references = {} if args.no_plain else {"plain": plain_reference(args.data, args.profile)}
    started = time.perf_counter()
    result = run_few_label(
        args.data,
        protocol,
        workspace=args.workspace,
        output_dir=args.output,
        runtime=RuntimeOptions(device=args.device),
        progress=lambda line: print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True),
        references=references,
    )
    print(markdown_table(result.rows))
    print(json.dumps({
        "benchmark": "few_label", "profile": args.profile, "elapsed_s": round(result.elapsed_s),
        "environment": result.environment, "output": str(result.output_dir),
        "rows": [{"method": r.method, "k": r.k, "seeds": r.seeds,
                  "mean": finite(r.dice["mean"][0]), "sd": finite(r.dice["mean"][1])}
                 for r in result.rows],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
