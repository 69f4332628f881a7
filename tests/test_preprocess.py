"""preprocess: transform, vocabulary/OOV/missing semantics, splits, real samples."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import shared_file
from optembed.data.preprocess import MISSING_ID, OOV_ID, PreprocessConfig, preprocess
from optembed.errors import ConfigError, DataError


def ref_token(raw: str) -> str | None:
    """Independent reference of Criteo's integer transform."""
    if raw == "":
        return None
    v = float(raw)
    if v > 2:
        return str(int(math.floor(math.log(v) ** 2)))
    return str(int(v))


def write_criteo(path: Path, rows: list[tuple[int, list[str], list[str]]]) -> Path:
    lines = ["\t".join([str(label), *ints, *cats]) for label, ints, cats in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_rows(n: int, seed: int = 0) -> list[tuple[int, list[str], list[str]]]:
    rng = random.Random(seed)
    ints_pool = ["", "0", "1", "2", "3", "4", "5", "10", "100", "-1", "-3", "7389", "1000000"]
    rows = []
    for i in range(n):
        ints = [rng.choice(ints_pool) for _ in range(13)]
        cats = [rng.choice(["", "aa", "bb", "cc", "dd", f"u{i % 7}"]) for _ in range(25)]
        cats.append(f"row{i:05d}")  # C26: a unique id per row, to match encoded rows back
        rows.append((i % 3 == 0 and 1 or 0, ints, cats))
    return rows


def read_split(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / f"{name}.parquet").to_pylist()


def vocab(out: Path, schema: dict, field: str) -> dict[int, str | None]:
    meta = next(f for f in schema["fields"] if f["name"] == field)
    table = pq.read_table(out / meta["vocab"]).to_pylist()
    return {r["id"]: r["value"] for r in table}


def test_transform_reference_values() -> None:
    assert [ref_token(x) for x in ["0", "1", "2", "3", "10", "100", "-1"]] == ["0", "1", "2", "1", "5", "21", "-1"]


def test_roundtrip_and_transform_against_reference(tmp_path: Path) -> None:
    rows = tiny_rows(60)
    src = write_criteo(tmp_path / "tiny.txt", rows)
    out = tmp_path / "out"
    res = preprocess(src, PreprocessConfig(min_count=1, count_on="all", seed=3), out)
    schema = json.loads((out / "schema.json").read_text())
    assert res.schema == schema
    assert schema["n_fields"] == 39 and [f["name"] for f in schema["fields"]][:2] == ["I1", "I2"]
    vocabs = {f["name"]: vocab(out, schema, f["name"]) for f in schema["fields"]}
    by_key = {cats[-1]: (label, ints, cats) for label, ints, cats in rows}
    seen = 0
    for split in ("train", "val", "test"):
        for enc in read_split(out, split):
            key = vocabs["C26"][enc["C26"]]
            label, ints, cats = by_key[key]
            assert enc["label"] == label
            for j, raw in enumerate(ints):
                decoded = vocabs[f"I{j + 1}"][enc[f"I{j + 1}"]]
                assert decoded == ref_token(raw), (key, j, raw)
                assert (enc[f"I{j + 1}"] == MISSING_ID) == (raw == "")
            for j, raw in enumerate(cats[:-1]):
                assert vocabs[f"C{j + 1}"][enc[f"C{j + 1}"]] == (raw or None)
            seen += 1
    assert seen == 60


def test_vocab_ids_counts_and_oov(tmp_path: Path) -> None:
    rows = tiny_rows(50, seed=1)
    src = write_criteo(tmp_path / "tiny.txt", rows)
    out = tmp_path / "out"
    preprocess(src, PreprocessConfig(min_count=3, count_on="all"), out)
    schema = json.loads((out / "schema.json").read_text())
    for j in (1, 5):
        name = f"C{j}"
        counts = Counter(cats[j - 1] for _, _, cats in rows if cats[j - 1] != "")
        kept = sorted((v for v, c in counts.items() if c >= 3), key=lambda v: (-counts[v], v))
        table = pq.read_table(out / f"vocab/{name}.parquet").to_pylist()
        assert table[0] == {"value": None, "id": OOV_ID, "count": sum(c for c in counts.values() if c < 3), "special": "oov"}
        assert table[1]["id"] == MISSING_ID and table[1]["count"] == sum(1 for _, _, c in rows if c[j - 1] == "")
        assert [r["value"] for r in table[2:]] == kept
        assert [r["id"] for r in table[2:]] == list(range(2, 2 + len(kept)))
        assert [r["count"] for r in table[2:]] == [counts[v] for v in kept]
        meta = next(f for f in schema["fields"] if f["name"] == name)
        assert meta["cardinality"] == 2 + len(kept)
    # the per-row unique field has no value reaching min_count: all OOV, yet 2 ids reserved
    c26 = next(f for f in schema["fields"] if f["name"] == "C26")
    assert c26["cardinality"] == 2
    assert all(r["C26"] == OOV_ID for s in ("train", "val", "test") for r in read_split(out, s))


def test_split_sizes_disjoint_and_seeded(tmp_path: Path) -> None:
    rows = tiny_rows(200, seed=2)
    src = write_criteo(tmp_path / "tiny.txt", rows)

    def keys(seed: int) -> dict[str, list[str]]:
        out = tmp_path / f"out{seed}"
        preprocess(src, PreprocessConfig(min_count=1, count_on="all", seed=seed), out)
        schema = json.loads((out / "schema.json").read_text())
        v = vocab(out, schema, "C26")
        return {s: [v[r["C26"]] for r in read_split(out, s)] for s in ("train", "val", "test")}

    a, a2, b = keys(7), keys(7), keys(8)
    assert [len(a[s]) for s in ("train", "val", "test")] == [160, 20, 20]
    assert set(a["train"]).isdisjoint(a["val"]) and set(a["val"]).isdisjoint(a["test"])
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == {c[-1] for _, _, c in rows}
    assert a == a2
    assert set(a["val"]) != set(b["val"])
    assert all(a[s] == sorted(a[s]) for s in a)  # each split keeps the file's row order
    # the split is a random draw, not a block of the file: the test rows are spread over it
    positions = sorted(int(k[3:]) for k in a["test"])
    assert positions[0] < 50 and positions[-1] >= 150


@pytest.mark.parametrize("n, split", [(997, (0.7, 0.2, 0.1)), (1003, (0.8, 0.1, 0.1)), (50, (0.34, 0.33, 0.33))])
def test_split_sizes_are_exact(tmp_path: Path, n: int, split: tuple[float, float, float]) -> None:
    src = write_criteo(tmp_path / "t.txt", tiny_rows(n, seed=n))
    res = preprocess(src, PreprocessConfig(min_count=1, split=split, seed=3), tmp_path / "out")
    n_train, n_val = round(n * split[0]), round(n * split[1])
    assert [res.metrics[f"rows_{s}"] for s in ("train", "val", "test")] == [n_train, n_val, n - n_train - n_val]


@pytest.mark.slow
def test_large_split_keeps_file_order_and_is_reproducible(tmp_path: Path) -> None:
    """Enough rows for multi-threaded hash joins: every split still comes out in file order,
    and two runs write identical files."""
    rows = tiny_rows(30_000, seed=5)
    src = write_criteo(tmp_path / "big.txt", rows)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        preprocess(src, PreprocessConfig(min_count=1, count_on="all", seed=1), out)
    schema = json.loads((outs[0] / "schema.json").read_text())
    v = vocab(outs[0], schema, "C26")
    seen = []
    for s in ("train", "val", "test"):
        keys = [v[i] for i in pq.read_table(outs[0] / f"{s}.parquet", columns=["C26"]).column(0).to_pylist()]
        assert keys == sorted(keys), s
        seen += keys
        assert pq.read_table(outs[0] / f"{s}.parquet").equals(pq.read_table(outs[1] / f"{s}.parquet"))
    assert sorted(seen) == [c[-1] for _, _, c in rows]


@pytest.mark.parametrize(("arrow_max", "by_text"), [(0, False), (40, False), (10**9, True)], ids=["all-joined", "mixed", "by-text"])
def test_joined_and_arrow_encodings_write_the_same_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow_max: int, by_text: bool
) -> None:
    """Fields with large vocabularies are encoded by DuckDB joins, the others in Arrow (text fields
    by the hash of their tokens, or by text where hashes collide): every way, the splits hold the
    same ids, rows and row groups (-0 and 0 are one value, as DuckDB counts them)."""
    import optembed.data.preprocess as prep

    rows = tiny_rows(5_000, seed=7)
    for k in range(0, 5_000, 3):
        rows[k][1][0] = "-0" if k % 2 else "0"
    src = write_criteo(tmp_path / "mixed.txt", rows)
    monkeypatch.setattr(prep, "SPLIT_ROW_GROUP_ROWS", 1_000)
    cfg = PreprocessConfig(min_count=1, seed=3)
    preprocess(src, cfg, tmp_path / "arrow")
    monkeypatch.setattr(prep, "ARROW_VOCAB_MAX", arrow_max)
    if by_text:
        plan = prep._encoding_plan
        monkeypatch.setattr(prep, "_encoding_plan", lambda con, spec, *a: plan(con, spec, *a[:-1], [False] * len(spec.fields)))
    preprocess(src, cfg, tmp_path / "joined")
    schema = json.loads((tmp_path / "arrow" / "schema.json").read_text())
    assert schema == json.loads((tmp_path / "joined" / "schema.json").read_text())
    zero = [k for k, v in vocab(tmp_path / "arrow", schema, "I1").items() if v == "0"]
    assert len(zero) == 1
    for s in ("train", "val", "test"):
        a, b = pq.ParquetFile(tmp_path / "arrow" / f"{s}.parquet"), pq.ParquetFile(tmp_path / "joined" / f"{s}.parquet")
        assert a.read().equals(b.read()), s
        groups = [a.metadata.row_group(g).num_rows for g in range(a.metadata.num_row_groups)]
        assert groups == [b.metadata.row_group(g).num_rows for g in range(b.metadata.num_row_groups)]
        assert all(n == 1_000 for n in groups[:-1]) and 0 < groups[-1] <= 1_000
    train = pq.read_table(tmp_path / "arrow" / "train.parquet", columns=["I1"]).column(0).to_pylist()
    assert zero[0] in train


