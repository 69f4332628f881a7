"""Commands imported only when they run: ``optembed --help`` and shell completion of command
names read no command module (none of torch, DuckDB or pyarrow is imported).

Each command is registered by its module and function name. Until it is needed, the group
holds a placeholder carrying the function's docstring, read from the module's source with
:mod:`ast` (the listing in ``optembed --help`` shows its first paragraph); resolving the
command to run it, to show its help or to complete its options imports the module and builds
the real command from the function, as ``app.command()`` would.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo

try:  # recent Typer vendors Click
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer depends on Click
    import click  # type: ignore[no-redef]


@dataclass(frozen=True)
class LazyCommand:
    name: str
    module: str  # e.g. "optembed_cli.commands.supernet"
    function: str  # the command's function in that module


def docstring(entry: LazyCommand) -> str:
    """The command function's docstring, from the module's source (the module is not imported)."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module {entry.module}")
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry.function:
            return ast.get_docstring(node) or ""
    raise LookupError(f"{entry.module} defines no function {entry.function}")


def reflow(doc: str) -> str:
    """A docstring whose paragraphs are each one line (the help page wraps them at the terminal's
    width); paragraphs of indented lines (examples) keep their lines."""
    paragraphs = [p for p in doc.strip().split("\n\n") if p.strip()]
    return "\n\n".join(
        p if any(line[:1].isspace() for line in p.splitlines()) else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


class Placeholder(TyperCommand):
    """A command not imported yet: its name and help, for listings."""

    def __init__(self, entry: LazyCommand) -> None:
        super().__init__(entry.name, help=reflow(docstring(entry)))
        self.entry = entry


def build(entry: LazyCommand, markup: Any) -> click.Command:
    """The real command: the module imported, its function turned into a Typer command."""
    func = getattr(importlib.import_module(entry.module), entry.function)
    return typer.main.get_command_from_info(
        CommandInfo(name=entry.name, callback=func, help=reflow(inspect.getdoc(func) or "")),
        pretty_exceptions_short=True,
        rich_markup_mode=markup,
    )


class LazyGroup(TyperGroup):
    """A Typer group whose commands are :class:`LazyCommand` entries (see the module)."""

    entries: tuple[LazyCommand, ...] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for entry in self.entries:
            self.commands.setdefault(entry.name, Placeholder(entry))

    def real_command(self, name: str) -> click.Command | None:
        command = self.commands.get(name)
        if isinstance(command, Placeholder):
            command = self.commands[name] = build(command.entry, self.rich_markup_mode)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(command, Placeholder):
            command = self.real_command(name)
        return name, command, rest


def lazy_group(*entries: LazyCommand) -> type[LazyGroup]:
    """A :class:`LazyGroup` class holding ``entries`` (pass it as ``typer.Typer(cls=...)``)."""
    return type("OptembedGroup", (LazyGroup,), {"entries": tuple(entries)})
