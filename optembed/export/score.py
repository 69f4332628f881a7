"""Scoring an encoded file in batches with a bundle's graph, writing scores as they come.

The encoded Parquet (from :func:`optembed.export.encode.encode_file`) is read in batches of
``batch_size`` rows; each batch's ids go through the scorer and its rows are appended to the
output (Parquet or CSV: ``row``, ``score`` and ``label`` when the input had one), so memory
stays at a batch whatever the file's size. Labels and logits are kept (5 bytes a row) for the
AUC and logloss printed at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from optembed.errors import ConfigError
from optembed.export.bundle import Scorer
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


class _Writer:
    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.inner: Any = pq.ParquetWriter(str(path), schema) if fmt == "parquet" else pacsv.CSVWriter(str(path), schema)

    def write(self, table: pa.Table) -> None:
        self.inner.write_table(table)

    def close(self) -> None:
        self.inner.close()


def score_file(
    encoded: Path, scorer: Scorer, n_fields: int, has_label: bool, out: Path, batch_size: int = 4096,
    reporter: Reporter = NULL,
) -> ScoreResult:
    """Score every row of ``encoded`` into ``out`` (in order); metrics when labels are present."""
    fmt = output_format(out)
    source = pq.ParquetFile(str(encoded))
    total = source.metadata.num_rows
    cols = ["row", *(["label"] if has_label else []), *[f"f{i}" for i in range(n_fields)]]
    fields = [pa.field("row", pa.int64()), pa.field("score", pa.float32())]
    if has_label:
        fields.append(pa.field("label", pa.int8()))
    schema = pa.schema(fields)
    writer = _Writer(out, fmt, schema)
    labels: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    task = reporter.task("scoring", total=total, unit="row")
    done = 0
    try:
        for batch in source.iter_batches(batch_size=batch_size, columns=cols):
            ids = np.stack([batch.column(f"f{i}").to_numpy(zero_copy_only=False) for i in range(n_fields)], axis=1).astype(np.int64)
            logit, prob = scorer(ids)
            arrays = [batch.column("row").cast(pa.int64()), pa.array(np.asarray(prob, dtype=np.float32).reshape(-1))]
            if has_label:
                label = batch.column("label").cast(pa.int8())
                arrays.append(label)
                labels.append(label.to_numpy(zero_copy_only=False).astype(np.int8))
                logits.append(np.asarray(logit, dtype=np.float32).reshape(-1))
            writer.write(pa.Table.from_arrays(arrays, schema=schema))
            done += batch.num_rows
            task.advance(batch.num_rows)
    finally:
        writer.close()
        task.close()
    metrics: dict[str, Any] = {"rows": done}
    if has_label and done:
        y = torch.from_numpy(np.concatenate(labels).astype(np.float32))
        z = torch.from_numpy(np.concatenate(logits))
        metrics.update(auc=auc(y, z), logloss=logloss(y, z), positives=int(y.sum()))
    return ScoreResult(done, metrics)
