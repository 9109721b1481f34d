"""The SAL ablation by frozen-feature probe: pre-train each variant, probe it, one table.

    python benchmarks/sal_ablation.py ../shared/data/hippocampus -o /tmp/ablation
    python benchmarks/sal_ablation.py DATA --variants "scratch,sal,sal[gp=none]" --steps 300

Each variant is a `salign bench few-label` method spec (``sal[la_variant=literal]``, ``pcl``,
``scratch`` = a random network). Pre-training runs on every image of DATA (labels ignored, as
docs/explanation/method.md prescribes); the probe (`salign_cli.bench.probe`) fits a 1×1 head on
the frozen features of one labelled scan and scores 20 validation scans — never the test split
(the last 50 ids). Prints the table and, last, one JSON line; ``results.json`` in the output
folder is rewritten after every variant, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from salign_cli.bench.few_label import parse_method
from salign_cli.bench.probe import probe
from salign_cli.train.engine import RuntimeOptions, TrainConfig
from salign_cli.train.pretrain import PretrainOptions, pretrain
from salign_cli.workspace import Workspace

VARIANTS = (
    "scratch",
    "sal",
    "sal[gp=none]",
    "sal[la_weight=0]",
    "sal[la_variant=literal]",
    "sal[pair_distance_mm=1]",
    "sal[pair_distance_mm=4]",
    "sal[pair_distance_mm=8]",
    "sal[gp_weight=0.1]",
    "sal[gp_weight=3]",
    "sal[feature_level=1/2]",
    "sal[feature_level=1/4+1/2]",
    "sal[window_radius=0]",
    "sal[pair_shift=4,pair_rotation_deg=10,pair_scale=0.1]",
    "pcl",
)


def split_variants(text: str) -> list[str]:
    """Commas outside brackets separate variants."""
    return [v for v in re.split(r",(?![^\[]*\])", text) if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=300, help="pre-training steps")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--probe-seeds", default="0", help="probe seeds (labelled scan choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/ablation"))
    parser.add_argument("-w", "--workspace", type=Path)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    space = Workspace.resolve(args.workspace).ensure()
    seeds = [int(s) for s in args.probe_seeds.split(",")]
    rows: list[dict] = []
    for text in split_variants(args.variants):
        spec = parse_method(text)
        started = time.perf_counter()
        model, final = "scratch", {}
        if spec.method != "scratch":
            result = pretrain(
                [args.data],
                workspace=space,
                options=PretrainOptions(method=spec.method, **spec.overrides),  # type: ignore[arg-type]
                train_config=TrainConfig(
                    steps=args.steps, batch_size=args.batch_size, checkpoint_every=args.steps
                ),
                runtime=RuntimeOptions(device=args.device),
                run_dir=args.output / re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-"),
            )
            model, final = str(result.bundle_dir), result.report.get("final_metrics", {})
        pretrain_s = time.perf_counter() - started
        probes = [
            probe(model, args.data, workspace=space, seed=s, device=args.device) for s in seeds
        ]
        rows.append({
            "variant": text, "probe_dice": sum(p.mean for p in probes) / len(probes),
            "probe_per_seed": [p.mean for p in probes], "pretrain_s": round(pretrain_s),
            "la": final.get("la"), "gp": final.get("gp"), "feature_std": final.get("feature_std"),
        })  # fmt: skip
        (args.output / "results.json").write_text(json.dumps(rows, indent=1))
        print(f"{text}: probe Dice {rows[-1]['probe_dice']:.3f} ({pretrain_s:.0f} s)", flush=True)
    print("| variant | probe Dice | final LA | final GP | pre-training s |")
    print("|---|---|---|---|---|")
    for row in rows:
        la = "–" if row["la"] is None else f"{row['la']:.4f}"
        gp = "–" if row["gp"] is None else f"{row['gp']:.4f}"
        print(f"| {row['variant']} | {row['probe_dice']:.3f} | {la} | {gp} | {row['pretrain_s']} |")
    print(json.dumps({"benchmark": "sal_ablation", "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
