"""The few-label protocol as one reproducible function.

The protocol: docs/explanation/method.md, "How the defaults were chosen".

Why one module of about 630 lines (over the house's 600): the protocol, its runs and its table
are one reproducible recipe; its pieces (split, pre-training reuse, fine-tune and score, summary)
are short functions that only make sense together.

On a folder of labelled scans:

1. **Test split** — the last ``test_cases`` case ids in sorted order (on MSD Hippocampus: the 50
   highest-numbered cases). They are never labelled training data and never validation; they
   are only scored, once per fine-tuned model.
2. **Pre-training**, once per method, on every image of the folder (labels ignored, test images
   included, as docs/explanation/method.md prescribes). ``scratch`` has none: it fine-tunes
   ``--from scratch``.
3. **Fine-tuning** for every k and seed with the protocol's `FinetuneRecipe` (the product's
   defaults unless a profile says otherwise): the k labelled scans are the first k of the
   non-test case ids permuted by the seed (`salign_cli.train.scans.split_cases`), so every
   method sees the same scans for a (k, seed) and the scans for k = 1 are among those for
   k = 2. No model selection: the exported weights are scored, with the bundle's inference
   defaults — as `salign segment` would use them. No validation scans are scored (nothing is
   chosen here), so the runs cost only their training.
4. **Scoring** on the test split at full resolution on each scan's own grid; per run the mean
   Dice over test cases per class, then mean ± sample sd over seeds per (method, k).

Reference methods from outside salign (``benchmarks/plain_unet.py``, the plain 2D U-Net that
salign must beat) join the same table through ``references``: callables run on the same k,
seeds and test split.

Profiles (`PROFILES`): ``full`` — k ∈ {1, 2, 5} × 3 seeds; scratch and sal, each supervised
and semi-supervised (``+semi``); the GPU recipe; ``cpu`` — k ∈ {1, 5} × 2 seeds, scratch and
scratch+semi, the CPU recipe; ``quick`` — a smoke run in minutes. Measured durations are in
docs/benchmarks.md.

Methods are ``scratch``, ``sal``, ``pcl`` or a variant with pre-training overrides in brackets,
e.g. ``sal[la_variant=literal]`` or ``sal[feature_level=1/2,window_radius=0]`` (any field of
`salign_cli.train.pretrain.PretrainOptions`): that is how the open defaults are compared.

Results land in ``output_dir``: ``results.json`` (rewritten after every run, so an interrupted
benchmark keeps what it measured), ``table.md`` and ``few_label.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch

from salign_cli.bench.plot import plot_dice_vs_k
from salign_cli.device import resolve_device
from salign_cli.errors import InputError, OptionError
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.metrics.aggregate import EvaluationSummary, MeanSd
from salign_cli.train.engine import RuntimeOptions, TrainConfig
from salign_cli.train.finetune import finetune
from salign_cli.train.finetune_setup import SCRATCH, FinetuneOptions
from salign_cli.train.pretrain import METHODS, PretrainOptions, pretrain
from salign_cli.train.recipe import CPU_RECIPE, GPU_RECIPE, FinetuneRecipe
from salign_cli.train.scans import LabelledCase, resolve_labelled_cases, seeded_order
from salign_cli.train.validation import HeldOutCase, load_held_out, score_model
from salign_cli.workspace import Workspace

_METHOD = re.compile(r"^(?P<method>[a-z]+)(?:\[(?P<overrides>[^\]]*)\])?(?:\+(?P<semi>[a-z]+))?$")
# "+semi" uses the recipe's semi-supervised method; "+fixmatch"/"+bcp" name one
_SEMI_SUFFIXES = ("semi", "fixmatch", "bcp")


@dataclass(frozen=True)
class MethodSpec:
    """A pre-training method plus option overrides, and whether fine-tuning also learns from
    the unlabelled scans (``semi``: ``None`` = supervised, ``"semi"`` = the recipe's method,
    or a method name); ``label`` is how tables name it."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    semi: str | None = None


