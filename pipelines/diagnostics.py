"""Warnings about a finished artifact: a trained one (``supernet``, ``retrain``, ``baseline``: read
from its curves, its metrics and its data's schema) or an ``evaluate`` one (recorded in its
``metrics.json`` when it was computed, so a cached evaluation warns again)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from optembed.metrics import constant_logloss
from optembed.training.diagnostics import training_warnings, worse_than_base_rate
from pipelines.store import Manifest, Store

TRAINED = ("supernet", "retrain", "baseline")


def artifact_warnings(store: Store, manifest: Manifest) -> list[str]:
    """The warnings of ``manifest`` (none for other stages or unreadable outputs)."""
    if manifest.stage == "evaluate":
        return _recorded(manifest)
    if manifest.stage not in TRAINED or "curves" not in manifest.outputs:
        return []
    try:
        history = pq.read_table(manifest.output("curves")).to_pylist()
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        history = []
    if any("phase" in r for r in history):  # a baseline's search epochs are not its training run
        history = [r for r in history if r.get("phase") == "train"]
    pre = store.lookup("preprocess", manifest.upstream.get("preprocess", "")) if manifest.upstream.get("preprocess") else None
    rows = int(pre.metrics.get("rows_train", 0)) if pre is not None else 0
    batch = int(manifest.params.get("train", {}).get("batch_size", 1))
    found = training_warnings(history, rows, batch)
    base = validation_base_logloss(pre) if pre is not None else None
    calibration = worse_than_base_rate(trained_variant(manifest), manifest.metrics.get("val_logloss"), base, "validation")
    return found + ([calibration] if calibration else [])


def validation_base_logloss(pre: Manifest) -> float | None:
    """The logloss of predicting the training positive rate for every validation row, from the
    positive ratios in the preprocess artifact's ``schema.json`` (``None`` when unreadable)."""
    try:
        ratios = json.loads(pre.output("schema").read_text())["positive_ratio"]
        return constant_logloss(float(ratios["val"]), float(ratios["train"]))
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        return None


def trained_variant(manifest: Manifest) -> str:
    """The name a trained artifact's model goes by in the comparison tables."""
    if manifest.stage == "supernet":
        return f"supernet ({manifest.params.get('mode', '?')})"
    return str(manifest.metrics.get("variant") or manifest.params.get("method") or manifest.stage)


def _recorded(manifest: Manifest) -> list[str]:
    try:
        data: dict[str, Any] = json.loads(manifest.output("metrics").read_text())
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        return []
    return [str(w) for w in data.get("warnings", [])]
