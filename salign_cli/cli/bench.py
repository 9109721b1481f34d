"""`salign bench ...` (not implemented yet)."""

from __future__ import annotations

import typer

from salign_cli.cli.common import reports_errors
from salign_cli.errors import NotImplementedYetError

bench_app = typer.Typer(help="Reproducible benchmarks (the few-label protocol).")


@bench_app.command("few-label")
@reports_errors
def few_label() -> None:
    """Not implemented yet."""
    raise NotImplementedYetError("`salign bench few-label` is not implemented yet")
