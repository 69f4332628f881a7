"""Scoring an encoded file in batches with a bundle's graph, writing scores as they come.

The encoded Parquet (from :func:`optembed.export.encode.encode_file`) is read in batches of
``batch_size`` rows; each batch's ids go through the scorer and its rows are appended to the
output (Parquet or CSV), so memory stays at a batch whatever the file's size. The columns:

* ``row``, ``score`` (the primary task's probability) and ``label`` when the input had the primary
  task's label: a one-task bundle's output, and the columns every consumer of it reads;
* for a bundle of several tasks also ``score_<task>`` for every task (the primary's included:
  ``score_<primary>`` equals ``score``) and ``label_<task>`` for every task whose label the input had.

Labels and logits of the labelled tasks are kept (5 bytes a row and task) for the AUC and logloss
printed at the end: the primary's under ``auc``, ``logloss``, ``positives``; with several tasks
every labelled task's under ``tasks`` (``{task: {auc, logloss, positives}}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from optembed.errors import ConfigError
from optembed.export.encode import encoded_label
from optembed.export.tasks import Scorer
from optembed.metrics import auc, logloss
from optembed.progress import NULL, Reporter

OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv"}


@dataclass
class ScoreResult:
    rows: int
    metrics: dict[str, Any] = field(default_factory=dict)


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out must end in .parquet or .csv, got {path.name}")
    return fmt


def score_columns(tasks: Sequence[str], labels: Sequence[int]) -> list[str]:
    """The output's columns for a bundle of ``tasks`` (empty: one task) and the labelled tasks ``labels``."""
    cols = ["row", "score", *(["label"] if 0 in labels else [])]
    if len(tasks) > 1:
        cols += [f"score_{t}" for t in tasks] + [f"label_{tasks[k]}" for k in labels]
    return cols


class _Writer:
    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.inner: Any = pq.ParquetWriter(str(path), schema) if fmt == "parquet" else pacsv.CSVWriter(str(path), schema)

    def write(self, table: pa.Table) -> None:
        self.inner.write_table(table)

    def close(self) -> None:
        self.inner.close()


def score_file(
    encoded: Path, scorer: Scorer, n_fields: int, labels: Sequence[int], out: Path, batch_size: int = 4096,
    reporter: Reporter = NULL, tasks: Sequence[str] = (),
) -> ScoreResult:
    """Score every row of ``encoded`` into ``out`` (in order): ``labels`` are the tasks whose
    labels it holds (``(0,)`` or ``()`` for one task), ``tasks`` the bundle's task names (empty
    for one task, whose scorer gives ``(B,)``; else ``(B, T)``). Metrics for the labelled tasks."""
    fmt = output_format(out)
    multi = len(tasks) > 1
    labels = sorted(set(labels))
    source = pq.ParquetFile(str(encoded))
    total = source.metadata.num_rows
    cols = ["row", *(encoded_label(k) for k in labels), *[f"f{i}" for i in range(n_fields)]]
    names = score_columns(tasks, labels)
    schema = pa.schema([pa.field(n, pa.int64() if n == "row" else pa.int8() if n.startswith("label") else pa.float32()) for n in names])
    writer = _Writer(out, fmt, schema)
    kept_labels: list[np.ndarray] = []  # (B, L) per batch: the labelled tasks' columns
    kept_logits: list[np.ndarray] = []
    task = reporter.task("scoring", total=total, unit="row")
    done = 0
    try:
        for batch in source.iter_batches(batch_size=batch_size, columns=cols):
            ids = np.stack([batch.column(f"f{i}").to_numpy(zero_copy_only=False) for i in range(n_fields)], axis=1).astype(np.int64)
            logit, prob = scorer(ids)
            logit = np.asarray(logit, dtype=np.float32).reshape(len(ids), -1)  # (B, T), T = 1 for one task
            prob = np.asarray(prob, dtype=np.float32).reshape(len(ids), -1)
            y = np.stack([batch.column(encoded_label(k)).to_numpy(zero_copy_only=False) for k in labels], axis=1).astype(np.int8) if labels else None
            arrays = [batch.column("row").cast(pa.int64()), pa.array(prob[:, 0])]
            if 0 in labels:
                arrays.append(pa.array(y[:, 0]))  # type: ignore[index]
            if multi:
                arrays += [pa.array(prob[:, t]) for t in range(len(tasks))]
                arrays += [pa.array(y[:, j]) for j in range(len(labels))]  # type: ignore[index]
            if y is not None:
                kept_labels.append(y)
                kept_logits.append(logit[:, labels])
            writer.write(pa.Table.from_arrays(arrays, schema=schema))
            done += batch.num_rows
            task.advance(batch.num_rows)
    finally:
        writer.close()
        task.close()
    return ScoreResult(done, _metrics(done, labels, tasks, kept_labels, kept_logits))


def _metrics(done: int, labels: list[int], tasks: Sequence[str], ys: list[np.ndarray], zs: list[np.ndarray]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"rows": done}
    if not labels or not done:
        return metrics
    y_all = torch.from_numpy(np.concatenate(ys).astype(np.float32))
    z_all = torch.from_numpy(np.concatenate(zs))
    per_task: dict[str, dict[str, Any]] = {}
    for j, k in enumerate(labels):
        y, z = y_all[:, j].contiguous(), z_all[:, j].contiguous()
        numbers = {"auc": auc(y, z), "logloss": logloss(y, z), "positives": int(y.sum())}
        if k == 0:
            metrics.update(numbers)
        if len(tasks) > 1:
            per_task[tasks[k]] = numbers
    if per_task:
        metrics["tasks"] = per_task
    return metrics
