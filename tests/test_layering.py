"""Imports point one way: optembed_cli -> pipelines -> optembed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

FORBIDDEN = {
    "optembed": {"typer", "rich", "click", "pipelines", "optembed_cli"},
    "pipelines": {"typer", "rich", "click", "optembed_cli"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"forbidden imports: {offenders}"


def test_checker_sees_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import rich.console\nfrom typer import Typer\nfrom . import sibling\n")
    assert imported_roots(bad) == {"rich", "typer"}
