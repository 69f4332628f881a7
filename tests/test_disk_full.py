"""A full disk (or another failed write) while publishing an artifact or writing a resume
checkpoint: one line, exit 2, nothing half-written published, the previous checkpoint kept,
temporary files removed."""

from __future__ import annotations

import errno
import gc
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from optembed.errors import ArtifactError
from optembed_cli.main import app
from pipeline_fixtures import synthetic_preprocess
from pipelines import resume
from pipelines.stage import execute
from pipelines.store import Manifest, Store

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1536 vs 1468")


def raising(exc: BaseException):
    def build(tmp: Path, manifest: Manifest) -> None:
        (tmp / "part.bin").write_bytes(b"\0" * 100)
        raise exc

    return build


def good(tmp: Path, manifest: Manifest) -> None:
    (tmp / "out.bin").write_bytes(b"v1")
    manifest.outputs = {"out": "out.bin"}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp"))


@pytest.mark.parametrize(
    "exc, message",
    [(ENOSPC, "no space left on device while writing the demo artifact"),
     (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
     (TORCH_FULL, "the file write failed (is the disk full?)"),
     (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "file write failed"),
     (OSError(errno.EROFS, "Read-only file system", "x.pt"), "read-only file system while writing the demo artifact (x.pt)")],
)
def test_failed_write_while_building_is_one_error(tmp_path: Path, exc: BaseException, message: str) -> None:
    store = Store(tmp_path)
    with pytest.raises(ArtifactError) as info:
        execute(store, "demo", 1, {}, {}, raising(exc))
    assert message in str(info.value) and "nothing was published" in str(info.value)
    assert store.list() == [] and leftovers(tmp_path) == []


def test_other_errors_pass_through(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        execute(store, "demo", 1, {}, {}, raising(RuntimeError("boom")))
    with pytest.raises(FileNotFoundError):
        execute(store, "demo", 1, {}, {}, raising(FileNotFoundError(errno.ENOENT, "gone")))
    assert leftovers(tmp_path) == []


def test_disk_full_while_writing_the_manifest_keeps_the_previous_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    first = execute(store, "demo", 1, {}, {}, good)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ArtifactError, match="no space left on device"):
        execute(store, "demo", 1, {}, {}, good, force=True)
    monkeypatch.undo()
    assert store.load(first.path).output("out").read_bytes() == b"v1"  # type: ignore[arg-type]
    assert leftovers(tmp_path) == []


def state(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "weights": torch.full((64,), float(epoch))}


def failing_save(exc: BaseException, real: Any = torch.save):
    """``torch.save`` that writes a few bytes of a checkpoint and then fails."""

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if str(getattr(f, "name", f)).endswith(resume.PARTIAL):
            f.write(b"PK\x03\x04partial")
            raise exc
        real(obj, f, *args, **kwargs)

    return save


@pytest.mark.parametrize("exc", [ENOSPC, TORCH_FULL], ids=["oserror", "torch-runtime-error"])
def test_failed_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    folder = tmp_path / ".resume-abc"
    resume.write_checkpoint(folder, state(1))
    monkeypatch.setattr(torch, "save", failing_save(exc))
    with pytest.raises(ArtifactError) as info:
        resume.write_checkpoint(folder, state(2))
    message = str(info.value)
    assert "while writing the resume checkpoint" in message and "previous checkpoint is kept" in message
    assert "no space left on device" in message or "file write failed" in message
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == [resume.CHECKPOINT]
    assert torch.load(folder / resume.CHECKPOINT, weights_only=True)["epoch"] == 1


def test_checkpoint_into_a_folder_removed_meanwhile_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An identical run that published removes the shared resume folder: this run's checkpoint
    is moot and the run goes on (the next checkpoint recreates the folder)."""
    folder = tmp_path / ".resume-abc"
    real = torch.save

    def save_then_removed(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real(obj, f, *args, **kwargs)
        shutil.rmtree(folder)

    monkeypatch.setattr(torch, "save", save_then_removed)
    resume.write_checkpoint(folder, state(1))
    monkeypatch.undo()
    assert not folder.exists()
    resume.write_checkpoint(folder, state(2))
    assert sorted(p.name for p in folder.iterdir()) == [resume.CHECKPOINT]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("full"), rows=3000)
    return store, pre


def test_cli_supernet_with_a_full_disk_is_one_line(prepared: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    store, pre = prepared
    monkeypatch.setattr(torch, "save", failing_save(ENOSPC))
    res = CliRunner().invoke(
        app,
        ["supernet", "--from", pre.fingerprint, "--artifacts", str(store.root), "--embed-dim", "4", "--mlp", "8",
         "--epochs", "2", "--batch-size", "512", "--device", "cpu", "--seed", "3"],
        catch_exceptions=False,
    )
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "no space left on device while writing the resume checkpoint" in lines[0]
    assert "no checkpoint was kept" in lines[0]
    assert leftovers(store.root) == [] and store.list("supernet") == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, when this process may mount one (root in a privileged environment)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def failure_of(call: Callable[[], object]) -> str:
    """The message of the ArtifactError ``call`` raises. The exception is dropped (and its frames
    collected) before returning: the failed writer in those frames holds its half-written file
    open, so the space comes back only then (a command exits right after the error anyway)."""
    try:
        call()
    except ArtifactError as exc:
        message = str(exc)
    else:
        raise AssertionError("no ArtifactError")
    gc.collect()
    return message


def test_real_full_disk(tiny_tmpfs: Path) -> None:
    store = Store(tiny_tmpfs / "store")
    first = execute(store, "demo", 1, {}, {}, good)

    def big(tmp: Path, manifest: Manifest) -> None:
        torch.save({"w": torch.zeros(1 << 19)}, tmp / "model.pt")  # 2 MiB into 1 MiB

    assert re.search("no space left on device|file write failed", failure_of(lambda: execute(store, "demo", 1, {}, {}, big, force=True)))
    assert store.load(first.path).output("out").read_bytes() == b"v1"  # type: ignore[arg-type]
    folder = tiny_tmpfs / "store" / "demo" / ".resume-abc"
    resume.write_checkpoint(folder, state(1))
    assert "previous checkpoint is kept" in failure_of(lambda: resume.write_checkpoint(folder, {"epoch": 2, "w": torch.zeros(1 << 19)}))
    assert sorted(p.name for p in folder.iterdir()) == [resume.CHECKPOINT]
    assert torch.load(folder / resume.CHECKPOINT, weights_only=True)["epoch"] == 1
    assert leftovers(tiny_tmpfs) == []