def test_count_on_train_sends_unseen_values_to_oov(tmp_path: Path) -> None:
    rows = tiny_rows(100, seed=4)
    src = write_criteo(tmp_path / "tiny.txt", rows)
    out = tmp_path / "out"
    preprocess(src, PreprocessConfig(min_count=1, count_on="train"), out)
    # C26 is unique per row: counted on train only, every val/test value is OOV
    for split in ("val", "test"):
        assert all(r["C26"] == OOV_ID for r in read_split(out, split))
    assert all(r["C26"] >= 2 for r in read_split(out, "train"))
    table = pq.read_table(out / "vocab/C26.parquet").to_pylist()
    assert sum(r["count"] for r in table) == 80


def test_criteo_10k_counts_match_encoded_train(tmp_path: Path) -> None:
    src = shared_file("criteo_10k.txt")
    out = tmp_path / "out"
    res = preprocess(src, PreprocessConfig(), out)
    schema = res.schema
    assert schema["rows"] == {"train": 7999, "val": 1000, "test": 1000}
    assert schema["n_fields"] == 39
    assert abs(schema["positive_ratio"]["all"] - 0.218) < 0.002
    train = pq.read_table(out / "train.parquet")
    assert train.schema.field("label").type == "int8"
    assert train.schema.field("C1").type == "int32"
    for meta in schema["fields"]:
        ids = Counter(train.column(meta["name"]).to_pylist())
        table = pq.read_table(out / meta["vocab"]).to_pylist()
        assert max(ids) < meta["cardinality"]
        for row in table:
            assert ids.get(row["id"], 0) == row["count"], (meta["name"], row)
            if row["special"] is None:
                assert row["count"] >= 2


