"""Shared fixtures: a temporary artifact store, the real data samples, a CLI runner."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("OPTEMBED_NO_PROGRESS", "1")

_CTRL_C = {"seen": False}


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _CTRL_C["seen"] = True
    raise KeyboardInterrupt


def pytest_sessionstart(session: pytest.Session) -> None:
    """Ctrl-C stops the run even where the code under test turns the interrupt into an exit
    code (the CLI answers it with one line and exit 130, which a test would only record)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    if _CTRL_C["seen"]:
        pytest.exit("interrupted by Ctrl-C", returncode=130)


_MISSING = "not present (real-data sample)"


def shared_file(name: str) -> Path:
    """A real-data sample of ``../shared/data`` beside the checkout; the test skips without it
    (counted in the summary line of :func:`pytest_terminal_summary`)."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} {_MISSING}")
    return path


def pytest_report_header(config: pytest.Config) -> str:
    state = "present" if SHARED_DATA.is_dir() else "absent: the tests that read them skip"
    return f"real-data samples: {SHARED_DATA} ({state})"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """One line saying how many tests skipped for want of the real-data samples, and where they
    are looked for (they skip silently otherwise, e.g. on a plain clone)."""
    reasons = [_skip_reason(r) for r in terminalreporter.stats.get("skipped", [])]
    missing = sorted({Path(r.split(" ", 1)[-1].rsplit(f" {_MISSING}", 1)[0]).name for r in reasons if _MISSING in r})
    count = sum(_MISSING in r for r in reasons)
    if count:
        where = "absent" if not SHARED_DATA.is_dir() else f"missing {', '.join(missing)}"
        terminalreporter.write_line(
            f"{count} test{'s' if count != 1 else ''} skipped: the real-data samples are looked for in {SHARED_DATA} "
            f"(../shared/data beside the checkout), {where}"
        )


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("OPTEMBED_ARTIFACTS", str(root))
    return root


@pytest.fixture
def cli():
    from optembed_cli.main import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        if _CTRL_C["seen"]:  # the command answered a real Ctrl-C with exit 130: stop here
            raise KeyboardInterrupt
        return result

    return invoke
