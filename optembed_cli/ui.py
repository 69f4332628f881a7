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
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task as RichTask,
    TextColumn,
)
from rich.table import Column, Table
from rich.text import Text

from optembed.errors import OptembedError
from optembed.progress import NullTask
from pipelines.store import Manifest, strict_dumps

def stdout_width() -> int | None:
    """The width tables on stdout are laid out for: ``COLUMNS`` when set, the terminal's on a
    terminal (``None``: Rich asks it), else 200 (a log or a pipe)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return None if sys.stdout.isatty() else 200


out = Console(highlight=False, soft_wrap=True, width=stdout_width())
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2, peer: bool = False) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise. In a ``--nproc`` worker the line
    goes to the launcher instead, which prints the one that explains the failure; ``peer``: the
    error only says that another rank went away."""
    from optembed_cli import launch

    line = " ".join(str(message).split())
    if not launch.record_error(line, code, peer):
        prefix = f"rank {os.environ.get('RANK')}: " if launch.is_secondary_rank() else ""
        err.print(Text(f"error: {prefix}{line}"), soft_wrap=True)
    return typer.Exit(code)


def _lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank of the run went away."""
    text = f"{type(exc).__module__}.{type(exc).__name__}: {exc}".lower()
    return any(k in text for k in ("torch.distributed", "gloo", "nccl", "connection closed", "connection reset", "peer"))


def relaunch(nproc: int) -> None:
    """``--nproc N`` (N > 1) outside a multi-process run: run this command as N workers, wait,
    print at most one error line and exit with the run's code (see :mod:`optembed_cli.launch`)."""
    from optembed_cli import launch

    if not launch.wants_launch(nproc):
        return
    code, line = launch.launch(nproc, settings.argv if settings.argv is not None else sys.argv[1:])
    if line:
        err.print(Text(line), soft_wrap=True)
    raise typer.Exit(code)


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
            if _lost_peer(exc):
                raise fail(f"another process of the run failed ({type(exc).__name__}: {exc}); no artifact was published", 1, peer=True) from None
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


