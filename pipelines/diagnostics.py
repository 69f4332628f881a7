"""Warnings about a finished ``supernet`` or ``retrain`` artifact (read from its curves)."""

from __future__ import annotations

import pyarrow.parquet as pq

from optembed.training.diagnostics import training_warnings
from pipelines.store import Manifest, Store

TRAINED = ("supernet", "retrain")


def artifact_warnings(store: Store, manifest: Manifest) -> list[str]:
    """The training warnings of ``manifest`` (none for other stages or unreadable curves)."""
    if manifest.stage not in TRAINED or "curves" not in manifest.outputs:
        return []
    try:
        history = pq.read_table(manifest.output("curves")).to_pylist()
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        history = []
    pre = store.lookup("preprocess", manifest.upstream.get("preprocess", "")) if manifest.upstream.get("preprocess") else None
    rows = int(pre.metrics.get("rows_train", 0)) if pre is not None else 0
    batch = int(manifest.params.get("train", {}).get("batch_size", 1))
    return training_warnings(history, rows, batch)
