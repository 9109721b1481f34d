"""`salign bench few-label`: the few-label protocol on a folder of labelled scans.

The protocol: docs/explanation/method.md, "How the defaults were chosen".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from salign_cli.cli.common import (
    DeviceOption,
    QuietOption,
    SeedOption,
    WorkspaceOption,
    console,
    err_console,
    new_app,
)
from salign_cli.errors import InputError

bench_app = new_app(help="Reproducible benchmarks (the few-label protocol).")


def _numbers(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated whole numbers") from None


@bench_app.command("few-label")
def few_label(
    data: Annotated[
        Path, typer.Argument(help="Folder of labelled scans (e.g. MSD imagesTr/ + labelsTr/).")
    ],
    profile: Annotated[
        str,
        typer.Option(
            help="full (GPU: k 1,2,5 x 3 seeds; scratch, sal, scratch+semi, sal+semi; GPU "
            "recipe), cpu (k 1,5 x 2 seeds; scratch, scratch+semi; CPU recipe) or quick (a "
            "smoke run).",
        ),
    ] = "full",
    methods: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            help="Comma-separated: scratch,sal,pcl or variants like sal\\[la_variant=literal]; "
            "+semi (or +fixmatch, +bcp) also learns from the unlabelled scans."
        ),
    ] = None,
    k: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--k", help="Numbers of labelled scans, e.g. 1,2,5,10."),
    ] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds, e.g. 0,1,2.")] = None,  # noqa: UP045
    test_cases: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--test-cases", help="Size of the fixed test split (last ids in sorted order)."
        ),
    ] = None,
    pretrain_steps: Annotated[
        Optional[int], typer.Option("--pretrain-steps", help="Pre-training steps per method.")  # noqa: UP045
    ] = None,
    finetune_steps: Annotated[
        Optional[int], typer.Option("--finetune-steps", help="Fine-tuning steps per run.")  # noqa: UP045
    ] = None,
    device: DeviceOption = "auto",
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="Folder for results.json, table.md, few_label.png."),
    ] = None,
    workspace: WorkspaceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pre-train once per method, fine-tune with k labelled scans x seeds, score a fixed test split.

    The test split is the last --test-cases case ids in sorted order; it is never used for labels,
    unlabelled data or model selection (the exported weights are scored). Prints mean ± sd Dice over seeds per
    method and k, and writes results.json, table.md and few_label.png (Dice vs k).

    [bold]Examples[/]

      salign bench few-label ../shared/data/hippocampus --profile cpu     # 2 CPU cores, ~40 min

      salign bench few-label data/hippocampus --methods "sal,sal\\[la_variant=literal]"

      salign bench few-label data/hippocampus --device cuda -o bench-full  # the full profile
    """
    import dataclasses

    from rich.markdown import Markdown

    from salign_cli.bench.few_label import PROFILES, markdown_table, run_few_label, split_methods
    from salign_cli.train.engine import RuntimeOptions

    if profile not in PROFILES:
        raise InputError(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    base = PROFILES[profile]
    overrides: dict[str, Any] = {
        "methods": split_methods(methods) if methods is not None else None,
        "ks": _numbers(k, "--k"),
        "seeds": _numbers(seeds, "--seeds"),
        "test_cases": test_cases,
        "pretrain_steps": pretrain_steps,
        "finetune": base.finetune.with_overrides(steps=finetune_steps),
    }
    protocol = dataclasses.replace(base, **{n: v for n, v in overrides.items() if v is not None})
    started = time.perf_counter()

    def progress(message: str) -> None:
        if not quiet:
            err_console.print(f"[{time.perf_counter() - started:6.0f} s] {message}")

    result = run_few_label(
        data,
        protocol,
        workspace=workspace,
        output_dir=output,
        runtime=RuntimeOptions(device=device),
        progress=progress,
    )
    console.print(Markdown(markdown_table(result.rows)))
    console.print(
        f"{len(result.runs)} runs in {result.elapsed_s / 60:.1f} min; results in {result.output_dir}"
    )


@bench_app.command("probe")
def probe(
    model: Annotated[
        str,
        typer.Argument(
            help="A bundle or run folder, org/name[@rev], or 'scratch' (a random network)."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option("--data", help="Folder of labelled scans (e.g. MSD imagesTr/ + labelsTr/)."),
    ],
    labels: Annotated[int, typer.Option("--labels", min=1, help="Labelled scans to fit on.")] = 1,
    seed: SeedOption = 0,
    validation: Annotated[
        int, typer.Option("--validation", min=1, help="Validation scans scored.")
    ] = 20,
    test_cases: Annotated[
        int, typer.Option("--test-cases", help="Size of the test split, never touched.")
    ] = 50,
    device: DeviceOption = "auto",
    workspace: WorkspaceOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Probe a network's frozen features: fit a 1x1 head on --labels scans, print validation Dice.

    About a minute on 2 CPU cores: rank pre-training variants by probe Dice, then fine-tune only
    the best few. The test split (last --test-cases ids) is never touched.

    [bold]Examples[/]

      salign bench probe runs/pretrain-20261128-101500 --data ../shared/data/hippocampus

      salign bench probe scratch --data ../shared/data/hippocampus     # the random baseline
    """
    import json

    from salign_cli.bench.probe import probe as run_probe

    result = run_probe(
        model,
        data,
        workspace=workspace,
        labels=labels,
        seed=seed,
        validation_cases=validation,
        test_cases=test_cases,
        device=device,
    )
    if json_output:
        console.print_json(json.dumps(result.to_dict()))
        return
    classes = "  ".join(f"{name} {dice:.3f}" for name, dice in result.dice.items())
    console.print(
        f"probe Dice {result.mean:.3f}  ({classes})  on {len(result.validation_case_ids)} "
        f"validation scans, {result.feature_channels} frozen channels, {result.seconds:.0f} s"
    )