def short_count(value: float) -> str:
    """A count in at most 5 characters: ``950``, ``12.3k``, ``600k``, ``1.23M``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            v = value / scale
            return f"{v:.2f}{suffix}" if v < 10 else f"{v:.1f}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return f"{value:.0f}"


class CountColumn(ProgressColumn):
    """Done / total in short counts: ``600k/1.23M``."""

    def render(self, task: RichTask) -> Text:
        total = "?" if task.total is None else short_count(task.total)
        return Text(f"{short_count(task.completed)}/{total}", style="progress.download")


class TimesColumn(ProgressColumn):
    """Elapsed and estimated remaining time in one short cell: ``1m05s<3m10s``."""

    def render(self, task: RichTask) -> Text:
        spent = task.finished_time if task.finished else task.elapsed
        left = task.time_remaining
        text = _seconds(spent or 0.0) + ("" if task.finished else f"<{'?' if left is None else _seconds(left)}")
        return Text(text, style="progress.remaining")


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


COARSE_UNITS = ("gen", "model", "stage")  # a plain line per unit of these
HEARTBEAT_SECONDS = 30.0  # without a terminal, a line at most this often while a long task runs


class PlainTask:
    """Progress as plain stderr lines, for logs and pipes: one line per generation or model;
    for tasks counted in samples, steps, passes or fields a line every ``interval`` seconds (so a log never
    stays silent for minutes) and none at the end (the epoch's summary follows)."""

    def __init__(
        self, description: str, total: float | None, unit: str, interval: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.perf_counter, write: Callable[[str], None] | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.interval = interval
        self.clock = clock
        self.started = self.last = clock()
        self.write = write or _plain_line
        self.coarse = unit in COARSE_UNITS

    def advance(self, amount: float = 1.0) -> None:
        self.done += amount
        now = self.clock()
        if self.coarse:
            self.write(f"{self.description}: {self.count()} ({_seconds(now - self.started)})")
        elif now - self.last >= self.interval:
            self.last = now
            self.write(f"{self.description}: {self.count()}{self.left(now)}")

    def count(self) -> str:
        done = f"{self.done:,.0f}"
        if self.total:
            return f"{done}/{self.total:,.0f} {self.unit} ({100 * self.done / self.total:.0f}%)"
        return f"{done} {self.unit}"

    def left(self, now: float) -> str:
        spent = now - self.started
        if not self.total or self.done <= 0:
            return f", {_seconds(spent)} elapsed"
        rest = spent * (self.total - self.done) / self.done
        return f", {_seconds(spent)} elapsed, about {_seconds(rest)} left"

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total

    def close(self) -> None:
        return None


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value < 60 else f"{value // 60:.0f}m{value % 60:02.0f}s"


def _plain_line(text: str) -> None:
    err.print(Text(text), soft_wrap=True)


class Settings:
    """The global ``--quiet`` / ``--verbose`` choice."""

    quiet: bool = False
    verbose: bool = False
    argv: list[str] | None = None  # the command line, for --nproc to start the workers with


settings = Settings()


def progress_mode(as_json: bool = False) -> str:
    """``bars`` on a terminal; ``lines`` in a log, a pipe or under --json; ``off`` with --quiet or
    OPTEMBED_NO_PROGRESS set."""
    if settings.quiet or os.environ.get("OPTEMBED_NO_PROGRESS"):
        return "off"
    if err.is_terminal and not as_json:
        return "bars"
    return "lines"


def progress_bars(console: Console, disable: bool = False) -> Progress:
    """Rich progress bars that keep to one line of the console's width: the bar takes what the
    name, the counts, the rate and the times leave (at least 10 columns); a name too long for
    that wraps instead of being cut."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10)),
        CountColumn(table_column=Column(no_wrap=True)),
        RateColumn(table_column=Column(no_wrap=True)),
        TimesColumn(table_column=Column(no_wrap=True)),
        console=console,
        transient=True,
        disable=disable,
        expand=False,
    )


class RichReporter:
    """Progress on stderr: Rich bars (with rates) on a terminal, plain lines otherwise; messages too.

    The bar display starts with the first task. ``quiet`` drops progress and messages (warnings
    and errors are printed elsewhere)."""

    def __init__(self, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet = quiet or settings.quiet
        self.mode = "off" if self.quiet else progress_mode(as_json)
        self.progress = progress_bars(err, disable=self.mode != "bars")
        self.started = False
        self.pending: list[str] = []  # lines shown once the work starts (dropped if it never does)

    def defer(self, text: str) -> None:
        """Show ``text`` before the first progress bar or message: a command refused by its
        checks prints only its error line."""
        self.pending.append(text)

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if self.quiet:
            return
        for line in lines:
            err.print(Text(line), soft_wrap=True)

    def task(self, description: str, total: float | None = None, unit: str = "it") -> Any:
        if self.mode != "off":  # without progress the deferred lines wait for a message or the end
            self.flush()
        if self.mode == "lines":
            return PlainTask(description, total, unit, interval=10.0 if settings.verbose else HEARTBEAT_SECONDS)
        if self.mode == "off":
            return NullTask()
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
def reporter(quiet: bool = False, as_json: bool = False) -> Iterator[RichReporter]:
    rep = RichReporter(quiet=quiet, as_json=as_json)
    try:
        yield rep
    finally:
        rep.stop()


def info(text: str) -> None:
    """A line about what is happening, on stderr; dropped with --quiet."""
    if not settings.quiet:
        err.print(Text(text), soft_wrap=True)


def warn(text: str) -> None:
    """A warning line on stderr (kept with --quiet)."""
    err.print(Text(f"warning: {text}", style="yellow"), soft_wrap=True)


def announce(manifest: Manifest, as_json: bool, what: str | None = None, extra: dict[str, Any] | None = None) -> None:
    """Say whether a stage ran or was cached; with --json print only the manifest on stdout
    (with ``extra``'s keys added).

    Notes about the artifact (a cached one computed in another environment) go to stderr.
    """
    notes(manifest)
    if as_json:  # the manifest plus where it lives, for shell scripts
        data = {**manifest.to_dict(), "path": str(manifest.path), "cached": manifest.cached, **(extra or {})}
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


UNTABULATED = ("calibration_warnings",)  # printed as warning lines, not as a table cell


def metrics_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")  # long values wrap, never cut
    for key, value in rows.items():
        if key not in UNTABULATED:
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
    upstream: str | tuple[str, ...] | None = None,
    source: str | None = None,
    track: object = None,
) -> Manifest:
    """Open the store, name a defaulted upstream artifact, run a stage with progress (its bars and
    lines named after the stage), print its warnings, show it; with ``track`` (``--track``) log
    it as an experiment run too."""
    from optembed.progress import Prefixed
    from optembed_cli import launch
    from optembed_cli import track as tracking
    from pipelines.store import Store

    secondary = launch.is_secondary_rank()  # ranks > 0 of a data-parallel run print nothing
    if secondary:
        settings.quiet = True
    tracker = None if secondary else tracking.open_tracker(track)
    store = Store(artifacts)
    name = run.__module__.rsplit(".", 1)[-1]
    with reporter(as_json=as_json) as rep:
        if upstream is not None and source is None:
            line = said_upstream(store.resolve(None, upstream), source, False)
            if line:
                rep.defer(line)  # shown when the work starts, after every check passed
        manifest = run(config, store, Prefixed(rep, name))
        rep.flush()
    if secondary:
        return manifest
    announce(manifest, as_json)
    training_warnings(store, manifest)
    tracking.log(tracker, manifest)
    if not as_json:
        render(manifest)
    return manifest


def training_warnings(store: Any, manifest: Manifest, name: str | None = None) -> None:
    """One warning line per problem of a trained artifact (too few steps, overfitting, a logloss
    worse than the base rate's) or of an evaluation (the same, on the test split; a test split too
    small to tell the models apart)."""
    from pipelines.diagnostics import artifact_warnings

    for line in artifact_warnings(store, manifest):
        warn(f"{name or manifest.stage} {manifest.fingerprint[:10]}: {line}")


VARIANT_LEGEND = (
    ("original", "Original: the plain model, every row at the full width D (the reference)"),
    ("optembed-e", "OptEmbed-E: row pruning only (rows with small norms removed), full width"),
    ("optembed-d", "OptEmbed-D: width search only (one width per field), every row kept"),
    ("optembed", "OptEmbed: both, pruned rows and searched widths, re-trained under those masks"),
    ("supernet", "supernet (mode): the supernet as trained, before any search"),
    ("qr", "QR: quotient and remainder tables per large field (stored parameters kept)"),
    ("pep", "PEP: learned soft thresholds, the element mask retrained (kept elements; bytes of a sparse layout)"),
    ("autofield", "AutoField: fields kept by a learned keep/drop search, retrained (the dropped fields' rows removed)"),
    ("autodim", "AutoDim: one width per field from learned candidate weights, retrained (rows x chosen widths)"),
)


def legend(variants: list[str]) -> list[str]:
    """The lines that explain a comparison table whose rows have these ``variants`` labels."""
    bases = {v.split(" ")[0] for v in variants}
    lines = [text for key, text in VARIANT_LEGEND if key in bases]
    if any("(no retrain)" in v for v in variants):
        lines.append("(no retrain): the supernet scored under the searched masks, without re-training")
    if any("+ pq" in v for v in variants):
        lines.append("+ pq: the model's large tables product-quantized (codes + codebooks), then fine-tuned")
    if any("[" in v for v in variants):
        lines.append("[abc123]: the artifact id's start, when two rows would share a label")
    lines += [
        "test AUC ±95%: the test split's AUC ± the half-width of its DeLong 95% interval",
        "logloss: on the test split; above the base rate's, worse than a constant",
        "sparsity: share of the Original table's values (all rows x D) that the masks remove",
        "ratio: bytes of the dense float32 Original table / bytes of this model's tables (higher is smaller)",
    ]
    return lines


def print_legend(variants: list[str]) -> None:
    if settings.quiet:
        return
    for line in legend(variants):
        out.print(Text(f"  {line}", style="dim"), soft_wrap=True)
