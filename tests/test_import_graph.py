"""salign_cli's modules import each other without a cycle.

A cycle makes import order matter and hides which module owns an idea (``model/bundle.py`` and
``hub.py`` once imported each other). The graph is read from the source with ``ast``, so the
test needs no imports of its own. Module-level imports must form no cycle at all; imports
inside functions (deferred for start-up time) are reported too, since for the design they
count the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "salign_cli"


def module_name(path: Path, root: Path) -> str:
    """``root/bundles/store.py`` → ``salign_cli.bundles.store``; a package's ``__init__`` is
    the package itself."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package's modules an import statement loads (``from a import b`` loads ``a.b``
    when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif node.level or node.module is None:
        return set()  # relative imports: salign uses none
    else:
        names = {f"{node.module}.{alias.name}" for alias in node.names}
        names = {name if name in known else node.module for name in names}
    return {name for name in names if name in known}


def import_graph(root: Path, *, module_level_only: bool) -> dict[str, set[str]]:
    """``module → modules it imports`` within the package, ``TYPE_CHECKING`` blocks left out
    (they never run). With ``module_level_only``, imports inside functions are left out too."""
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        pending: list[ast.AST] = [s for s in tree.body if not _is_type_checking_block(s)]
        edges: set[str] = set()
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, known)
            elif module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif not _is_type_checking_block(node):
                pending.extend(ast.iter_child_nodes(node))
        graph[name] = edges - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The modules caught in cycles, one set per strongly connected component of two or more
    modules (Tarjan's algorithm), in the order they are found from the sorted names."""
    order: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        order[module] = lowest[module] = len(order)
        stack.append(module)
        for successor in sorted(graph.get(module, ())):
            if successor not in order:
                visit(successor)
                lowest[module] = min(lowest[module], lowest[successor])
            elif successor in stack:
                lowest[module] = min(lowest[module], order[successor])
        if lowest[module] == order[module]:
            component = {stack.pop()}
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_import_cycles_finds_known_cycles_and_accepts_a_dag() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [{"a", "b", "c"}]
    assert import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    two = {"a": {"a2"}, "a2": set(), "x": {"y"}, "y": {"x", "z"}, "z": {"z2"}, "z2": {"z"}}
    assert import_cycles(two) == [{"z", "z2"}, {"x", "y"}]


def test_the_graph_reads_module_level_and_deferred_imports(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from pkg.sub import b\n"
        "if TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    import pkg.c\n"
    )
    (root / "sub" / "b.py").write_text("from pkg.a import f\n")
    (root / "c.py").write_text("")
    assert import_graph(root, module_level_only=True)["pkg.a"] == {"pkg.sub.b"}
    assert import_graph(root, module_level_only=False)["pkg.a"] == {"pkg.sub.b", "pkg.c"}
    assert import_cycles(import_graph(root, module_level_only=True)) == [{"pkg.a", "pkg.sub.b"}]


def test_no_import_cycle() -> None:
    assert import_cycles(import_graph(PACKAGE_ROOT, module_level_only=True)) == []


# None, also through imports inside functions (the last one, infer.batch <-> infer.memory, ended
# when segment_volume moved to infer.predictor). A known exception would be listed here.
KNOWN_DEFERRED_CYCLES: list[set[str]] = []


def test_no_import_cycle_through_deferred_imports_either() -> None:
    assert import_cycles(import_graph(PACKAGE_ROOT, module_level_only=False)) == (
        KNOWN_DEFERRED_CYCLES
    )


# The documented layers (docs/explanation/architecture.md, "Layers"), lowest first, by the
# package's top-level module or subpackage ("" is salign_cli/__init__.py). A module may import
# its own layer and those below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "io", "errors", "config", "device", "workspace"),
    ("data",),
    ("model", "objectives", "metrics"),
    ("bundles",),
    ("train", "infer"),
    ("suggest",),
    ("api", "bench", "demo"),
    ("cli", "__main__"),
)
# The documented exceptions, all to leaf modules that import nothing back: the bundle contract
# reads two configuration dataclasses, the workspace knows the bundle folder's name.
ALLOWED_UPWARD: set[tuple[str, str]] = {
    ("salign_cli.bundles.contract", "salign_cli.infer.defaults"),
    ("salign_cli.bundles.contract", "salign_cli.train.recipe"),
    ("salign_cli.workspace", "salign_cli.bundles.layout"),
}


def layer_of(module: str) -> int:
    """The rank in `LAYERS` of ``salign_cli.<top>...``; a module of no layer fails the test,
    so a new subpackage has to be placed in the documented layers first."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: in no documented layer; add it to LAYERS and the docs")


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, d) for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m)}


def test_upward_imports_are_found() -> None:
    graph = {
        "salign_cli.data.x": {"salign_cli.cli.y", "salign_cli.io.z"},
        "salign_cli.cli.y": set(),
    }
    assert upward_imports(graph) == {("salign_cli.data.x", "salign_cli.cli.y")}


def test_modules_import_only_their_own_layer_and_those_below() -> None:
    graph = import_graph(PACKAGE_ROOT, module_level_only=False)
    assert upward_imports(graph) == ALLOWED_UPWARD
