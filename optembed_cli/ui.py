"""Rich rendering, progress reporting and error handling shared by all commands."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task as RichTask,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from optembed.errors import OptembedError
from pipelines.store import Manifest, strict_dumps

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    err.print(Text(f"error: {' '.join(str(message).split())}"), soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn expected errors into one stderr line and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OptembedError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no artifact was published", 130) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a bug: still one line, the traceback on request
            if os.environ.get("OPTEMBED_DEBUG"):
                raise
            raise fail(f"internal error: {type(exc).__name__}: {exc} (set OPTEMBED_DEBUG=1 for the traceback)", 1) from None

    return wrapper  # type: ignore[return-value]


class RateColumn(ProgressColumn):
    """Items per second with the task's unit."""

    def render(self, task: RichTask) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if speed >= scale:
                return Text(f"{speed / scale:.2f}{suffix} {unit}/s", style="progress.data.speed")
        return Text(f"{speed:.1f} {unit}/s", style="progress.data.speed")


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self.progress = progress
        self.task_id = task_id

    def advance(self, amount: float = 1.0) -> None:
        self.progress.advance(self.task_id, amount)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if description is not None:
            kwargs["description"] = description
        if total is not None:
            kwargs["total"] = total
        self.progress.update(self.task_id, **kwargs)

    def close(self) -> None:
        self.progress.stop_task(self.task_id)


class RichReporter:
    """Progress bars (with rates) and messages on stderr; the display starts with the first task."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=quiet or not err.is_terminal or bool(os.environ.get("OPTEMBED_NO_PROGRESS")),
        )
        self.started = False
        self.pending: list[str] = []  # lines shown once the work starts (dropped if it never does)

    def defer(self, text: str) -> None:
        """Show ``text`` before the first progress bar or message: a command refused by its
        checks prints only its error line."""
        self.pending.append(text)

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        for line in lines:
            err.print(Text(line), soft_wrap=True)

    def task(self, description: str, total: float | None = None, unit: str = "it") -> _RichTask:
        self.flush()
        if not self.started:
            self.progress.start()
            self.started = True
        return _RichTask(self.progress, self.progress.add_task(description, total=total, unit=unit))

    def message(self, text: str) -> None:
        self.flush()
        if not self.quiet:
            self.progress.console.print(Text(text), soft_wrap=True)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


@contextmanager
def reporter(quiet: bool = False) -> Iterator[RichReporter]:
    rep = RichReporter(quiet=quiet)
    try:
        yield rep
    finally:
        rep.stop()


def announce(manifest: Manifest, as_json: bool, what: str | None = None) -> None:
    """Say whether a stage ran or was cached; with --json print only the manifest on stdout.

    Notes about the artifact (a cached one computed in another environment) go to stderr.
    """
    notes(manifest)
    if as_json:  # the manifest plus where it lives, for shell scripts
        data = {**manifest.to_dict(), "path": str(manifest.path), "cached": manifest.cached}
        sys.stdout.write(strict_dumps(data) + "\n")
        sys.stdout.flush()
        return
    where = manifest.path or "?"
    if manifest.cached:
        out.print(f"[yellow]cached[/]: {manifest.stage} {manifest.fingerprint} already exists at {where} (--force reruns)")
    else:
        out.print(f"[green]done[/]: {manifest.stage} {manifest.fingerprint} written to {where}")
    if what:
        out.print(what)


def notes(manifest: Manifest) -> None:
    """Print the manifest's notes on stderr, one line each, once."""
    for line in manifest.notes:
        err.print(Text(" ".join(line.split())), soft_wrap=True)
    manifest.notes.clear()


def said_upstream(manifest: Manifest, explicit: str | None, as_json: bool) -> str | None:
    """When the upstream artifact was picked by default, the line that says which one."""
    if explicit is None and not as_json:
        return f"using the newest {manifest.stage} artifact {manifest.fingerprint} ({manifest.created})"
    return None


def metrics_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, fmt(value))
    return table


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def size_change(before: float, after: float) -> str:
    """``after`` bytes against ``before`` bytes in words: "3.2x smaller", "1.4x larger"."""
    if after <= 0 or before <= 0:
        return "of unknown relative size"
    ratio = before / after
    if round(ratio, 1) == 1.0:
        return "about the same size as"
    return f"{ratio:.1f}x smaller than" if ratio > 1 else f"{1 / ratio:.1f}x larger than"


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.1f}s"


def run_stage(
    run: Callable[[Any, Any, Any], Manifest],
    config: Any,
    artifacts: Any,
    as_json: bool,
    render: Callable[[Manifest], None],
    upstream: str | None = None,
    source: str | None = None,
) -> Manifest:
    """Open the store, name a defaulted upstream artifact, run a stage with progress, show it."""
    from pipelines.store import Store

    store = Store(artifacts)
    with reporter(quiet=as_json) as rep:
        if upstream is not None and source is None and not as_json:
            line = said_upstream(store.resolve(None, upstream), source, as_json)
            if line:
                rep.defer(line)  # shown when the work starts, after every check passed
        manifest = run(config, store, rep)
        rep.flush()
    announce(manifest, as_json)
    if not as_json:
        render(manifest)
    return manifest
