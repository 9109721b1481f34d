"""The typed API exposes every stage function by name, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from salign_cli import api


@pytest.mark.parametrize("name", api.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(api, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = api.no_such_function


def test_importing_the_api_and_the_cli_does_not_import_torch() -> None:
    code = "import sys, salign_cli.api, salign_cli.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_type_checkers_see_every_export_from_the_module_it_loads_from() -> None:
    # the TYPE_CHECKING imports and the lazy table must name the same things, or mypy users
    # would see a name typed from one module while scripts get it from another
    import ast
    import inspect

    from salign_cli import api

    tree = ast.parse(inspect.getsource(api))
    guarded = next(n for n in tree.body if isinstance(n, ast.If))
    typed = {
        alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == api._EXPORTS
