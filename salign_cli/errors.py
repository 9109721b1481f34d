"""The exceptions salign raises on purpose; the CLI maps each to an exit code.

Every message is one line that names the file (or option) at fault and says what to do.
Library code raises these and never prints or exits; only `salign_cli.cli` decides how to show them.
"""

from __future__ import annotations


class SalignError(Exception):
    """A runtime failure the user can act on (exit code 1)."""

    exit_code = 1


class InputError(SalignError):
    """Bad arguments or bad input data: unreadable scan, wrong dimensions, missing labels (exit 2)."""

    exit_code = 2
