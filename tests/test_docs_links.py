"""Docs and comments point at files that exist, and say what the code does.

``METHOD.md`` lives outside the repository; the project's own account of the method is
``docs/explanation/method.md``, so every mention must carry that prefix. Every
``salign_cli/<path>.py`` named in pyproject.toml or in the docs must exist.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD_DOC = "docs/explanation/method.md"
SOURCE_PATH = re.compile(r"salign_cli/[\w/]+\.py")
# "METHOD.md" not preceded by "docs/explanation/" (case-insensitive: "method.md" also counts).
BARE_METHOD = re.compile(r"(?<!docs/explanation/)\bmethod\.md\b", re.IGNORECASE)


def _scanned_files() -> list[Path]:
    """Text files under salign_cli/, benchmarks/ and tests/ (this file, which must name the
    pattern, left out)."""
    return sorted(
        path
        for folder in ("salign_cli", "benchmarks", "tests")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".sh", ".toml", ".json", ".txt"}
        and path != Path(__file__).resolve()
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_method_md_is_always_cited_by_its_path_in_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _scanned_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BARE_METHOD.search(line)
    ]
    assert offenders == [], f"cite {METHOD_DOC}, not METHOD.md: {offenders}"


def test_bare_method_md_pattern_on_known_text() -> None:
    assert BARE_METHOD.search('the protocol of METHOD.md ("Pairs")')
    assert BARE_METHOD.search("see method.md")
    assert not BARE_METHOD.search(f'the protocol of {METHOD_DOC} ("Pairs")')


def test_method_sections_cited_in_the_code_exist() -> None:
    """``docs/explanation/method.md "Pairs"`` / ``…method.md, "Baselines"``: a real heading."""
    headings = {
        re.sub(r"\s*\[.*\]\s*$", "", line.lstrip("#").strip())
        for line in (ROOT / METHOD_DOC).read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    cited = re.compile(re.escape(METHOD_DOC) + r',?\s+"([^"]+)"(?:\s+and\s+"([^"]+)")?')
    missing = []
    for path in _scanned_files():
        for match in cited.finditer(_flat(path.read_text(encoding="utf-8"))):
            missing += [
                f"{path.relative_to(ROOT)}: {name!r}"
                for name in match.groups()
                if name and name not in headings
            ]
    assert missing == [], f"no such section in {METHOD_DOC}: {missing}"


@pytest.mark.parametrize(
    "text", [ROOT / "pyproject.toml", *sorted((ROOT / "docs").rglob("*.md"))], ids=str
)
def test_named_source_files_exist(text: Path) -> None:
    named = set(SOURCE_PATH.findall(text.read_text(encoding="utf-8")))
    assert sorted(name for name in named if not (ROOT / name).is_file()) == []


def test_architecture_doc_gives_the_slice_cache_signature() -> None:
    from salign_cli.data.preprocess import SliceCache

    text = _flat((ROOT / "docs/explanation/architecture.md").read_text(encoding="utf-8"))
    documented = re.search(r"`get_or_build\(([^)]*)\)", text)
    assert documented is not None
    names = [part.split("=")[0].strip() for part in documented.group(1).split(",")]
    real: list[str] = []
    for parameter in list(inspect.signature(SliceCache.get_or_build).parameters.values())[1:]:
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in real:
            real.append("*")
        real.append(parameter.name)
    assert names == real


def test_contract_doc_says_whether_reading_a_contract_needs_torch() -> None:
    """The contract reference must not promise a torch-free read the code does not give."""
    probe = (
        "import sys; from pathlib import Path; import salign_cli;"
        "from salign_cli.bundles.files import read_contract;"
        "read_contract(Path(salign_cli.__file__).parent / '_weights' / 'hippocampus');"
        "print('torch' in sys.modules)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    reading_imports_torch = ran.stdout.strip() == "True"
    text = _flat((ROOT / "docs/reference/contract.md").read_text(encoding="utf-8"))
    promises_no_torch = re.search(r"[Rr]eading the contract[^.:]*\bneeds? no torch", text)
    says_it_imports = "reading the contract imports it" in text
    if reading_imports_torch:
        assert not promises_no_torch and says_it_imports
    else:
        assert not says_it_imports
