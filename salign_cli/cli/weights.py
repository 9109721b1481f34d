"""`salign weights ...` (not implemented yet)."""

from __future__ import annotations

import typer

from salign_cli.cli.common import reports_errors
from salign_cli.errors import NotImplementedYetError

weights_app = typer.Typer(help="List, download, inspect, import and publish model bundles.")


@weights_app.command("list")
@reports_errors
def list_bundles() -> None:
    """Not implemented yet."""
    raise NotImplementedYetError("`salign weights list` is not implemented yet")
