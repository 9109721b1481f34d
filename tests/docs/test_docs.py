"""The documentation stays true: the CLI reference is the generated one, every `--help` renders,
and every relative link in README.md and docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.cli_reference import (
    REGENERATE,
    escape_markdown,
    help_to_markdown,
    iter_commands,
    render_cli_reference,
)

REPO = Path(__file__).resolve().parents[2]
CLI_REFERENCE = REPO / "docs" / "reference" / "cli.md"
MARKDOWN_FILES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
COMMAND_PATHS = [entry.path for entry in iter_commands()]

_FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_LINK = re.compile(
    r"^ {0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?[ \t]*(?:\"[^\"]*\"|'[^']*'|\([^)]*\))?[ \t]*$",
    re.MULTILINE,
)
_EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def relative_links(markdown: str) -> list[str]:
    """Targets of inline and reference links outside code, minus URLs (``#anchor`` kept)."""
    text = _INLINE_CODE.sub("", _FENCED_CODE.sub("", markdown))
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [target for target in targets if not _EXTERNAL.match(target)]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors: set[str] = set()
    for heading in _HEADING.findall(_FENCED_CODE.sub("", markdown)):
        text = re.sub(r"[`*]", "", heading).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = sum(1 for a in anchors if a == slug or re.fullmatch(rf"{re.escape(slug)}-\d+", a))
        anchors.add(f"{slug}-{count}" if count else slug)
    return anchors


def link_resolves(markdown: Path, target: str) -> bool:
    """The linked file (or folder) exists and, for ``file.md#anchor``, has that heading."""
    file_part, _, anchor = target.partition("#")
    linked = markdown.parent / file_part if file_part else markdown
    if not linked.exists():
        return False
    if not anchor or linked.suffix != ".md":
        return True
    return anchor in heading_anchors(linked.read_text(encoding="utf-8"))


def test_cli_reference_is_the_generated_one() -> None:
    committed = CLI_REFERENCE.read_text(encoding="utf-8") if CLI_REFERENCE.is_file() else ""
    assert committed == render_cli_reference(), f"docs/reference/cli.md is stale: run {REGENERATE}"


def test_reference_lists_every_command() -> None:
    rendered = render_cli_reference()
    for path in COMMAND_PATHS:
        assert f"## `{' '.join(('salign', *path))}`" in rendered


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "salign")
def test_every_help_renders(cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("markdown", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(markdown: Path) -> None:
    links = relative_links(markdown.read_text(encoding="utf-8"))
    broken = [target for target in links if not link_resolves(markdown, target)]
    assert not broken, f"{markdown.relative_to(REPO)}: broken links {broken}"


def test_link_finder_on_known_text() -> None:
    text = (
        "See [a](docs/a.md), [b](../b.md#part) and ![img](pic.png 'x').\n"
        "Skip [web](https://example.org), `[code](no.md)`; keep [anchor](#top).\n"
        "```\n[fenced](no.md)\n```\n"
        "[ref]: guide/ref.md\n"
        "[ours]: the prose that follows is no link definition\n"
    )
    assert relative_links(text) == ["docs/a.md", "../b.md#part", "pic.png", "#top", "guide/ref.md"]


def test_help_markdown_on_known_text() -> None:
    help_text = """Do a thing with [bold]care[/].

    Writes runs/<kind>-<time> and `salign x` output.

    [bold]Examples[/]

      salign x a

      salign x b    # org/name\\[@rev]
    """
    assert help_to_markdown(help_text, rich=True) == (
        "Do a thing with **care**.\n\n"
        "Writes runs/\\<kind\\>-\\<time\\> and `salign x` output.\n\n"
        "**Examples**\n\n"
        "```bash\nsalign x a\nsalign x b    # org/name[@rev]\n```"
    )
    assert escape_markdown("a|b_c*") == "a\\|b\\_c\\*"


def test_heading_anchors_follow_github() -> None:
    text = "# Getting started\n## 1. Install\n## `salign weights push`\n## Notes\n## Notes\n"
    text += "```\n# not a heading\n```\n"
    assert heading_anchors(text) == {
        "getting-started",
        "1-install",
        "salign-weights-push",
        "notes",
        "notes-1",
    }