def parse_method(text: str) -> MethodSpec:
    """``"sal"`` or ``"sal[la_variant=literal,gp_weight=0.5]"`` → `MethodSpec`.

    Values are converted to the type of the `PretrainOptions` field they set. Raises
    `InputError` for an unknown method or field.

    >>> parse_method("sal[window_radius=0]").overrides
    {'window_radius': 0}
    """
    match = _METHOD.match(text.strip())
    if not match or match["method"] not in METHODS or match["semi"] not in (None, *_SEMI_SUFFIXES):
        raise OptionError(
            "methods",
            f"{text!r}: expected one of {', '.join(METHODS)}, optionally with "
            "overrides such as sal[la_variant=literal] and +semi (or +fixmatch, +bcp)",
        )
    hints = typing.get_type_hints(PretrainOptions)
    known = {f.name for f in dataclasses.fields(PretrainOptions)} - {"method"}
    overrides: dict[str, Any] = {}
    for item in filter(None, (match["overrides"] or "").split(",")):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in known or not value:
            raise OptionError(
                "methods",
                f"{text!r}: {item!r} is not name=value with name one of {', '.join(sorted(known))}",
            )
        typed = _typed(value.strip(), hints[name])
        if typed is _UNPARSED:
            raise OptionError(
                "methods",
                f"{text!r}: {item.strip()!r} is not a value of {name}'s type "
                f"({_type_name(hints[name])})",
            )
        overrides[name] = typed
    return MethodSpec(text.strip(), match["method"], overrides, match["semi"])


def split_methods(text: str) -> tuple[str, ...]:
    """Split a method list on the commas outside brackets: ``sal[a=1,b=2],pcl`` → two methods."""
    methods, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            methods.append(current.strip())
            current = ""
        else:
            current += char
    methods.append(current.strip())
    return tuple(m for m in methods if m)


