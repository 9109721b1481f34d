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


class OptionError(InputError):
    """A bad value of one option of a stage, named by its field (``labels``,
    ``pair_distance_mm``), never by a command-line flag.

    The library knows fields, not flags: ``str()`` is the library's wording ("labels must be at
    least 1, got 0"); only the CLI, which owns the flags, renders the field as its flag
    ("--labels must be ...", `salign_cli.cli.common.flag_of`). ``args`` holds both parts, so
    the error survives pickling (a worker process raising it).
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(option, problem)
        self.option = option
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.option} {self.problem}"
