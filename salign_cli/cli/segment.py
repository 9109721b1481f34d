"""`salign segment`: masks for one or many scans, written beside them with the input's geometry.

Parsing and rendering only; the work is :func:`salign_cli.infer.pipeline.segment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, cast

import typer
from rich.markup import escape

from salign_cli.cli.common import (
    BatchSizeOption,
    DeviceOption,
    QuietOption,
    ReportOption,
    WorkspaceOption,
    console,
    err_console,
)
from salign_cli.io.naming import MASK_SUFFIX

if TYPE_CHECKING:
    from salign_cli.infer.jobs import Job, OutputType
    from salign_cli.infer.preview import Convention
    from salign_cli.infer.report import FileResult, ModelInfo, SegmentSummary


def _model_name(model: ModelInfo) -> str:
    resolved = model.origin.resolved
    if resolved.repo_id:
        return f"{resolved.repo_id}@{resolved.revision} ({(resolved.commit or '')[:12]})"
    return str(resolved.folder)


def _print_summary(summary: SegmentSummary, quiet: bool) -> None:
    written, skipped, failed = (
        summary.by_status(status) for status in ("written", "skipped", "failed")
    )
    if not quiet:
        parts = [f"[green]{len(written)} written[/]"]
        if skipped:
            parts.append(f"{len(skipped)} skipped (already there; --overwrite redoes them)")
        if failed:
            parts.append(f"[red]{len(failed)} failed[/]")
        console.print(f"{', '.join(parts)} in {summary.seconds:.1f} s")
        to_check = summary.to_check()
        if to_check:
            listed = ", ".join(
                f"{escape(result.output.name)} ({result.quality:.3f})" for result in to_check
            )
            console.print(
                f"{len(to_check)} mask(s) to check first (lowest expected Dice): {listed}",
                soft_wrap=True,
            )
    if failed:
        err_console.print(f"[bold red]{len(failed)} failed:[/]")
        for result in failed:
            err_console.print(f"  {escape(result.error or str(result.input))}", soft_wrap=True)
        if summary.stopped_early:
            err_console.print("stopped at the first failure (--fail-fast)")


def segment(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Scan files, folders (their scans; a folder of DICOM files is one series) "
            "or quoted glob patterns.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--output",
            "-o",
            help="Mask file for one input (ending .nii.gz, .nrrd, .mha picks the format; .dcm "
            "with --output-type dicom-seg), or a folder for many. Default: beside each input as "
            "<name><suffix>.nii.gz (.dcm for DICOM-SEG).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--model",
            "-m",
            help="Bundle folder, registry name or Hub id org/name\\[@revision]. Default: the "
            "newest fine-tuned run in the workspace.",
            show_default=False,
        ),
    ] = None,
    workspace: WorkspaceOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    tta: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--tta/--no-tta",
            help="Average over the mirrored views the model was trained on (2-4x slower). "
            "Default: what the bundle's fine-tuning chose.",
            show_default=False,
        ),
    ] = None,
    largest_component: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--largest-component/--all-components",
            help="Keep only the largest connected part of each class. Default: the bundle's "
            "choice (fine-tuning keeps it when it raised validation Dice).",
            show_default=False,
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Trade accuracy for speed: run the model at twice its in-plane spacing "
            "(4x fewer pixels; a 1.5 mm CT model runs at 3 mm). Masks stay on the input's grid.",
        ),
    ] = False,
    probabilities: Annotated[
        bool,
        typer.Option(
            "--probabilities",
            help="Also save softmax probabilities (<mask>_probabilities.nii.gz: classes along "
            "the 5th NIfTI dimension, vector intent; uint16 scaled by 1/65535, since NIfTI has no "
            "float16).",
        ),
    ] = False,
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="Also write review.html beside the masks: one self-contained page (opens "
            "offline) with axial, coronal and sagittal views of every new mask, class volumes "
            "and expected Dice, worst first.",
        ),
    ] = False,
    reference: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            "--reference",
            help="Folder of reference labels (<case>.nii.gz, as salign evaluate takes them): "
            "each new mask's Dice against its reference is printed, saved in --report and "
            "shown on the --review page, which then ranks the masks by it.",
        ),
    ] = None,
    uncertainty: Annotated[
        bool,
        typer.Option(
            "--uncertainty",
            help="Also save a voxel map of the model's doubt beside each mask "
            "(<mask>_uncertainty.nii.gz: 1 - the top softmax probability, 0 = certain; the "
            "input's grid). Every mask's expected Dice is reported either way.",
        ),
    ] = False,
    preview: Annotated[
        bool, typer.Option("--preview", help="Also save a PNG overlay (<mask>_preview.png).")
    ] = False,
    preview_convention: Annotated[
        str,
        typer.Option(
            "--preview-convention",
            help="radiological: the patient's right on the image's left (as CT/MR are read); "
            "neurological: mirrored. Either way each panel is marked R/L.",
        ),
    ] = "radiological",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo masks that already exist.")
    ] = False,
    suffix: Annotated[
        str, typer.Option("--suffix", help="Appended to the input name for default outputs.")
    ] = MASK_SUFFIX,
    output_type: Annotated[
        str,
        typer.Option(
            "--output-type",
            help="nifti: a label map with the input's geometry. dicom-seg: a DICOM Segmentation "
            "object referencing the source series (DICOM series inputs only), one segment per "
            "class of the model.",
        ),
    ] = "nifti",
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look for scans in sub-folders too.")
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first bad file.")
    ] = False,
    report: ReportOption = None,
    quiet: QuietOption = False,
) -> None:
    """Segment scans with a fine-tuned model; masks keep each input's exact shape and affine.

    Existing masks are skipped (an interrupted batch resumes); a bad file is reported and the
    batch goes on. Exit code 2 if any file failed.

    [bold]Examples[/]

      salign segment ct.nii.gz -o ct_mask.nii.gz
      salign segment scans/ "more/*.nii.gz" --model org/name@v1      # masks beside each scan
      salign segment scans/ --recursive -o masks/ --tta --report run.json
      salign segment CT_SERIES/ --output-type dicom-seg          # CT_SERIES_seg.dcm beside it
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from salign_cli.cli.progress import ScanBar
    from salign_cli.infer.jobs import SegmentOptions
    from salign_cli.infer.pipeline import segment as run_segment

    options = SegmentOptions(
        device=device,
        batch_size=batch_size,
        tta=tta,
        largest_component=largest_component,
        probabilities=probabilities,
        uncertainty=uncertainty,
        review=review,
        references=reference,
        preview=preview,
        preview_convention=cast("Convention", preview_convention),  # SegmentOptions checks it
        overwrite=overwrite,
        suffix=suffix,
        recursive=recursive,
        fail_fast=fail_fast,
        output_type=cast("OutputType", output_type),  # plan_jobs checks it
        fast=fast,
    )
    progress = Progress(
        TextColumn("[bold]segment[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        disable=quiet,
        transient=True,
    )
    task = progress.add_task("", total=None)
    scan_bar = ScanBar(progress)  # slices of one long scan (LONG_SCAN_SLICES or more)

    def notify(message: str) -> None:
        progress.console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def on_start(jobs: list[Job], model_info: ModelInfo, device_name: str) -> None:
        progress.update(task, total=len(jobs), completed=0)
        if not quiet:
            progress.console.print(
                f"model {escape(_model_name(model_info))} on {device_name}; "
                f"{len(jobs)} scan(s) to segment"
            )

    def on_file(result: FileResult) -> None:
        if result.status == "skipped":
            return
        progress.advance(task)
        progress.update(task, description=escape(result.input.name))
        if result.status == "written" and not quiet:
            volumes = ", ".join(f"{k} {v:.2f} mL" for k, v in result.volumes_ml.items())
            quality = "" if result.quality is None else f"; expected Dice {result.quality:.3f}"
            quality += "" if result.dice is None else f"; Dice {result.dice:.3f}"
            progress.console.print(
                f"[green]✓[/] {escape(str(result.output))}  [dim]{escape(volumes + quality)}[/]"
            )
        elif result.status == "failed":
            progress.console.print(f"[red]✗[/] {escape(result.error or '')}", soft_wrap=True)

    with progress:
        summary = run_segment(
            inputs,
            output,
            model=model,
            workspace=workspace,
            options=options,
            report=report,
            on_start=on_start,
            on_file=on_file,
            notify=notify,
            on_slices=lambda job, done, total: scan_bar.update(escape(job.input.name), done, total),
        )
    _print_summary(summary, quiet)
    if summary.review is not None and not quiet:
        console.print(f"review page: {escape(str(summary.review))}")
    if report is not None and not quiet:
        console.print(f"report: {escape(str(report))}")
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