def test_generic_csv_and_avazu_samples(tmp_path: Path) -> None:
    criteo_csv = shared_file("criteo_sample_200.csv")
    ints = ",".join(f"I{i}" for i in range(1, 14))
    res = preprocess(criteo_csv, PreprocessConfig(fmt="csv", numeric=ints.split(",")), tmp_path / "c")
    assert res.schema["n_fields"] == 39 and sum(res.schema["rows"].values()) == 200
    assert [f["kind"] for f in res.schema["fields"]].count("numeric") == 13
    sub = preprocess(criteo_csv, PreprocessConfig(fmt="csv", label="label", fields=["C1", "C2"]), tmp_path / "s")
    assert [f["name"] for f in sub.schema["fields"]] == ["C1", "C2"]
    assert pq.read_table(tmp_path / "s" / "train.parquet").column_names == ["label", "C1", "C2"]

    avazu = shared_file("avazu_sample_100.csv")
    res = preprocess(avazu, PreprocessConfig(fmt="avazu", min_count=1, count_on="all"), tmp_path / "a")
    names = [f["name"] for f in res.schema["fields"]]
    assert len(names) == 24 and "id" not in names and "click" not in names and "hour" not in names
    assert names[:3] == ["hour_of_day", "weekday", "is_weekend"]
    assert abs(res.schema["positive_ratio"]["all"] - 0.20) < 1e-9
    hours = pq.read_table(tmp_path / "a" / "vocab/hour_of_day.parquet").to_pylist()
    assert all(0 <= int(r["value"]) <= 23 for r in hours if r["value"] is not None)


