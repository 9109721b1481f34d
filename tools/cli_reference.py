"""Generate ``docs/reference/cli.md`` from the Typer app, so the reference cannot drift from the code.

Every command and sub-command is read from the click command tree that Typer builds
(``typer.main.get_command(app)``): its help text (Rich markup turned into Markdown), a usage line,
and a table of arguments and options with their types and defaults. Hidden commands and options
(internal plumbing such as ``pretrain --run-dir``) are left out, as ``--help`` leaves them out.

Regenerate after changing any command (from the repository root, so this checkout's code is
the one described)::

    python -m tools.cli_reference > docs/reference/cli.md

A development tool, kept out of the ``salign_cli`` package so it does not ship in the wheel.

``tests/docs/test_docs.py`` fails when the committed file differs from :func:`render_cli_reference`.
"""

from __future__ import annotations

import inspect
import itertools
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

REGENERATE = "python -m tools.cli_reference > docs/reference/cli.md"
_MARKDOWN_SPECIAL = "\\`*_[]<>|"
_CODE_SPAN = re.compile(r"(`[^`]+`)")
_TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


@dataclass(frozen=True)
class CommandEntry:
    """One command of the tree: its words after ``salign`` (``()`` is the root) and its object."""

    path: tuple[str, ...]
    command: Any  # a click (or Typer's vendored click) Command or Group

    @property
    def title(self) -> str:
        return " ".join(("salign", *self.path))

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "list_commands")


def iter_commands() -> Iterator[CommandEntry]:
    """The root ``salign`` group, then every visible command depth-first, in ``--help`` order."""
    import typer
    import typer.main

    from salign_cli.cli.app import app

    root = typer.main.get_command(app)

    def walk(path: tuple[str, ...], command: Any, parent: Any) -> Iterator[CommandEntry]:
        yield CommandEntry(path, command)
        if not hasattr(command, "list_commands"):
            return
        context = typer.Context(command, info_name=path[-1] if path else "salign", parent=parent)
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is not None and not getattr(child, "hidden", False):
                yield from walk((*path, name), child, context)

    yield from walk((), root, None)


# ---------------------------------------------------------------------------------------------
# help text → Markdown


def escape_markdown(text: str) -> str:
    """Backslash-escape the characters that would otherwise turn into emphasis, links, HTML or cells."""
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIAL else char for char in text)


def _help_text_markdown(text: str) -> str:
    """Escape help text, but keep its `back-quoted` spans as Markdown code spans."""
    return "".join(
        part if _CODE_SPAN.fullmatch(part) else escape_markdown(part)
        for part in _CODE_SPAN.split(text)
    )


def _rich_mode(command: Any) -> bool:
    return getattr(command, "rich_markup_mode", None) == "rich"


def _styled_markdown(text: str, rich: bool) -> str:
    """One paragraph of help as Markdown: Rich ``[bold]``/``[italic]`` become ``**``/``*``."""
    if not rich:
        return _help_text_markdown(text)
    from rich.text import Text

    parsed = Text.from_markup(text)
    cuts = sorted(
        {0, len(parsed.plain)} | {s.start for s in parsed.spans} | {s.end for s in parsed.spans}
    )
    pieces: list[str] = []
    for start, end in itertools.pairwise(cuts):
        styles = " ".join(str(s.style) for s in parsed.spans if s.start <= start and end <= s.end)
        chunk = _help_text_markdown(parsed.plain[start:end])
        if "bold" in styles.split() and chunk.strip():
            chunk = f"**{chunk}**"
        elif "italic" in styles.split() and chunk.strip():
            chunk = f"*{chunk}*"
        pieces.append(chunk)
    return "".join(pieces)


def _plain(text: str, rich: bool) -> str:
    if not rich:
        return text
    from rich.text import Text

    return Text.from_markup(text).plain


def help_to_markdown(help_text: str, rich: bool) -> str:
    """A command's docstring as Markdown paragraphs; indented paragraphs become ``bash`` blocks.

    Consecutive indented paragraphs (examples separated by blank lines) share one code block.
    Lines inside an ordinary paragraph are joined, as ``--help`` joins them.
    """
    blocks: list[tuple[str, str]] = []  # ("code" | "text", content)
    for paragraph in inspect.cleandoc(help_text).replace("\b", "").split("\n\n"):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line[:1].isspace() for line in lines):
            code = "\n".join(
                _plain(line, rich) for line in inspect.cleandoc("\n".join(lines)).splitlines()
            )
            if blocks and blocks[-1][0] == "code":
                code = f"{blocks.pop()[1]}\n{code}"
            blocks.append(("code", code))
        else:
            joined = " ".join(line.strip() for line in lines)
            blocks.append(("text", _styled_markdown(joined, rich)))
    return "\n\n".join(
        f"```bash\n{content}\n```" if kind == "code" else content for kind, content in blocks
    )


