"""The package's floors: every import of a reid_pbn module goes down, never up or sideways.

Floors (see docs/dev/architecture.md): config (0) -> utils (1) -> layers, data, evaluation (2,
no imports between these three) -> modeling (3) -> engine (4) -> api, serving (5). The test
reads every module under reid_pbn/ with ``ast`` (imports at module level and inside functions,
relative imports resolved), and fails on an import that goes up or sideways, on an import cycle
between modules, and on an import of a reid_pbn module inside a function (an import hidden there
to dodge a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "reid_pbn"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Floor of each top-level subpackage or module of reid_pbn.
FLOORS = {
    "version": 0,
    "config": 0,
    "utils": 1,
    "layers": 2,
    "data": 2,
    "evaluation": 2,
    "modeling": 3,
    "engine": 4,
    "api": 5,
    "serving": 5,
}
#: The package root may re-export the public API (it sits above every floor).
ROOT_FLOOR = 6
#: Function-level imports allowed in the package root: PEP 562's lazy ``__getattr__`` keeps
#: ``import reid_pbn`` light (no model code until ``reid_pbn.FeatureExtractor`` is used).
LAZY_ROOT_IMPORTS = {f"{PACKAGE}.api"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` statement reads (the module, and each name as a
    possible submodule)."""
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported name, inside a function, line)`` for every import in a module."""
    module, is_pkg = _module_name(path), _is_package(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                names = _resolve(module, is_pkg, child)
                found.extend((n, in_function, child.lineno) for n in names)
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _existing(name: str) -> str | None:
    """The reid_pbn module a dotted name refers to (the longest existing prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _floor(module: str) -> tuple[int, str]:
    """``(floor, top-level part)`` of a reid_pbn module."""
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_FLOOR, ""
    top = parts[1]
    assert top in FLOORS, f"{module}: add '{top}' to FLOORS (and to docs/dev/architecture.md)"
    return FLOORS[top], top


def _edges() -> dict[str, set[tuple[str, bool, int]]]:
    """Imported reid_pbn module (with function-level flag and line) per module."""
    edges: dict[str, set[tuple[str, bool, int]]] = {}
    for module, path in MODULES.items():
        out = edges.setdefault(module, set())
        for name, in_function, line in _imports(path):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            target = _existing(name)
            if target is not None and target != module:
                out.add((target, in_function, line))
    return edges


EDGES = _edges()


def test_every_module_has_a_floor():
    for module in MODULES:
        _floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_floors(module):
    floor, top = _floor(module)
    bad = []
    for target, _, line in sorted(EDGES[module]):
        t_floor, t_top = _floor(target)
        if t_top == top:
            continue  # inside one package
        if t_floor >= floor:
            kind = "sideways" if t_floor == floor else "up"
            bad.append(f"line {line}: {target} (floor {t_floor}, {kind})")
    assert not bad, f"{module} (floor {floor}) imports against the floors:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_reid_pbn_import_inside_functions(module):
    hidden = [
        f"line {line}: {target}"
        for target, in_function, line in sorted(EDGES[module])
        if in_function and not (module == PACKAGE and target in LAZY_ROOT_IMPORTS)
    ]
    assert not hidden, (
        f"{module} imports reid_pbn modules inside functions (import them at module level, "
        "following the floors):\n" + "\n".join(hidden)
    )


def _module_graph() -> dict[str, set[str]]:
    """Module-level imports between modules; a package's ``__init__`` importing its own
    submodules is not an edge back (importing ``a.b`` runs ``a/__init__`` first anyway)."""
    graph: dict[str, set[str]] = {}
    for module, targets in EDGES.items():
        graph[module] = {
            t for t, in_function, _ in targets
            if not in_function and not module.startswith(t + ".")
        }
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_what_it_must():
    # The checker itself: a cycle, a hidden import and a relative import resolved.
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    node = ast.parse("from ..engine import comm").body[0]
    assert _resolve("reid_pbn.evaluation.metrics", False, node)[0] == "reid_pbn.engine"
    node = ast.parse("from .x import y").body[0]
    assert _resolve("reid_pbn.data", True, node) == ["reid_pbn.data.x", "reid_pbn.data.x.y"]
    assert _floor("reid_pbn.layers.pbn") == (2, "layers")
