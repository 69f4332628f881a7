"""Shared run logic of every stage: fingerprint, skip when cached, publish atomically."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optembed.errors import ArtifactError
from optembed.training.runtime import Runtime
from pipelines import provenance
from pipelines.store import Manifest, Store, fingerprint

if TYPE_CHECKING:
    from optembed.training.trainer import FitResult

Builder = Callable[[Path, Manifest], None]


def execute(
    store: Store,
    stage: str,
    stage_version: int,
    params: dict[str, Any],
    upstream: Mapping[str, Manifest],
    build: Builder,
    force: bool = False,
    device: str | torch.device | None = None,
    runtime: Runtime | None = None,
    collective: bool = True,
) -> Manifest:
    """Return the cached artifact for these inputs, or build and publish a new one.

    ``build(tmp_dir, manifest)`` writes outputs into ``tmp_dir`` and fills
    ``manifest.outputs`` and ``manifest.metrics``; the manifest (with the files' sizes and
    hashes and the provenance) is written and the folder renamed into place only when it
    returns normally. Every upstream artifact must belong to ``store``. ``device`` (the one the
    stage computes on, when known) goes into the provenance; a cached artifact computed under
    another device, thread count or torch version gets a note in ``manifest.notes``.

    ``runtime`` (a data-parallel run): only rank 0 publishes. With ``collective`` the other ranks
    run ``build`` too (it trains together with rank 0) into a scratch folder that is thrown away;
    without, they skip it. Either way they wait at a barrier for rank 0's artifact and return
    its manifest. A rank that fails stops the run before the barrier, so nothing is published.
    """
    for name, m in upstream.items():
        if not store.contains(m):
            raise ArtifactError(
                f"upstream {name} artifact {m.fingerprint} ({m.path}) is not in the store {store.root}; "
                f"a stage only builds on artifacts of its own store"
            )
    ups = {name: m.fingerprint for name, m in upstream.items()}
    fp = fingerprint(stage, stage_version, params, ups)
    existing = None if force else store.lookup(stage, fp)
    if existing is not None:
        existing.cached = True
        existing.notes.extend(provenance.cached_notes(stage, fp, existing.provenance, device))
        return existing
    manifest = Manifest(stage=stage, stage_version=stage_version, fingerprint=fp, params=params, upstream=ups)
    if runtime is not None and runtime.distributed and not runtime.is_main:
        if collective:
            # A scratch folder inside the store (named with this process's id): a rank that is
            # killed (the launcher stops the survivors of a failed run) leaves it where the next
            # write of the stage and ``optembed gc`` find and remove it, not in the system's /tmp.
            scratch = store.temp_dir(stage, fp)
            try:
                scratch.mkdir(parents=True, exist_ok=True)
                build(scratch, manifest)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        runtime.barrier()
        published = store.lookup(stage, fp)
        if published is None:
            raise ArtifactError(f"rank 0 published no {stage} artifact {fp}")
        return published
    with store.writer(manifest) as tmp:
        build(tmp, manifest)
        manifest.provenance = provenance.collect(device if device is not None else manifest.metrics.get("device"))
    if runtime is not None:
        runtime.barrier()
    return manifest


def fit_metrics(result: FitResult, tasks: Sequence[str] = ()) -> dict[str, Any]:
    """Manifest metrics of a training run: its best epoch, the epochs run, and the validation and
    test AUC and logloss of the best epoch (the primary task's; with several ``tasks`` each one's
    under ``tasks``)."""
    best = result.best_metrics()
    out = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_auc": best["val_auc"],
        "val_logloss": best["val_logloss"],
        "test_auc": best.get("test_auc"),
        "test_logloss": best.get("test_logloss"),
    }
    if len(tasks) > 1:
        from pipelines.tasks import per_task

        out["tasks"] = per_task(best, tasks)
    return out


def curve_records(result: FitResult) -> list[dict[str, Any]]:
    """The records of a training's ``curves.parquet``: the starting weights' validation first
    (epoch 0, when they were validated: the kept checkpoint when no epoch beats them), then one
    per epoch. The start's test metrics stay out, as the epochs' do; every record has every key
    (``None`` where it has no value: the start has no training loss), so a table keeps them all."""
    start = {k: v for k, v in result.start_record.items() if not k.startswith("test_")}
    records = [start, *result.history] if start else list(result.history)
    keys = list(dict.fromkeys(k for r in records for k in r))
    return [{k: r.get(k) for k in keys} for r in records]


def scale_metrics(runtime: Runtime, streamed: list[str], buffer_rows: int) -> dict[str, Any]:
    """Manifest metrics of how a training stage ran (not fingerprinted: they do not change what is
    learned beyond float rounding and the streamed shuffle): the number of data-parallel
    processes, and which splits streamed from Parquet with what shuffle buffer."""
    out: dict[str, Any] = {}
    if runtime.distributed:
        out["world_size"] = runtime.world_size
    if streamed:
        out["streamed_splits"] = list(streamed)
        out["shuffle_buffer_rows"] = buffer_rows
    return out
