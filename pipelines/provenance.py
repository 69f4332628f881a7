"""Where and with what an artifact was computed: versions, git commit, device, threads.

The provenance is recorded in every manifest but is not part of the fingerprint: the same
inputs give the same artifact id on any machine. Some of it can still change results in the
last digits (the torch thread count and the device change the order of floating-point sums;
torch versions change kernels), so a cached artifact made under a different thread count,
device or torch version is reported with a one-line note (:func:`cached_notes`).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import optembed

# provenance keys whose difference is worth a note when an artifact is reused
RESULT_KEYS = (("torch_threads", "torch threads"), ("torch", "torch"), ("device", "device"), ("device_name", "device"))


def collect(device: str | torch.device | None = None) -> dict[str, Any]:
    """The current environment; ``device`` is the one the stage computed on (if known)."""
    import duckdb
    import pyarrow

    dev = str(device) if device is not None else None
    commit, dirty = git_state()
    info: dict[str, Any] = {
        "optembed": optembed.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "device": dev,
        "device_name": device_name(dev) if dev is not None else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    return info


def device_name(device: str) -> str:
    """A readable name of the GPU or CPU behind ``device``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            index = torch.device(device).index
            return torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
        except (RuntimeError, AssertionError):
            return "cuda"
    if device.startswith("mps"):
        return "Apple MPS"
    return _cpu_name()


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the source checkout optembed runs from, and whether it has local changes;
    ``(None, None)`` when it is not run from a checkout or git is unavailable."""
    root = Path(optembed.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The result-relevant differences between a recorded provenance and the current one, as
    ``"torch threads 1 (now 2)"``; keys unknown on either side are skipped."""
    found: dict[str, str] = {}
    for key, label in RESULT_KEYS:
        old, new = recorded.get(key), current.get(key)
        if old is None or new is None or label in found:
            continue
        if key == "device":
            old, new = str(old).split(":")[0], str(new).split(":")[0]
        if old != new:
            found[label] = f"{label} {old} (now {new})"
    return list(found.values())


def cached_notes(stage: str, fp: str, recorded: dict[str, Any], device: str | torch.device | None) -> list[str]:
    """One note when a reused artifact was computed under a different thread count, device or
    torch version than the current run would use; nothing for old manifests without provenance
    and for stages that computed nothing with torch (no device recorded, e.g. preprocess)."""
    if not recorded or recorded.get("device") is None:
        return []
    diffs = differences(recorded, collect(device))
    if not diffs:
        return []
    return [
        f"note: cached {stage} {fp} was computed with {', '.join(diffs)}; a rerun here can differ in the "
        f"last digits (the fingerprint ignores the environment; --force recomputes)"
    ]