_UNPARSED = object()
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _typed(text: str, hint: Any) -> Any:
    """``text`` as a value of the field's annotated type, ``_UNPARSED`` when it is none.

    The annotation decides, not the default (a ``None`` default says nothing about the type):
    ``none`` where the type allows ``None``, then bool, int and float members, then ``str``
    (and ``Literal`` members, which the options themselves check).
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    if type(None) in members and text.lower() == "none":
        return None
    for member in sorted(members, key=_is_text):
        if member is bool:
            if text.lower() in _BOOLEANS:
                return _BOOLEANS[text.lower()]
        elif member in (int, float):
            try:
                return member(text)
            except ValueError:
                continue
        elif _is_text(member):
            return text
    return _UNPARSED


def _is_text(member: Any) -> bool:
    origin: Any = typing.get_origin(member)
    return member is str or origin is Literal


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


@dataclass(frozen=True)
class FewLabelProtocol:
    """Every number that decides the benchmark's result (stored in ``results.json``).

    ``finetune`` is the recipe every fine-tune uses (its width also sets the pre-trained
    network's); ``pretrain_*`` configure the pre-training of every non-scratch method.
    """

    methods: tuple[str, ...] = ("scratch", "sal", "scratch+semi", "sal+semi")
    ks: tuple[int, ...] = (1, 2, 5)
    seeds: tuple[int, ...] = (0, 1, 2)
    test_cases: int = 50
    finetune: FinetuneRecipe = GPU_RECIPE
    pretrain_size: int = 64
    pretrain_steps: int = 1600
    pretrain_batch_size: int = 64
    pretrain_lr: float = 1e-3

    def __post_init__(self) -> None:
        for method in self.methods:
            parse_method(method)
        if not self.ks or min(self.ks) < 1:
            raise OptionError("ks", f"must list positive numbers of labelled scans, got {self.ks}")
        if not self.seeds:
            raise OptionError("seeds", "must list at least one seed")
        if self.test_cases < 1:
            raise OptionError("test_cases", f"must be at least 1, got {self.test_cases}")

    def to_dict(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["finetune"] = self.finetune.to_dict()
        return payload


PROFILES: dict[str, FewLabelProtocol] = {
    "full": FewLabelProtocol(),
    "cpu": FewLabelProtocol(
        methods=("scratch", "scratch+semi"),
        ks=(1, 5),
        seeds=(0, 1),
        finetune=CPU_RECIPE,
        pretrain_steps=300,
        pretrain_batch_size=32,
    ),
    "quick": FewLabelProtocol(
        methods=("scratch",),
        ks=(1, 5),
        seeds=(0,),
        finetune=CPU_RECIPE.with_overrides(steps=150),
        pretrain_steps=100,
        pretrain_batch_size=16,
    ),
}


# A reference method from outside salign: (k, seed, labelled case ids, test case ids) → Dice
# per class name plus "mean". It must train on exactly the labelled ids it is given.
Reference = Callable[[int, int, Sequence[str], Sequence[str]], Mapping[str, float]]


@dataclass(frozen=True)
class FewLabelRun:
    """One fine-tuned model scored on the test split."""

    method: str
    k: int
    seed: int
    labelled_case_ids: tuple[str, ...]
    dice: dict[str, float]  # class name → mean over test cases; "mean" = mean of case means
    finetune_s: float
    bundle: str


@dataclass(frozen=True)
class FewLabelRow:
    """Mean ± sample sd over seeds of one (method, k)."""

    method: str
    k: int
    seeds: int
    dice: dict[str, tuple[float, float]]  # class name (and "mean") → (mean, sd)


@dataclass(frozen=True)
class FewLabelResult:
    """Everything one benchmark produced; ``output_dir`` holds the JSON, table and plot."""

    output_dir: Path
    protocol: FewLabelProtocol
    test_case_ids: tuple[str, ...]
    runs: tuple[FewLabelRun, ...]
    rows: tuple[FewLabelRow, ...]
    pretraining: dict[str, dict[str, Any]]
    elapsed_s: float
    environment: dict[str, Any]


def fixed_test_split(case_ids: Sequence[str], count: int) -> list[str]:
    """The fixed test split: the last ``count`` ids in sorted order.

    Raises `InputError` when fewer than ``count + 1`` cases exist (training needs one).

    >>> fixed_test_split(["c", "a", "d", "b"], 2)
    ['c', 'd']
    """
    ordered = sorted(case_ids)
    if count >= len(ordered):
        raise OptionError(
            "test_cases",
            f"{count}: the dataset has only {len(ordered)} labelled scans; use fewer test cases",
        )
    return ordered[-count:]


def test_split_of(cases: Sequence[LabelledCase], count: int) -> list[str]:
    """`fixed_test_split` of the cases' ids, refusing ids that are not their files' names.

    The index gives a case a folder prefix when another indexed folder holds a file of the same
    name (``imagesTr_hippocampus_040``): the sorted order — and with it the test split — would
    then depend on what else the workspace once indexed, and the "last 50" could be training
    scans while real test scans are drawn as labels.
    """
    from salign_cli.io.naming import scan_name

    renamed = [c for c in cases if c.case_id != scan_name(Path(c.image_path))]
    if renamed:
        raise InputError(
            f"{renamed[0].image_path}: its case id {renamed[0].case_id!r} carries a folder "
            "prefix because the workspace also indexes another folder with the same file names, "
            "which would shift the fixed test split; benchmark in a workspace of its own (-w)"
        )
    return fixed_test_split([c.case_id for c in cases], count)


def summarise_runs(runs: Sequence[FewLabelRun], methods: Sequence[str]) -> list[FewLabelRow]:
    """Rows of mean ± sample sd over seeds per (method, k), methods in the order given."""
    rows = []
    for method in methods:
        for k in sorted({r.k for r in runs if r.method == method}):
            group = [r for r in runs if r.method == method and r.k == k]
            names = list(group[0].dice)
            rows.append(
                FewLabelRow(
                    method,
                    k,
                    len(group),
                    {n: _mean_and_sd([r.dice[n] for r in group]) for n in names},
                )
            )
    return rows


def _mean_and_sd(values: Sequence[float]) -> tuple[float, float]:
    summary = MeanSd.of(values)  # the one home of "mean ± sample sd over finite values"
    return summary.mean, summary.sd


def markdown_table(rows: Sequence[FewLabelRow]) -> str:
    """``| method | k | seeds | <class> | ... | mean |`` with ``mean ± sd`` cells."""
    if not rows:
        return ""
    names = list(rows[0].dice)
    lines = [
        "| method | k | seeds | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = [_cell(*row.dice[n]) for n in names]
        lines.append(f"| {row.method} | {row.k} | {row.seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(mean: float, sd: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if math.isfinite(sd) else "")


def environment(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured (for docs/benchmarks.md)."""
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------------
# the protocol


def run_few_label(
    data_dir: Path,
    protocol: FewLabelProtocol | None = None,
    *,
    workspace: Workspace | Path | str | None = None,
    output_dir: Path | None = None,
    runtime: RuntimeOptions | None = None,
    progress: Callable[[str], None] | None = None,
    references: Mapping[str, Reference] | None = None,
) -> FewLabelResult:
    """Run the protocol on ``data_dir`` (a folder of labelled scans) and write its results.

    ``output_dir`` defaults to a new ``runs/bench-<timestamp>/`` in the workspace; it also holds
    the pre-training and fine-tuning runs. ``progress`` receives one line per finished step.
    ``references`` (name → `Reference`) run after salign's methods on the same k and seeds.

    Example::

        result = run_few_label(Path("data/hippocampus"), PROFILES["cpu"])
        print(markdown_table(result.rows))
    """
    protocol = protocol or FewLabelProtocol()
    space = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    space = space.ensure()
    runtime = runtime or RuntimeOptions()
    device = resolve_device(runtime.device)
    say = progress or (lambda message: None)
    output = Path(output_dir) if output_dir is not None else space.new_run_dir("bench")
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    cases, _ = resolve_labelled_cases([Path(data_dir)], space)
    test_ids = test_split_of(cases, protocol.test_cases)
    pool_size = len(cases) - len(test_ids)
    if max(protocol.ks) > pool_size:
        raise OptionError(
            "k",
            f"{max(protocol.ks)}: only {pool_size} labelled scans remain outside the "
            f"{len(test_ids)} test cases; use smaller k or fewer --test-cases",
        )
    test_cases = [c for c in cases if c.case_id in set(test_ids)]
    held_out: dict[str, list[HeldOutCase]] = {}
    runs: list[FewLabelRun] = []
    pretraining: dict[str, dict[str, Any]] = {}
    env = environment(device)

    references = dict(references or {})
    order = [*protocol.methods, *references]

    def save() -> FewLabelResult:
        result = FewLabelResult(
            output_dir=output,
            protocol=protocol,
            test_case_ids=tuple(test_ids),
            runs=tuple(runs),
            rows=tuple(summarise_runs(runs, order)),
            pretraining=pretraining,
            elapsed_s=time.perf_counter() - started,
            environment=env,
        )
        write_results(result)
        return result

    bases: dict[str, str] = {}  # one pre-training per pre-training spec, shared by +semi
    for spec in map(parse_method, protocol.methods):
        pretraining_label = spec.label.split("+", 1)[0]
        if spec.method == SCRATCH:
            bases[pretraining_label] = SCRATCH
        elif pretraining_label not in bases:
            bundle_dir, pretraining[pretraining_label] = _pretrain_method(
                spec, protocol, data_dir, space, output, runtime
            )
            bases[pretraining_label] = str(bundle_dir)
            elapsed = pretraining[pretraining_label]["elapsed_s"]
            say(f"pre-trained {pretraining_label} in {elapsed:.0f} s")
        base = bases[pretraining_label]
        for k in sorted(protocol.ks):
            for seed in protocol.seeds:
                run = _finetune_and_score(
                    spec, k, seed, base, protocol, data_dir, test_cases, held_out,
                    space, output, runtime, device,
                )  # fmt: skip
                runs.append(run)
                say(
                    f"{spec.label} k={k} seed={seed}: test Dice {run.dice['mean']:.3f} "
                    f"({run.finetune_s:.0f} s)"
                )
                save()
    pool_ids = sorted(c.case_id for c in cases if c.case_id not in set(test_ids))
    for name, reference in references.items():
        for k in sorted(protocol.ks):
            for seed in protocol.seeds:
                labelled = seeded_order(pool_ids, seed)[:k]
                started_run = time.perf_counter()
                dice = dict(reference(k, seed, labelled, test_ids))
                elapsed = time.perf_counter() - started_run
                runs.append(FewLabelRun(name, k, seed, tuple(sorted(labelled)), dice, elapsed, ""))
                say(f"{name} k={k} seed={seed}: test Dice {dice['mean']:.3f}")
                save()
    return save()


def _pretrain_method(
    spec: MethodSpec,
    protocol: FewLabelProtocol,
    data_dir: Path,
    workspace: Workspace,
    output: Path,
    runtime: RuntimeOptions,
) -> tuple[Path, dict[str, Any]]:
    options = PretrainOptions(
        method=spec.method,  # type: ignore[arg-type]
        size=protocol.pretrain_size,
        width=protocol.finetune.width,
        **spec.overrides,
    )
    train_config = TrainConfig(
        steps=protocol.pretrain_steps,
        batch_size=protocol.pretrain_batch_size,
        lr=protocol.pretrain_lr,
        checkpoint_every=protocol.pretrain_steps,
    )
    run_dir = output / f"pretrain-{_slug(spec.label)}"
    started = time.perf_counter()
    finished = finished_pretraining(run_dir, options, train_config)
    if finished is not None:
        return finished
    result = pretrain(
        [Path(data_dir)],
        workspace=workspace,
        options=options,
        train_config=train_config,
        runtime=runtime,
        run_dir=run_dir,
    )
    assert result.bundle_dir is not None
    elapsed_s = time.perf_counter() - started
    return result.bundle_dir, _pretraining_summary(result.bundle_dir, result.report, elapsed_s)


def _pretraining_summary(
    bundle: Path, report: Mapping[str, Any], elapsed_s: float | None
) -> dict[str, Any]:
    """What ``results.json`` records of a pre-training (from its run's ``report.json``)."""
    return {
        "bundle": str(bundle),
        "elapsed_s": elapsed_s,
        "final_metrics": report.get("final_metrics", {}),
        "options": report.get("options"),
    }


def finished_pretraining(
    run_dir: Path, options: PretrainOptions, train_config: TrainConfig
) -> tuple[Path, dict[str, Any]] | None:
    """The bundle and summary of a pre-training ``run_dir`` already holds for exactly these
    options and training settings, else ``None``.

    Pre-training does not depend on the fine-tuning seed, so a run per seed (or a rerun after an
    interruption) may point ``-o`` at a folder holding it and skip the most expensive step.
    """
    bundle = run_dir / "bundle"
    try:
        # written after the bundle, with the options and settings it was trained with
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if (
        not (bundle / "salign.json").is_file()
        or report.get("options") != options.to_dict()
        or report.get("train") != train_config.to_dict()
    ):
        return None
    return bundle, {**_pretraining_summary(bundle, report, report.get("elapsed_s")), "reused": True}


def _finetune_and_score(
    spec: MethodSpec,
    k: int,
    seed: int,
    base: str,
    protocol: FewLabelProtocol,
    data_dir: Path,
    test_cases: Sequence[LabelledCase],
    held_out: dict[str, list[HeldOutCase]],
    workspace: Workspace,
    output: Path,
    runtime: RuntimeOptions,
    device: torch.device,
) -> FewLabelRun:
    started = time.perf_counter()
    result = finetune(
        [Path(data_dir)],
        workspace=workspace,
        base=base,
        options=FinetuneOptions(
            labels=k,
            exclude_case_ids=tuple(c.case_id for c in test_cases),
            seed=seed,
            recipe=protocol.finetune,
            semi=_semi_method(spec, protocol.finetune),
            checkpoint_every=protocol.finetune.steps,
            max_validation_cases=0,
        ),
        runtime=runtime,
        run_dir=output / f"finetune-{_slug(spec.label)}-k{k}-s{seed}",
    )
    elapsed = time.perf_counter() - started
    summary = score_bundle(
        result.bundle_dir, test_cases, result.class_names, device=device, prepared=held_out
    )
    dice = {c.name: c.dice.mean for c in summary.classes}
    dice["mean"] = summary.overall_dice.mean
    return FewLabelRun(
        method=spec.label,
        k=k,
        seed=seed,
        labelled_case_ids=result.labelled_case_ids,
        dice=dice,
        finetune_s=elapsed,
        bundle=str(result.bundle_dir),
    )


def score_bundle(
    bundle_dir: Path,
    cases: Sequence[LabelledCase],
    class_names: Mapping[int, str],
    *,
    device: torch.device | str = "cpu",
    prepared: dict[str, list[HeldOutCase]] | None = None,
) -> EvaluationSummary:
    """A fine-tuned bundle's Dice on held-out ``cases``, run as `salign segment` runs it (the
    bundle's own preprocessing and inference defaults).

    ``prepared`` caches the cases read and prepared per preprocessing recipe, for callers that
    score several bundles on the same cases: the scans are then read once per recipe (context
    only changes the network input, so it is no part of the key).
    """
    from salign_cli.bundles.store import build_model, load_bundle

    bundle = load_bundle(bundle_dir)
    preprocess = bundle.contract.preprocessing
    key = repr(sorted(preprocess.to_dict().items()))
    cache = {} if prepared is None else prepared
    if key not in cache:
        cache[key] = [load_held_out(c, preprocess) for c in cases]
    return score_model(
        build_model(bundle),
        preprocess,
        cache[key],
        class_names,
        inference=bundle.contract.inference_defaults,
        device=device,
    )


def _semi_method(spec: MethodSpec, recipe: FinetuneRecipe) -> str:
    """The fine-tune's semi-supervised method: none without a ``+`` suffix."""
    if spec.semi is None:
        return "none"
    if spec.semi == "semi":
        return recipe.semi.method if recipe.semi.method != "none" else "fixmatch"
    return spec.semi


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")


# ---------------------------------------------------------------------------------------------
# output


def results_payload(result: FewLabelResult) -> dict[str, Any]:
    """``results.json``: protocol, environment, test split, every run and the summary rows."""

    def number(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "protocol": result.protocol.to_dict(),
        "environment": result.environment,
        "elapsed_s": result.elapsed_s,
        "test_split": {
            "rule": "last N case ids in sorted order",
            "case_ids": list(result.test_case_ids),
        },
        "pretraining": result.pretraining,
        "runs": [
            {**dataclasses.asdict(run), "dice": {k: number(v) for k, v in run.dice.items()}}
            for run in result.runs
        ],
        "summary": [
            {
                "method": row.method,
                "k": row.k,
                "seeds": row.seeds,
                "dice": {n: {"mean": number(m), "sd": number(s)} for n, (m, s) in row.dice.items()},
            }
            for row in result.rows
        ],
    }


def curves(rows: Sequence[FewLabelRow]) -> dict[str, list[tuple[int, float, float]]]:
    """``{method: [(k, mean Dice, sd), ...]}`` for the plot."""
    by_method: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append((row.k, *row.dice["mean"]))
    return by_method


def write_results(result: FewLabelResult) -> Mapping[str, Path]:
    """Write ``results.json``, ``table.md`` and ``few_label.png`` into the output folder."""
    folder = result.output_dir
    paths = {
        "json": folder / "results.json",
        "table": folder / "table.md",
        "plot": folder / "few_label.png",
    }
    write_json(paths["json"], results_payload(result))
    with atomic_path(paths["table"]) as temporary:
        temporary.write_text(markdown_table(result.rows), encoding="utf-8")
    if result.rows:
        plot_dice_vs_k(curves(result.rows), paths["plot"], title="few-label Dice (test split)")
    return paths
