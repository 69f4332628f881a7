"""The allocator thresholds: freed blocks of a training step are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optembed.training.host import tune_allocator

HOST = Path(__file__).resolve().parent.parent / "optembed" / "training" / "host.py"

# glibc's malloc serves Python's large buffers too, so the probe needs neither torch nor the package
# (loaded by path: two interpreters with torch cost seconds, these cost a fraction of one)
PROBE = textwrap.dedent(
    """
    import importlib.util, resource, sys
    spec = importlib.util.spec_from_file_location("host", sys.argv[2])
    host = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host)
    if sys.argv[1] == "tuned":
        assert host.tune_allocator()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):  # warm-up: the first touch of any memory faults either way
        x = bytearray(40 << 20); y = bytearray(48 << 20); del x, y
    f0 = faults()
    for _ in range(10):  # the temporaries of a step: 40 MB and 48 MB, written and freed again
        x = bytearray(40 << 20); y = bytearray(48 << 20); del x, y
    print((faults() - f0) / 10)
    """
)


def _faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(HOST)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not tune_allocator(), reason="glibc's mallopt only")
def test_raised_thresholds_stop_page_faults_on_reused_temporaries() -> None:
    default = _faults_per_step("default")
    tuned = _faults_per_step("tuned")
    assert default > 10_000  # 88 MB of fresh pages each time (4 KiB pages: ~22,000 faults)
    assert tuned < default / 3  # measured: 0 vs ~22,500


def test_tuning_is_idempotent() -> None:
    first = tune_allocator()
    assert tune_allocator() is first
