"""Every third-party module salign_cli imports belongs to a distribution pyproject.toml declares.

A module that happens to be installed as someone else's dependency (``httpx2`` under
``huggingface_hub``) works on this machine and breaks the day that dependency changes its own;
declaring it is what makes the import safe. Imports are read with ``ast`` (nothing is executed)
and mapped to distributions with ``importlib.metadata.packages_distributions``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

# Python 3.10 has no TOML reader in the standard library, and salign does not need one.
tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "salign_cli"


def _normalised(distribution: str) -> str:
    """PEP 503 name: ``SimpleITK`` and ``simpleitk``, ``huggingface_hub`` and ``-hub`` are one."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _fallback_nodes(tree: ast.AST) -> set[int]:
    """Nodes inside ``except ImportError`` handlers: fallbacks for older versions of a declared
    dependency (they run only where that older version brings the module along)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        catches = isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name)
        if catches and node.type.id in ("ImportError", "ModuleNotFoundError"):
            inside |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    return inside


def third_party_imports(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` that are neither stdlib nor salign."""
    tree = ast.parse(source)
    fallbacks = _fallback_nodes(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in fallbacks:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "salign_cli"}


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"]
    return {_normalised(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}


def test_the_import_reader_finds_what_a_hand_written_module_imports() -> None:
    source = (
        "import os, numpy as np\nfrom scipy import ndimage\nfrom . import sibling\n"
        "from salign_cli.io import volume\nimport huggingface_hub.errors\n"
        "def f():\n    import torch\n"
        "try:\n    from typer._click import g\nexcept ImportError:\n    from click import g\n"
    )
    assert third_party_imports(source) == {"numpy", "scipy", "huggingface_hub", "torch", "typer"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in third_party_imports(path.read_text(encoding="utf-8")):
            distributions = {_normalised(d) for d in providers.get(module, [module])}
            if not distributions & declared:
                undeclared[module] = str(path.relative_to(ROOT))
    assert undeclared == {}, f"declare these in pyproject.toml's dependencies: {undeclared}"
