"""Warnings about a finished artifact: a trained one (``supernet``, ``retrain``, ``baseline``:
read from its curves; these, ``compress`` and ``search``: a logloss worse than the base rate's, as recorded
in its metrics; the trained ones and ``compress``: a test split too small for its test AUC) or an ``evaluate`` one (recorded in its ``metrics.json`` when it was computed,
so a cached evaluation warns again)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from optembed.data.labels import task_names
from optembed.training.diagnostics import small_test_split, training_warnings
from pipelines.calibration import base_rates, calibration_warnings, trained_variant
from pipelines.store import Manifest, Store

TRAINED = ("supernet", "retrain", "baseline")
CALIBRATED = (*TRAINED, "compress", "search")
TESTED = (*TRAINED, "compress")  # stages whose result reports a test AUC


def artifact_warnings(store: Store, manifest: Manifest) -> list[str]:
    """The warnings of ``manifest`` (none for other stages or unreadable outputs)."""
    if manifest.stage == "evaluate":
        return _recorded(manifest)
    pre_id = manifest.upstream.get("preprocess")
    pre = store.lookup("preprocess", pre_id) if pre_id else None
    found = _curve_warnings(manifest, pre) if manifest.stage in TRAINED else []
    if manifest.stage in CALIBRATED:
        found += _calibration(manifest, pre)
    if manifest.stage in TESTED and pre is not None:
        found += _test_split(pre)
    return found


def _test_split(pre: Manifest) -> list[str]:
    """The small-test-split line of a model scored on ``pre``'s test split (none when its schema
    cannot be read)."""
    try:
        schema = json.loads(pre.output("schema").read_text())
        rows = int(schema["rows"]["test"])
        positives = round(float(schema["positive_ratio"]["test"]) * rows)
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        return []
    line = small_test_split(positives, rows - positives)
    return [line] if line else []


def _curve_warnings(manifest: Manifest, pre: Manifest | None) -> list[str]:
    if "curves" not in manifest.outputs:
        return []
    try:
        history = pq.read_table(manifest.output("curves")).to_pylist()
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        history = []
    if any("phase" in r for r in history):  # a baseline's search epochs are not its training run
        history = [r for r in history if r.get("phase") == "train"]
    rows = int(pre.metrics.get("rows_train", 0)) if pre is not None else 0
    batch = int(manifest.params.get("train", {}).get("batch_size", 1))
    return training_warnings(history, rows, batch, _tasks(pre))


def _tasks(pre: Manifest | None) -> list[str]:
    """The task names of ``pre``'s schema, primary first (none when it cannot be read)."""
    try:
        return task_names(json.loads(pre.output("schema").read_text())) if pre is not None else []
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        return []


def _calibration(manifest: Manifest, pre: Manifest | None) -> list[str]:
    """The recorded base-rate warning; computed from the metrics and the schema for an artifact
    made before they were recorded."""
    recorded = manifest.metrics.get("calibration_warnings")
    if isinstance(recorded, list):
        return [str(w) for w in recorded]
    rates = base_rates(pre) if pre is not None else {}
    return calibration_warnings(trained_variant(manifest), {**manifest.metrics, **rates})


def _recorded(manifest: Manifest) -> list[str]:
    try:
        data: dict[str, Any] = json.loads(manifest.output("metrics").read_text())
    except Exception:  # noqa: BLE001 - a warning is never worth a failure
        return []
    return [str(w) for w in data.get("warnings", [])]
