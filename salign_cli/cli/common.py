"""What every command shares: console output, the workspace option, and error-to-exit-code mapping.

Commands never print tracebacks for expected failures: a :class:`~salign_cli.errors.SalignError`
becomes one red line on stderr and its exit code (1 runtime, 2 bad input). ``salign --debug``
re-raises instead, so the full traceback is there when it is wanted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from salign_cli.errors import SalignError
from salign_cli.workspace import Workspace

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

WorkspaceOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on Python 3.10
    typer.Option(
        "--workspace",
        "-w",
        help="Folder for the index, cache and runs. Default: $SALIGN_HOME, else the user data dir.",
        show_default=False,
    ),
]
ReportOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--report", help="Also write a machine-readable JSON report to this file."),
]

F = TypeVar("F", bound=Callable[..., object])


def _current_context() -> Any:
    """The running command's click context or None (Typer >= 0.20 vendors its own click, older
    ones use click; the two Context classes differ, hence ``Any``)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older Typer
        from click import get_current_context  # type: ignore[no-redef]
    return get_current_context(silent=True)


def debug_enabled() -> bool:
    """True when the root ``--debug`` flag was given (tracebacks are then shown)."""
    ctx = _current_context()
    root = ctx.find_root() if ctx else None
    return bool(root and isinstance(root.obj, dict) and root.obj.get("debug"))


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(exit_code)


def reports_errors(command: F) -> F:
    """Wrap a command so expected failures become one line and the right exit code.

    - :class:`SalignError` (and subclasses): its message and ``exit_code``.
    - ``MemoryError`` / CUDA out-of-memory: a hint to lower ``--batch-size``, exit 1.
    - ``KeyboardInterrupt``: exit 130 (long commands save their state before this reaches us).
    """

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except SalignError as error:
            if debug_enabled():
                raise
            raise fail(str(error), error.exit_code) from None
        except MemoryError:
            if debug_enabled():
                raise
            raise fail(
                "out of memory; lower --batch-size (or use --device cpu for large volumes)", 1
            ) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except RuntimeError as error:
            if "out of memory" not in str(error).lower() or debug_enabled():
                raise
            raise fail(
                f"GPU out of memory ({str(error).splitlines()[0]}); lower --batch-size", 1
            ) from None

    return wrapper  # type: ignore[return-value]


def resolve_workspace(workspace: Path | None) -> Workspace:
    """The workspace for a command, created on first use."""
    return Workspace.resolve(workspace).ensure()
