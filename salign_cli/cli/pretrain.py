"""`salign pretrain`: self-supervised alignment pre-training on unlabelled scans."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from salign_cli.cli.common import (
    BatchSizeOption,
    CompileOption,
    DeviceOption,
    QuietOption,
    ReportOption,
    ResumeFromOption,
    ResumeOption,
    SeedOption,
    WorkspaceOption,
    console,
    err_console,
    resolve_workspace,
    resume_target,
)
from salign_cli.cli.progress import TrainingProgress
from salign_cli.config import PRETRAIN_PAIRS, PRETRAIN_STEPS
from salign_cli.workspace import is_run_folder


def _child_arguments(context: typer.Context, run_dir: Path) -> list[str]:
    """This command's parsed options as arguments for the per-GPU processes, minus ``--gpus``."""
    arguments: list[str] = []
    folders: list[str] = []
    for param in context.command.params:
        value = context.params.get(param.name)
        if param.name in ("gpus", "run_dir") or value is None:
            continue
        if param.param_type_name == "argument":
            folders.extend(str(v) for v in value)
        elif getattr(param, "is_flag", False):
            if value:
                arguments.append(param.opts[0])
            elif param.secondary_opts:
                arguments.append(param.secondary_opts[0])
        else:
            arguments.append(f"{param.opts[0]}={value}")
    return [*arguments, f"--run-dir={run_dir}", *folders]


def _render_summary(report: Mapping[str, object]) -> None:
    from salign_cli.objectives.alignment import is_collapsed

    metrics = report.get("final_metrics") or {}
    assert isinstance(metrics, dict)
    table = Table(title="pre-training", show_header=False)
    table.add_row("method", str(report["method"]))
    table.add_row("steps", str(report["steps"]))
    for key in ("loss", "la", "gp", "feature_std", "mean_offdiag_similarity", "slices_per_s"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4g}")
    if report.get("elapsed_s") is not None:
        table.add_row("time", f"{report['elapsed_s']:.1f} s")
    table.add_row("bundle", str(report["bundle"]))
    console.print(table)
    if "feature_std" in metrics and is_collapsed(metrics):
        err_console.print(
            "[yellow]warning:[/] the embedding collapsed (feature spread "
            f"{metrics['feature_std']:.4f}); use --la-variant sharp or a lower --lr"
        )


