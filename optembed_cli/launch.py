"""``--nproc N``: run this very command as N data-parallel processes through PyTorch's own launcher.

``optembed supernet ... --nproc 2`` is ``torchrun --standalone --nproc_per_node 2 -m optembed_cli
supernet ...``: the command is started again in N worker processes by
``torch.distributed.launcher`` (the engine behind ``torchrun``), which sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; each worker builds its runtime from them
(:func:`optembed.training.runtime.runtime_from_env`). This process only waits.

Errors. A worker's error line is written to a file in a folder this process owns instead of to
stderr; when a worker fails the launcher stops the others and prints one line: the first error
of a worker that failed on its own (not because a peer disappeared), else the signal that
killed a worker. Nothing is published: only rank 0 publishes, after every rank finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from optembed.errors import ConfigError

ERROR_DIR_ENV = "OPTEMBED_RANK_ERRORS"
NPROC_MAX = 64


def in_worker() -> bool:
    """Whether this process is one rank of a multi-process run (torchrun or ``--nproc``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def is_secondary_rank() -> bool:
    """A rank other than 0: it prints nothing (rank 0 speaks for the run)."""
    return in_worker() and int(os.environ.get("RANK", "0") or 0) > 0


def wants_launch(nproc: int) -> bool:
    """Whether ``--nproc`` asks this process to start workers (it is not one already)."""
    if nproc < 1 or nproc > NPROC_MAX:
        raise ConfigError(f"--nproc must be between 1 and {NPROC_MAX}, got {nproc}")
    if in_worker():
        world = int(os.environ["WORLD_SIZE"])
        if nproc not in (1, world):
            raise ConfigError(f"--nproc {nproc} inside a run of {world} processes (started by torchrun?); drop --nproc")
        return False
    return nproc > 1


def record_error(message: str, code: int, peer: bool) -> bool:
    """In a ``--nproc`` worker: save the error line for the launcher (returns True: do not print)."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or not in_worker():
        return False
    rank = os.environ.get("RANK", "0")
    try:
        path = Path(folder) / f"rank-{rank}.json"
        path.write_text(json.dumps({"time": time.time(), "message": message, "code": code, "peer": peer}))
    except OSError:
        return False
    return True


def launch(nproc: int, argv: list[str]) -> tuple[int, str | None]:
    """Run ``python -m optembed_cli ARGV`` in ``nproc`` workers; ``(exit code, error line or None)``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of every worker taking them all
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    folder = tempfile.mkdtemp(prefix="optembed-ranks-")
    os.environ[ERROR_DIR_ENV] = folder
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"optembed-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "optembed_cli", *argv)
        return 0, None
    except ChildFailedError as exc:
        return _verdict(Path(folder), exc.failures)
    except KeyboardInterrupt:
        return 130, "error: interrupted; every process was stopped and no artifact was published"
    finally:
        os.environ.pop(ERROR_DIR_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _verdict(folder: Path, failures: dict[int, object]) -> tuple[int, str]:
    """The one line (and exit code) that explains a failed run."""
    records = []
    for path in folder.glob("rank-*.json"):
        try:
            records.append({**json.loads(path.read_text()), "rank": int(path.stem.split("-")[1])})
        except (OSError, ValueError):
            continue
    own = sorted((r for r in records if not r["peer"]), key=lambda r: r["time"])
    if own:
        first = own[0]
        shared = {r["message"] for r in own if r["rank"] == 0}  # every rank's error: said without a rank
        rank = 0 if first["message"] in shared else first["rank"]
        return int(first["code"]), f"error: {_rank_prefix(rank)}{first['message']}"
    # the launcher stops the survivors with SIGTERM: a worker killed by another signal comes first
    killed = sorted(failures.items(), key=lambda kv: (int(getattr(kv[1], "exitcode", 1) or 1) == -signal.SIGTERM, kv[0]))
    for rank, failure in killed:
        code = int(getattr(failure, "exitcode", 1) or 1)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
            return 1, (
                f"error: rank {rank} was stopped by {name}; every process was stopped and no artifact was published"
            )
    if records:
        first = min(records, key=lambda r: r["time"])
        return int(first["code"]), f"error: {_rank_prefix(first['rank'])}{first['message']}"
    rank, failure = min(failures.items())
    code = int(getattr(failure, "exitcode", 1) or 1)
    return (code if code > 0 else 1), f"error: rank {rank} failed with exit code {code}; no artifact was published"


def _rank_prefix(rank: int) -> str:
    return f"rank {rank}: " if rank else ""
