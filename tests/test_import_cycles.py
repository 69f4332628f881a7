"""No import cycles among the modules of optembed, pipelines and optembed_cli.

The graph is built from the source text (nothing is imported): an edge ``a -> b`` for every
``import b`` / ``from b import x`` / ``from . import b`` that runs when ``a`` is imported, i.e.
at module level (also inside a module-level ``if``, ``try``, ``with`` or class body), but not
inside a function and not under ``if TYPE_CHECKING:``. ``from p import x`` points to the module
``p.x`` when there is one, else to ``p``. Importing a submodule also runs its package's
``__init__``; that implicit edge is left out, or every package whose ``__init__`` gathers its
submodules' names would count as a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

PACKAGES = ("optembed", "pipelines", "optembed_cli")

# Cycles that exist today, each as the set of its modules (a strongly connected component of the
# graph). Only exactly these are tolerated: a new cycle, or a module joining one of these, fails.
KNOWN_CYCLES: list[frozenset[str]] = []

Graph = dict[str, set[str]]


def module_names(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from import_time_statements(node.body)
            yield from import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from import_time_statements(node.body)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports when it is imported."""
    targets: set[str] = set()
    for node in import_time_statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
                targets.update(next(([p] for p in prefixes if p in known), []))
            continue
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            if sub in known:
                targets.add(sub)
            elif module in known:
                targets.add(module)
    targets.discard(name)
    return targets


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    modules = module_names(root, packages)
    known = set(modules)
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def cycles(graph: Graph) -> list[list[str]]:
    """A shortest cycle through the smallest module of every component of :func:`tangles`, as its
    path ``[a, b, ..., a]``."""
    return [cycle_through(graph, c) for c in tangles(graph)]


def tangles(graph: Graph) -> list[frozenset[str]]:
    """The strongly connected components of ``graph`` that hold a cycle (two or more modules
    reaching each other, or one importing itself), by their smallest module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(frozenset(component))
    return sorted(components, key=min)


def cycle_through(graph: Graph, component: frozenset[str]) -> list[str]:
    """A shortest cycle from the smallest module of ``component`` back to it, inside it."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child in component and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {sorted(component)}")


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 100 and graph["pipelines.store.store"] >= {"pipelines.store.publish"}
    found = tangles(graph)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(
        " -> ".join(cycle_through(graph, c)) + (f" (one of {len(c)} modules importing each other)" if len(c) > 2 else "")
        for c in new
    )
    gone = [sorted(k) for k in KNOWN_CYCLES if k not in found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_cycle_finder_on_a_hand_made_graph() -> None:
    graph: Graph = {
        "a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set(),  # a -> b -> c -> a
        "x": {"y"}, "y": {"x", "z"}, "z": {"z"},  # x <-> y, and z imports itself
        "p": {"q"}, "q": {"r"}, "r": set(),  # a chain, no cycle
    }
    assert cycles(graph) == [["a", "b", "c", "a"], ["x", "y", "x"], ["z", "z"]]
    assert cycles({k: v for k, v in graph.items() if k in "pqr"}) == []
    graph["e"] = {"d"}  # d <-> e
    graph["r"] = {"a"}  # joins nothing: nothing leads from the a-cycle back to r
    assert cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"], ["x", "y", "x"], ["z", "z"]]
    graph["d"] = {"e", "b"}  # now a, b, c, d, e are one component; its shortest cycle through a stays
    assert tangles(graph)[0] == frozenset("abcde") and cycles(graph)[0] == ["a", "b", "c", "a"]
    graph["a"] = {"d"}  # a -> d -> b -> c -> a
    assert cycles(graph)[0] == ["a", "d", "b", "c", "a"]


def test_graph_reads_only_import_time_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import helper\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "helper.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from .. import late\n"  # relative: pkg.late
        "if TYPE_CHECKING:\n    from pkg import typed\n"
        "else:\n    import pkg.other\n"
        "try:\n    from . import sibling\nexcept ImportError:\n    pass\n"
        "def f():\n    import pkg.inside\n"
    )
    for name in ("late", "typed", "other", "inside", "sub/sibling"):
        (pkg / f"{name}.py").write_text("from pkg import sub\n" if name == "late" else "")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.helper"] == {"pkg.late", "pkg.other", "pkg.sub.sibling"}
    assert graph["pkg"] == {"pkg.sub.helper"} and graph["pkg.late"] == {"pkg.sub"}
    assert cycles(graph) == []
    (pkg / "other.py").write_text("from .sub.helper import f\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.other", "pkg.sub.helper", "pkg.other"]]