def _summary_line(help_text: str, rich: bool) -> str:
    """The first paragraph of a command's help, on one line (the table of contents shows it)."""
    first = inspect.cleandoc(help_text or "").split("\n\n")[0]
    return _styled_markdown(" ".join(first.split()), rich)


# ---------------------------------------------------------------------------------------------
# parameters


def _annotation_name(annotation: Any) -> str | None:
    """``Optional[list[Path]]`` → ``PATH``; ``int`` → ``INTEGER``; unknown → ``None``."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is not None and arguments:
        return _annotation_name(arguments[0])
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    return _TYPE_NAMES.get(annotation)


def _type_name(param: Any) -> str:
    """What the value looks like: ``INTEGER``, ``PATH``, ``[RUN_DIR]`` (a metavar), or ``flag``."""
    if getattr(param, "is_flag", False):
        return "flag"
    if getattr(param, "metavar", None):
        return f"`{param.metavar}`"
    descriptor = getattr(param, "type_descriptor", None)  # Typer ≥ 0.29 (vendored click)
    name = _annotation_name(descriptor.annotation) if descriptor is not None else None
    if name is None and getattr(param, "type", None) is not None:  # classic click
        name = str(param.type.name).upper()
    name = name or "TEXT"
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None:
        name += f" ≥ {low}"
    if high is not None:
        name += f" ≤ {high}"
    return name


def _default(param: Any) -> str:
    """The default as ``--help`` would state it; empty when there is none worth stating."""
    show = getattr(param, "show_default", True)
    if isinstance(show, str):
        return escape_markdown(show)
    default = param.default
    if not show or default is None or callable(default):
        return ""
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
        return "" if not default else "on"
    if isinstance(default, (list, tuple)):
        return ", ".join(f"`{value}`" for value in default) if default else ""
    return f"`{default}`"


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    names = [f"`{opt}`" for opt in param.opts]
    names += [f"`{opt}`" for opt in param.secondary_opts]
    return ", ".join(names)


def _cell(text: str | None) -> str:
    return " ".join((text or "").split())


def _parameter_table(params: list[Any], rich: bool, heading: str) -> list[str]:
    if not params:
        return []
    lines = [
        f"**{heading}**",
        "",
        f"| {heading[:-1]} | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for param in params:
        help_text = _styled_markdown(_cell(getattr(param, "help", None)), rich)
        if param.required:
            help_text = f"{help_text} *(required)*".strip()
        lines.append(f"| {_names(param)} | {_type_name(param)} | {_default(param)} | {help_text} |")
    return [*lines, ""]


def _usage(entry: CommandEntry) -> str:
    parts = [entry.title, "[OPTIONS]"]
    for param in entry.command.params:
        if param.param_type_name != "argument" or getattr(param, "hidden", False):
            continue
        name = param.name.upper()
        name = name if param.required else f"[{name}]"
        parts.append(f"{name}..." if param.nargs == -1 else name)
    if entry.is_group:
        parts.append("COMMAND [ARGS]...")
    return " ".join(parts)


def _anchor(title: str) -> str:
    """GitHub's heading anchor for ``## `salign weights push` `` → ``salign-weights-push``."""
    return title.lower().replace(" ", "-")


def _render_command(entry: CommandEntry) -> list[str]:
    command, rich = entry.command, _rich_mode(entry.command)
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name != "argument"]
    lines = [f"## `{entry.title}`", "", "```text", _usage(entry), "```", ""]
    description = help_to_markdown(command.help or "", rich)
    if description:
        lines += [description, ""]
    if entry.is_group:
        import typer

        context = typer.Context(command, info_name=entry.path[-1] if entry.path else "salign")
        lines += ["**Commands**", "", "| Command | What it does |", "|---|---|"]
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is None or getattr(child, "hidden", False):
                continue
            title = " ".join((entry.title, name))
            summary = _summary_line(child.help or "", _rich_mode(child))
            lines.append(f"| [`{title}`](#{_anchor(title)}) | {summary} |")
        lines.append("")
    lines += _parameter_table(arguments, rich, "Arguments")
    lines += _parameter_table(options, rich, "Options")
    return lines


def render_cli_reference() -> str:
    """The whole CLI reference as Markdown (ends with one newline); deterministic for a given code."""
    entries = list(iter_commands())
    lines = [
        "# CLI reference",
        "",
        f"<!-- Generated from the Typer app by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every `salign` command, its arguments and its options, with their defaults. Every command "
        "also takes `-h`/`--help`. Exit codes: [exit-codes.md](exit-codes.md).",
        "",
    ]
    lines += [f"- [`{e.title}`](#{_anchor(e.title)})" for e in entries]
    lines.append("")
    for entry in entries:
        lines += _render_command(entry)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write the reference to stdout as UTF-8 bytes (so ``>`` works the same on every platform)."""
    sys.stdout.buffer.write(render_cli_reference().encode("utf-8"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
