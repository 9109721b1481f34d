"""One fine-tune scored on validation scans: how the recipe's defaults were chosen.

    python benchmarks/finetune_validation.py ../shared/data/hippocampus --k 5 --seed 0
    python benchmarks/finetune_validation.py DATA --k 1 --set context=0 --name context0
    python benchmarks/finetune_validation.py DATA --k 1 --semi bcp

The test split (the last 50 case ids) is excluded from everything — labels, unlabelled data and
validation — so choices made with this script never see it. The k labelled scans are drawn as
everywhere in salign; ``--validation`` other labelled scans (drawn with the seed) are scored at
full resolution with the bundle's inference defaults, and with ``--semi`` every remaining
non-test scan is unlabelled data. ``--set field=json`` overrides a `FinetuneRecipe` field,
``--augment field=json`` an `AugmentConfig` field and ``--semi-set field=json`` a `SemiConfig`
field. Prints one JSON line (also appended to ``--log``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from salign_cli.bench.few_label import test_split_of
from salign_cli.train.engine import RuntimeOptions
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.recipe import CPU_RECIPE, GPU_RECIPE
from salign_cli.train.scans import resolve_labelled_cases
from salign_cli.workspace import Workspace


def overrides(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        value = json.loads(text)
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="defaults")
    parser.add_argument("--profile", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--set", action="append", default=[], help="recipe field=json")
    parser.add_argument("--augment", action="append", default=[], help="augment field=json")
    parser.add_argument("--semi", default="none", help="none | fixmatch | bcp")
    parser.add_argument("--semi-set", action="append", default=[], help="SemiConfig field=json")
    parser.add_argument("--base", default="scratch", help="scratch or a pre-training run")
    parser.add_argument("--validation", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("-w", "--workspace", type=Path)
    parser.add_argument("--log", type=Path, default=Path("benchmarks/results/validation.jsonl"))
    args = parser.parse_args()
    recipe = dataclasses.replace(
        CPU_RECIPE if args.profile == "cpu" else GPU_RECIPE, **overrides(args.set)
    )
    recipe = dataclasses.replace(
        recipe, augment=dataclasses.replace(recipe.augment, **overrides(args.augment))
    )
    recipe = dataclasses.replace(
        recipe, semi=dataclasses.replace(recipe.semi, **overrides(args.semi_set))
    )
    space = Workspace.resolve(args.workspace).ensure()
    cases, _ = resolve_labelled_cases([args.data], space)
    test = test_split_of(cases, 50)
    started = time.perf_counter()
    result = finetune(
        [args.data],
        workspace=space,
        base=args.base,
        options=FinetuneOptions(
            labels=args.k,
            seed=args.seed,
            recipe=recipe,
            semi=args.semi,
            exclude_case_ids=tuple(test),
            max_validation_cases=args.validation,
            checkpoint_every=recipe.steps,
        ),
        runtime=RuntimeOptions(device=args.device),
    )
    assert result.validation is not None
    line = {
        "name": args.name,
        "k": args.k,
        "seed": args.seed,
        "semi": args.semi,
        "base": args.base,
        "set": args.set,
        "augment": args.augment,
        "semi_set": args.semi_set,
        "validation_dice": round(result.validation.overall_dice.mean, 4),
        "per_class": {c.name: round(c.dice.mean, 4) for c in result.validation.classes},
        "inference": result.report["inference"],
        "seconds": round(time.perf_counter() - started),
        "train_s": round(result.report["elapsed_s"], 1),
        "steps": result.report["steps"],
        "run": str(result.run_dir),
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as stream:
        stream.write(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
