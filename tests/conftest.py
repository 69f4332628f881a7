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


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


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