def pretrain(
    ctx: typer.Context,
    folders: Annotated[
        Optional[list[Path]],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Argument(help="Folders of scans (labels are ignored). Default: every indexed scan."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = PRETRAIN_STEPS,
    batch_size: BatchSizeOption = None,
    size: Annotated[
        int, typer.Option("--size", "--crop", help="Training slice size in pixels (crop/pad).")
    ] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = 1e-3,
    method: Annotated[str, typer.Option(help="sal | pcl | scratch.")] = "sal",
    la_variant: Annotated[
        str, typer.Option("--la-variant", help="sharp (collapse-guarded) | literal (paper).")
    ] = "sharp",
    window_radius: Annotated[
        int, typer.Option("--window-radius", help="WLA window radius r; 0 = full LA.")
    ] = 3,
    feature_level: Annotated[
        str,
        typer.Option(
            "--feature-level",
            help="Map(s) LA reads: bottleneck | 1/8 | 1/4 | 1/2 | full; join several with + "
            "(1/4+1/2).",
        ),
    ] = "1/4",
    pair_distance: Annotated[
        int, typer.Option("--pair-distance", help="Largest slice distance d of a pair.")
    ] = 2,
    pair_shift: Annotated[
        int,
        typer.Option(
            "--pair-shift",
            help="Shift slice j's crop by up to this many pixels, independently of slice i "
            "(0 = same crop; >0 stops LA being solved by position alone).",
        ),
    ] = 0,
    pair_distance_mm: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--pair-distance-mm",
            help="Largest pair distance in mm instead of slices (1 mm MR and 5 mm CT then pair "
            "the same anatomy).",
        ),
    ] = None,
    pair_rotation: Annotated[
        float,
        typer.Option(
            "--pair-rotation", help="Rotate slice j by up to this many degrees more than slice i."
        ),
    ] = 0.0,
    pair_scale: Annotated[
        float,
        typer.Option("--pair-scale", help="Scale slice j by up to 1 ± this more than slice i."),
    ] = 0.0,
    la_weight: Annotated[
        float, typer.Option("--la-weight", help="Weight of LA (0 = GP alone).")
    ] = 1.0,
    gp: Annotated[
        str,
        typer.Option(
            help="Global positional loss: contrastive (slices near in position attract, the "
            "measured best) | relative | absolute | none."
        ),
    ] = "contrastive",
    gp_weight: Annotated[float, typer.Option("--gp-weight", help="λ, the GP loss weight.")] = 1.0,
    width: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="U-Net base width. Default: 32 on CUDA, 16 on CPU."),
    ] = None,
    spacing: Annotated[
        str,
        typer.Option(
            help="In-plane spacing the model is trained and run at (a fine-tune from it "
            "keeps it): auto (what `salign finetune` would plan from scratch on this device: "
            "the median of the scans, CT at least 1.5 mm, coarsened where a step would hold "
            "fewer than 8 whole slices, e.g. LA 2018's 0.625 mm MR to ~0.95 mm on a CPU), "
            "native (each scan's own), or mm (e.g. 1.0).",
        ),
    ] = "auto",
    device: DeviceOption = "auto",
    compile_model: CompileOption = False,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Data-loader worker processes (0 = inline). Default: 0 on CPU, up to 8 on CUDA."
        ),
    ] = None,
    seed: SeedOption = 0,
    resume: ResumeOption = False,
    resume_from: ResumeFromOption = None,
    rebuild_cache: Annotated[
        bool, typer.Option("--rebuild-cache", help="Re-prepare cached slices.")
    ] = False,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Save a checkpoint every N steps.")
    ] = 100,
    gpus: Annotated[
        int,
        typer.Option(help="Processes for DDP, one per GPU (with --device cpu: CPU processes)."),
    ] = 1,
    from_bundle: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--from", help="Start from a bundle: org/name[@rev], a bundle or run folder."),
    ] = None,
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--run-dir", hidden=True, help="Run folder (set by the --gpus launcher)."),
    ] = None,
    workspace: WorkspaceOption = None,
    report: ReportOption = None,
    quiet: QuietOption = False,
) -> None:
    """Pre-train the segmentation U-Net on [bold]unlabelled[/] scans with Self-Supervised Alignment Learning (SAL).

    Two nearby slices of one scan show almost the same anatomy, slightly displaced. SAL draws such pairs (|i − j| ≤ --pair-distance), gives both the same spatial augmentation, and trains (1) [bold]local alignment[/] (LA): each pixel's embedding must find its match in the other slice, within a (2r+1)² window at --feature-level (WLA, r = --window-radius; 0 = full LA), with the collapse-guarded [italic]sharp[/] variant (softmax, τ = 0.1) unless --la-variant literal; and (2) [bold]global position[/] (GP, weight --gp-weight): the global feature learns where the slices lie in their scan (by default contrastively: global features of slices at nearby positions attract, others repel; the best of the measured variants, see docs/benchmarks.md). --method pcl trains positional contrastive learning only (the PCL baseline); --method scratch writes an untrained bundle for comparisons.

    The bundle lands in runs/pretrain-<time>/bundle, where `salign finetune` finds it. metrics.jsonl logs the loss terms and a collapse monitor (feature spread, mean similarity).

    [bold]Examples[/]

      salign pretrain ./scans --steps 300               # quick CPU run

      salign pretrain ./scans --width 32 --steps 1500   # reference setting (GPU)

      salign pretrain --resume                          # continue the newest run exactly

      salign pretrain --resume-from runs/pretrain-<time> # continue that run exactly

      salign pretrain ./scans --gpus 4                  # DDP on 4 GPUs
    """
    from salign_cli.errors import InputError
    from salign_cli.io.atomic import write_json
    from salign_cli.train.distributed import launch, under_torchrun
    from salign_cli.train.engine import RuntimeOptions, TrainConfig
    from salign_cli.train.pretrain import PretrainOptions
    from salign_cli.train.pretrain import pretrain as run_pretrain

    space = resolve_workspace(workspace)
    if gpus > 1 and not under_torchrun():
        launch_dir = space.new_run_dir("pretrain")
        if not quiet:
            err_console.print(f"launching {gpus} processes (DDP) in {launch_dir}")
        raise typer.Exit(launch(gpus, ["pretrain", *_child_arguments(ctx, launch_dir)]))
    options = PretrainOptions(
        method=method,  # type: ignore[arg-type]
        size=size,
        la_variant=la_variant,  # type: ignore[arg-type]
        window_radius=window_radius,
        feature_level=feature_level,
        pair_distance=pair_distance,
        pair_distance_mm=pair_distance_mm,
        pair_shift=pair_shift,
        pair_rotation_deg=pair_rotation,
        pair_scale=pair_scale,
        gp=gp,  # type: ignore[arg-type]
        gp_weight=gp_weight,
        la_weight=la_weight,
        width=width,
        spacing=spacing,
    )
    train_config = TrainConfig(
        steps=steps,
        batch_size=PRETRAIN_PAIRS if batch_size is None else batch_size,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    runtime = RuntimeOptions(device=device, compile=compile_model, workers=workers)
    resume_run = resume_target(resume, resume_from)
    if resume_run is True and folders and (not folders[0].is_dir() or is_run_folder(folders[0])):
        # the spelling before --resume-from: `--resume RUN_DIR` (kept so scripts keep working);
        # a folder of scans instead is the command as first typed, and --resume its newest run
        if len(folders) > 1:
            raise InputError("--resume continues one run: --resume-from RUN_DIR")
        resume_run, folders = folders[0], []
    with TrainingProgress(quiet) as reporter:
        reporter.begin("pre-training")
        result = run_pretrain(
            folders or [],
            workspace=space,
            options=options,
            train_config=train_config,
            runtime=runtime,
            resume=resume_run,
            rebuild_cache=rebuild_cache,
            base=from_bundle,
            run_dir=run_dir,
            reporter=reporter,
        )
    if not result.report:
        return  # a non-zero DDP rank: rank 0 reports
    if report is not None:
        write_json(report, result.report)
    if not quiet:
        _render_summary(result.report)
