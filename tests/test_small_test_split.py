"""A test split with fewer than MIN_CLASS_ROWS rows of a class: the trained stages' result lines
say so (as evaluate does), with the split's own counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from optembed.training.diagnostics import MIN_CLASS_ROWS, small_test_split
from pipeline_fixtures import synthetic_preprocess
from pipelines.diagnostics import artifact_warnings
from pipelines.store import Manifest


def test_small_test_split_by_hand() -> None:
    assert small_test_split(MIN_CLASS_ROWS, MIN_CLASS_ROWS) is None
    assert small_test_split(10_000, 50_000) is None
    line = small_test_split(MIN_CLASS_ROWS - 1, 50_000)
    assert line is not None and f"{MIN_CLASS_ROWS - 1} positive and 50,000 negative" in line
    assert small_test_split(3, 7) is not None


def test_trained_stage_warns_of_a_small_test_split(tmp_path: Path) -> None:
    store, pre, _ = synthetic_preprocess(tmp_path, rows=2000)
    labels = pq.read_table(pre.output("test"), columns=["label"]).column("label").to_pylist()
    pos = sum(1 for v in labels if v > 0.5)
    neg = len(labels) - pos
    assert min(pos, neg) < MIN_CLASS_ROWS  # 200 test rows: the planted small split
    for stage in ("supernet", "retrain", "baseline", "compress"):
        m = Manifest(stage, 1, "d" * 64, {}, upstream={"preprocess": pre.fingerprint})
        lines = [w for w in artifact_warnings(store, m) if "test split" in w]
        assert len(lines) == 1 and f"only {pos:,} positive and {neg:,} negative rows" in lines[0], (stage, lines)
    search = Manifest("search", 1, "e" * 64, {}, upstream={"preprocess": pre.fingerprint})
    assert not [w for w in artifact_warnings(store, search) if "test split" in w]  # no test AUC there
