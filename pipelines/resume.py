"""Resume checkpoints of interrupted training stages (``supernet --resume``, ``retrain --resume``).

A stage keeps its last finished epoch in ``<root>/<stage>/.resume-<fingerprint>/checkpoint.pt``
(outside the temporary folder, so an interrupted run keeps it). A checkpoint is written to
``<pid>.checkpoint.tmp`` (two identical runs may share the folder), synced and then renamed over
the previous one: a failed write (disk full) never replaces a good checkpoint, leaves no
temporary file behind and stops the run with one line. The folder is removed once the artifact
is published.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from optembed.errors import ArtifactError
from optembed.safe_load import expect_dict, load_tensor_file
from pipelines.store import RESUME_PREFIX, Store, check_fingerprint, check_stage_name, release_frames, write_error

CHECKPOINT = "checkpoint.pt"
PARTIAL = "checkpoint.tmp"
RESUME_KEYS = ("epoch", "model", "optimizers", "generator", "best_state", "best_epoch", "best_val_auc", "history", "bad_epochs")


def resume_dir(store: Store, stage: str, fp: str) -> Path:
    return store.root / check_stage_name(stage) / f"{RESUME_PREFIX}{check_fingerprint(fp)}"


def load_checkpoint(folder: Path, device: torch.device | str) -> dict[str, Any] | None:
    """The saved training state, or ``None`` when there is no checkpoint."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    state = load_tensor_file(path, "resume checkpoint", map_location=device)
    return expect_dict(state, path, "resume checkpoint", RESUME_KEYS)


def write_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Save ``state`` as the folder's checkpoint, atomically; a failed write raises one
    :class:`~optembed.errors.ArtifactError` and keeps the previous checkpoint."""
    partial = folder / f"{os.getpid()}.{PARTIAL}"  # per process: two runs of one stage may share the folder
    final = folder / CHECKPOINT
    failure: ArtifactError | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, final)
    except FileNotFoundError as exc:
        if folder.is_dir():
            raise
        # The folder was removed meanwhile (an identical run published and discarded it): this
        # checkpoint is moot; the next one recreates the folder.
        release_frames(exc)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        kept = "the previous checkpoint is kept (--resume continues from it)" if final.is_file() else "no checkpoint was kept"
        failure = write_error(exc, f"the resume checkpoint {final}", kept)
        if failure is None:
            raise
        release_frames(exc)
    if failure is not None:
        raise failure


def checkpointer(folder: Path) -> Callable[[dict[str, Any]], None]:
    """The ``Trainer.fit(checkpoint=...)`` callback writing into ``folder``."""

    def save(state: dict[str, Any]) -> None:
        write_checkpoint(folder, state)

    return save


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
