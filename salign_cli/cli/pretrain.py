"""`salign pretrain` (not implemented yet)."""

from __future__ import annotations

from salign_cli.cli.common import reports_errors
from salign_cli.errors import NotImplementedYetError


@reports_errors
def pretrain() -> None:
    """Not implemented yet."""
    raise NotImplementedYetError("`salign pretrain` is not implemented yet")