def test_kdd12_label_is_click_positive(tmp_path: Path) -> None:
    lines = [f"{c}\t{i}\tu{k % 3}\ta{k % 5}\tv1\t1\t2\tq{k % 4}\tk1\tt1\td1\tuser{k % 2}" for k, (c, i) in
             enumerate([(0, 1), (2, 3), (1, 1), (0, 2)] * 10)]
    src = tmp_path / "training.txt"
    src.write_text("\n".join(lines) + "\n")
    res = preprocess(src, PreprocessConfig(fmt="kdd12", min_count=1), tmp_path / "k")
    assert res.schema["n_fields"] == 11 and abs(res.schema["positive_ratio"]["all"] - 0.5) < 1e-9
    res2 = preprocess(src, PreprocessConfig(fmt="kdd12", keep_impression=False), tmp_path / "k2")
    assert res2.schema["n_fields"] == 10 and res2.schema["min_count"] == 10


@pytest.mark.parametrize(
    "cfg, match",
    [
        (PreprocessConfig(fmt="nope"), "unknown format"),
        (PreprocessConfig(split=(0.5, 0.3, 0.3)), "sum to 1"),
        (PreprocessConfig(split=(1.0, 0.0, 0.0)), r"--split must be in \(0, 1\]"),
        (PreprocessConfig(count_on="val"), "count-on"),
    ],
)
def test_config_errors(tmp_path: Path, cfg: PreprocessConfig, match: str) -> None:
    src = write_criteo(tmp_path / "tiny.txt", tiny_rows(10))
    with pytest.raises(ConfigError, match=match):
        preprocess(src, cfg, tmp_path / "out")


def test_too_few_rows_for_split(tmp_path: Path) -> None:
    src = write_criteo(tmp_path / "tiny.txt", tiny_rows(3))
    with pytest.raises(DataError, match="too few"):
        preprocess(src, PreprocessConfig(), tmp_path / "out")
