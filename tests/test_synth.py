"""The synthetic generator: raw format, determinism, label ratio, and the planted structure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from optembed.data.synth import generate
from optembed.errors import ConfigError


def _read(path: Path, fmt: str) -> pa.Table:
    if fmt == "criteo":
        names = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
        read = pacsv.ReadOptions(column_names=names)
        parse = pacsv.ParseOptions(delimiter="\t")
    else:
        read, parse = pacsv.ReadOptions(), pacsv.ParseOptions(delimiter=",")
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in read.column_names or []})
    return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_criteo_layout_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "c.txt"
    truth = generate(out, 30_000, fmt="criteo", seed=3)
    lines = out.read_text().splitlines()
    assert len(lines) == 30_000
    assert all(line.count("\t") == 39 for line in lines[:2000])
    table = _read(out, "criteo")
    labels = np.asarray(table["label"].to_pylist(), dtype=int)
    assert set(np.unique(labels)) == {0, 1}
    assert abs(labels.mean() - 0.23) < 0.02
    assert truth.positive_ratio == pytest.approx(labels.mean())
    # Integer columns are integers; categorical columns are 8-hex ids; some of them missing.
    ints = [v for v in table["I2"].to_pylist() if v]
    assert all(v.lstrip("-").isdigit() for v in ints)
    cats = [v for v in table["C3"].to_pylist() if v]
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in cats[:1000])
    assert table["I1"].null_count + sum(1 for v in table["I1"].to_pylist() if v == "") > 0
    saved = json.loads(Path(str(out) + ".truth.json").read_text())
    assert saved["noise_fields"] == truth.noise_fields
    assert len(truth.fields) == 39 and 5 <= len(truth.noise_fields) <= 20
    assert all(truth.signal_rank[f] == 0 for f in truth.noise_fields)
    assert len({truth.signal_rank[f] for f in truth.fields if f not in truth.noise_fields}) >= 3


def test_avazu_layout(tmp_path: Path) -> None:
    out = tmp_path / "a.csv"
    truth = generate(out, 10_000, fmt="avazu", seed=1)
    table = _read(out, "avazu")
    assert table.num_rows == 10_000 and table.num_columns == 24
    assert table.column_names[:3] == ["id", "click", "hour"]
    hours = [str(h) for h in table["hour"].to_pylist()]
    assert all(len(h) == 8 and h.startswith("1410") for h in hours[:100])
    assert len(set(table["id"].to_pylist())) == 10_000
    assert abs(np.mean([int(v) for v in table["click"].to_pylist()]) - 0.17) < 0.03
    assert "hour" in truth.fields


def test_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, 5000, seed=7)
    generate(b, 5000, seed=7)
    generate(c, 5000, seed=8)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)
    # Rows that fit in one chunk come out the same whatever the chunk size.
    generate(b, 5000, seed=7, chunk_rows=5000)
    assert _sha(a) == _sha(b)


def test_zipf_popularity_and_planted_signal(tmp_path: Path) -> None:
    out = tmp_path / "c.txt"
    truth = generate(out, 60_000, fmt="criteo", seed=0)
    table = _read(out, "criteo")
    labels = np.asarray(table["label"].to_pylist(), dtype=float)

    # Popularity is heavy-tailed: in a big field the top 1% of values hold far more than 1% of rows.
    values = [v for v in table["C3"].to_pylist() if v]
    _, counts = np.unique(values, return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[: max(1, len(counts) // 100)].sum() / counts.sum() > 0.1

    def spread(field: str) -> float:
        """Row-weighted variance of the per-value click rate over values seen at least 50 times."""
        col = np.asarray([v or "" for v in table[field].to_pylist()])
        uniq, inverse, counts = np.unique(col, return_inverse=True, return_counts=True)
        rates = np.bincount(inverse, weights=labels) / counts
        keep = counts[inverse] >= 50
        return float(np.var(rates[inverse][keep])) if keep.any() else 0.0

    informative = [f for f in truth.fields if truth.signal_rank[f] >= 4]
    noise = truth.noise_fields
    assert np.median([spread(f) for f in informative]) > 3 * np.median([spread(f) for f in noise])


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate(tmp_path / "x", 10, fmt="kdd12")
    with pytest.raises(ConfigError):
        generate(tmp_path / "x", 0)
