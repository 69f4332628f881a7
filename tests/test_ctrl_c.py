"""Ctrl-C stops a test run at once, also where the code under test swallows the interrupt.

A small test file runs in a child pytest with this suite's ``conftest.py`` as a plugin; its first
tests receive a real SIGINT that the code catches (as the CLI does: one line, exit 130). The run
must end there with exit code 130 and never reach the tests after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import os
    import signal
    from pathlib import Path

    from pipelines.store import Store

    MARKS = Path(os.environ["CTRL_C_MARKS"])


    def test_swallowed_in_plain_code():
        if os.environ["CTRL_C_CASE"] != "plain":
            return
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed: this test goes on, the run stops after it
        (MARKS / "plain-went-on").touch()


    def test_swallowed_by_the_cli(cli, tmp_path, monkeypatch):
        if os.environ["CTRL_C_CASE"] != "cli":
            return

        def interrupted(self, stage=None):
            os.kill(os.getpid(), signal.SIGINT)

        monkeypatch.setattr(Store, "scan", interrupted)
        cli("artifacts", "--artifacts", tmp_path)
        (MARKS / "cli-went-on").touch()


    def test_after():
        (MARKS / "next-test-ran").touch()
    """
)


@pytest.mark.slow  # two child test runs (seconds each)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("case", ["plain", "cli"])
def test_ctrl_c_ends_the_run_where_it_lands(tmp_path: Path, case: str) -> None:
    (tmp_path / "test_child.py").write_text(CHILD)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "CTRL_C_MARKS": str(marks), "CTRL_C_CASE": case,
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_child.py")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
        preexec_fn=_default_sigint,
    )
    assert done.returncode == 130, done.stdout + done.stderr
    assert "interrupted by Ctrl-C" in done.stdout + done.stderr
    # plain code that swallows the interrupt finishes its test; a CLI command stops its test
    assert sorted(p.name for p in marks.iterdir()) == (["plain-went-on"] if case == "plain" else [])


def _default_sigint() -> None:
    """A child started from a shell job may inherit an ignored SIGINT: restore the default."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
