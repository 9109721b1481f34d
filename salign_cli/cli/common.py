"""What every command shares: console output, the options several commands take, the app
factory, and error-to-exit-code mapping.

Commands never print tracebacks for expected failures: a :class:`~salign_cli.errors.SalignError`
becomes one red line on stderr and its exit code (1 runtime, 2 bad input). ``salign --debug``
re-raises instead, so the full traceback is there when it is wanted. That mapping is applied in
one place, `new_app`: every command registered on an app it makes is wrapped by
`reports_errors`, so no command can forget it.

An option that several commands take is declared once here (``DeviceOption``, ``QuietOption``,
...), so its name and help read the same in every command.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from salign_cli.errors import OptionError, SalignError
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
DeviceOption = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps."),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars or summaries; errors, warnings and results print."
    ),
]
SeedOption = Annotated[
    int,
    typer.Option(
        "--seed", help="Seed for every random choice: which scans, initialisation and data order."
    ),
]
BatchSizeOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--batch-size",
        min=1,
        show_default=False,
        help="Samples per step (all GPUs together) or slices per forward pass (segment). "
        "Default: pretrain 32 slice pairs; finetune as many slices as fit the profile's pixel "
        "budget; segment 32 on CUDA, 8 on MPS, 4 on CPU.",
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the training step (slow start, then faster)."),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the newest run of this command exactly, with the options and scans it "
        "stored; other options are ignored.",
    ),
]
ResumeFromOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--resume-from",
        metavar="RUN_DIR",
        help="Continue this run folder exactly (implies --resume).",
    ),
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


# Field name -> parameter name, where a command's flag reads better than the library's field
# (``--cases`` fills ``case_ids``). Every other field is the flag of the same name.
FIELD_FLAGS: dict[str, str] = {
    "case_ids": "cases",
    "exclude_case_ids": "exclude",
    "max_validation_cases": "max_validation",
    "pair_rotation_deg": "pair_rotation",
    "ks": "k",
    "nsd_tolerance_mm": "nsd",
}


def flag_of(field: str) -> str:
    """The running command's flag for a library field (``batch_size`` -> ``--batch-size``), or
    the field itself where the command has no such flag (an API-only field: a config file's)."""
    ctx = _current_context()
    name = FIELD_FLAGS.get(field, field)
    for param in ctx.command.params if ctx else ():
        if param.name == name and param.opts:
            forms: list[str] = list(param.opts)
            return next((opt for opt in forms if opt.startswith("--")), forms[0])
    return field


def error_message(error: SalignError) -> str:
    """The one line a failure prints: an `OptionError` names the command's flag, not the field."""
    if isinstance(error, OptionError):
        return f"{flag_of(error.option)} {error.problem}"
    return str(error)


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
            raise fail(error_message(error), error.exit_code) from None
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


class _ReportingTyper(typer.Typer):
    """A Typer app whose every command goes through `reports_errors` (see `new_app`)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        def decorator(function: F) -> F:
            help_text = kwargs.pop("help", None) or reflowed_help(function.__doc__)
            super(_ReportingTyper, self).command(*args, help=help_text, **kwargs)(
                reports_errors(function)
            )
            return function

        return decorator


def reflowed_help(docstring: str | None) -> str | None:
    """A command's docstring as ``--help`` shows it: the lines of each prose paragraph joined,
    so Rich wraps them to the terminal's width (in Rich markup mode Typer keeps every source
    line break, which breaks lines mid-sentence on a narrow terminal). Paragraphs with indented
    or bulleted lines (examples, lists) keep their lines."""
    if docstring is None:
        return None
    paragraphs = []
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", "- ")) for line in lines):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def new_app(**settings: Any) -> typer.Typer:
    """A Typer app (the root or a command group) with salign's settings and error reporting.

    ``settings`` are Typer's (``help``, ``name``, ``no_args_is_help``, ...); Rich markup in help
    texts is on. Commands registered with ``app.command(...)`` report `SalignError` as one red
    line and its exit code.
    """
    return _ReportingTyper(rich_markup_mode="rich", **settings)


def resume_target(resume: bool, resume_from: Path | None) -> Path | bool:
    """``--resume`` / ``--resume-from RUN_DIR`` → what the stages take: a run folder, ``True``
    (the newest run) or ``False`` (a new run)."""
    return resume_from if resume_from is not None else resume


def resolve_workspace(workspace: Path | None) -> Workspace:
    """The workspace for a command, created on first use."""
    return Workspace.resolve(workspace).ensure()


def case_list(text: str | None) -> tuple[str, ...]:
    """Case ids from an option: ``id,id,...``, or the path of a file that lists them (what
    ``salign suggest`` writes; see `read_case_list`)."""
    if not text:
        return ()
    if "," not in text and Path(text).expanduser().is_file():
        from salign_cli.suggest.lists import read_case_list

        return read_case_list(Path(text).expanduser())
    return tuple(part.strip() for part in text.split(",") if part.strip())
