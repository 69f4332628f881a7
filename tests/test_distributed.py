"""Data parallelism (gloo on the CPU): two ranks sharing each global batch take the one-process
step; ``--nproc 2`` publishes one artifact with the one-process fingerprint; a killed rank stops
the run with one line, publishes nothing, and ``--resume`` continues it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

import distributed_worker as dw
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from optembed.training.runtime import part_bounds
from pipeline_fixtures import synthetic_preprocess
from pipelines import supernet
from pipelines.store import Manifest, Store

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parts_cover_a_batch_once() -> None:
    for n in (0, 1, 7, 128, 129):
        for world in (1, 2, 3):
            bounds = [part_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


# thresholds learn (Adam, a visible alpha), widths are sampled per sample: both must match
PRUNING = {"threshold_optimizer": "adam", "threshold_lr": 1e-2, "alpha": 1e-3}


@pytest.mark.parametrize(
    "train",
    [
        {"embedding_optimizer": "adam", **PRUNING},
        {"embedding_optimizer": "rowwise-adagrad", "embedding_lr": 0.05, **PRUNING},
    ],
    ids=["dense-adam", "sparse-rowwise-adagrad"],
)
@pytest.mark.slow
def test_two_ranks_take_the_one_process_steps(train: dict[str, Any], tmp_path: Path) -> None:
    settings = {
        "rows": 1100,  # 8 full batches of 128 and a last one of 76
        "train": {"epochs": 2, "batch_size": 128, "patience": 0, "seed": 3, **train},
    }
    start, reference, ref_aucs = dw.one_process(settings)
    mp.spawn(dw.rank_main, args=(2, _free_port(), settings, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    moved = [k for k in reference if reference[k].is_floating_point() and not torch.equal(reference[k], start[k])]
    assert "embedding.weight" in " ".join(moved) and any("threshold" in k for k in moved)
    for got in ranks:
        for key, want in reference.items():
            torch.testing.assert_close(got["state"][key], want, rtol=1e-4, atol=2e-5, msg=f"{key} differs")
        assert got["aucs"] == pytest.approx(ref_aucs, abs=1e-6)
    for key in reference:  # the ranks hold one model
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key])


# -- the stage under --nproc -------------------------------------------------------------------
MODEL = ModelConfig("deepfm", embed_dim=4, mlp_dims=(16,), batch_norm=False, dropout=0.0)  # dropout masks are drawn per rank: no exact equality
CLI = ["--embed-dim", "4", "--mlp", "16", "--dropout", "0", "--no-batch-norm", "--batch-size", "64", "--patience", "0", "--seed", "4",
       "--device", "cpu"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("dist"), rows=6000)
    return store, pre


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OPTEMBED_NO_PROGRESS"] = "1"
    return env


def _cli(store: Store, pre: Manifest, *args: str) -> list[str]:
    return [sys.executable, "-m", "optembed_cli", "supernet", "--from", pre.fingerprint, *CLI, *args,
            "--artifacts", str(store.root)]


@pytest.mark.slow
def test_nproc_publishes_one_artifact_with_the_one_process_fingerprint(prepared: tuple[Store, Manifest]) -> None:
    store, pre = prepared
    cfg = TrainConfig(epochs=2, batch_size=64, patience=0, seed=4)
    one = supernet.run(supernet.SupernetStage(model=MODEL, train=cfg, source=pre.fingerprint, device="cpu"), store)
    done = subprocess.run(_cli(store, pre, "--epochs", "2", "--nproc", "2", "--force", "--json"),
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    two = json.loads(done.stdout)  # one JSON document: only rank 0 printed
    assert two["fingerprint"] == one.fingerprint and two["metrics"]["world_size"] == 2
    assert two["metrics"]["val_auc"] == pytest.approx(one.metrics["val_auc"], abs=1e-4)
    folder = store.root / "supernet"
    assert [p.name for p in folder.iterdir()] == [one.fingerprint]  # no second copy, no leftovers


def _rank_pid(launcher: int, rank: int) -> int | None:
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(child)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_run_and_resume_finishes_it(prepared: tuple[Store, Manifest]) -> None:
    store, pre = prepared
    args = _cli(store, pre, "--epochs", "4", "--seed", "9", "--nproc", "2", "--json")
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    resume = store.root / "supernet"
    deadline = time.monotonic() + 90
    victim = None
    while time.monotonic() < deadline and run.poll() is None:  # after the first epoch's checkpoint
        if any(resume.glob(".resume-*/checkpoint.pt")):
            victim = _rank_pid(run.pid, 1)
            break
        time.sleep(0.05)
    assert victim is not None, "the run never wrote its first checkpoint"
    os.kill(victim, signal.SIGKILL)
    out, err = run.communicate(timeout=60)
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert run.returncode == 1 and out == ""
    assert errors == ["error: rank 1 was stopped by SIGKILL; every process was stopped and no artifact was published"]
    assert err.rstrip().endswith(errors[0])
    assert store.list("supernet") == [] or all(m.params["train"]["seed"] != 9 for m in store.list("supernet"))
    # only the killed rank's scratch folder is left (named with its process id), inside the store
    # where the next write of the stage removes it; nothing in the system's temporary folder
    assert [p.name.rsplit("-", 1)[1] for p in resume.glob(".tmp-*")] in ([], [str(victim)])
    assert not list(Path(tempfile.gettempdir()).glob("optembed-rank*"))  # the old scratch place
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["metrics"]["epochs_run"] == 4 and not list(resume.glob(".resume-*"))
    assert not list(resume.glob(".tmp-*"))


def test_sigterm_in_a_worker_removes_the_half_built_artifact(tmp_path: Path) -> None:
    """The launcher stops surviving ranks with SIGTERM; a worker then leaves no half-built folder."""
    code = (
        "import os, signal, sys\n"
        "from optembed_cli.main import stop_on_sigterm\n"
        "from pipelines.store import Manifest, Store\n"
        "stop_on_sigterm()\n"
        "store = Store(sys.argv[1])\n"
        "with store.writer(Manifest('supernet', 1, 'ab' * 8, {})) as tmp:\n"
        "    (tmp / 'model.pt').write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    signal.pause()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert list((tmp_path / "store").rglob(".tmp-*")) == [] and not (tmp_path / "store" / "supernet" / ("ab" * 8)).exists()
