"""The `salign` command: a Typer app whose commands live one per module in this package.

The CLI layer parses options, renders Rich output and maps errors to exit codes
(0 ok, 1 runtime failure, 2 bad arguments or input). The work happens in the typed API
(`salign_cli.api` and the stage modules), which is what tests and notebooks call.
"""

from __future__ import annotations

import typer

from salign_cli import __version__
from salign_cli.cli import (
    bench,
    demo,
    evaluate,
    finetune,
    index,
    info,
    pretrain,
    segment,
    suggest,
    weights,
)
from salign_cli.cli.common import new_app

HELP = """\
Few-label 3D CT/MRI segmentation with Self-Supervised Alignment Learning (SAL).

[bold]Typical session[/]

  salign demo                                 # whole pipeline on synthetic data, ~minutes on a CPU
  salign index ./scans                        # find scans, check them, pair images with labels
  salign pretrain ./scans                     # alignment pre-training on the unlabelled scans
  salign finetune --labels 5                  # fine-tune with 5 labelled scans
  salign segment in.nii.gz -o mask.nii.gz     # masks with the input's exact geometry
  salign suggest 4                            # which unlabelled scans to label next

Everything salign makes lives in one workspace folder (--workspace, else $SALIGN_HOME,
else the user data folder). Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or input.
"""

app = new_app(
    add_completion=False,
    name="salign",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"salign {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks instead of one-line errors."
    ),
) -> None:
    """Few-label 3D CT/MRI segmentation with Self-Supervised Alignment Learning (SAL)."""
    ctx.obj = {"debug": debug}


app.command("index")(index.index)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("segment")(segment.segment)
app.command("evaluate")(evaluate.evaluate)
app.command("suggest")(suggest.suggest)
app.add_typer(weights.weights_app, name="weights")
app.add_typer(bench.bench_app, name="bench")
app.command("info")(info.info)
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()
