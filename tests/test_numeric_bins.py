"""Quantile bins of numeric csv/Parquet fields: boundaries against a brute-force reference, fitted on
the training rows only, few ids for many distinct floats, and predict's ids equal to preprocess's."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optembed.data import buckets
from optembed.data.preprocess import MISSING_ID, PreprocessConfig, preprocess
from optembed.errors import ArtifactError, ConfigError, DataError
from optembed.export.encode import FieldVocab, encode_file


def ref_boundaries(values: np.ndarray, bins: int) -> np.ndarray:
    """Brute force: sort the finite values; boundary k is the ceil(k n / B)-th smallest (1-based),
    ties kept once."""
    finite = np.sort(values[np.isfinite(values)])
    n = finite.size
    if n == 0:
        return np.array([])
    ranks = [(k * n + bins - 1) // bins for k in range(1, bins)]  # exact integer ceil
    return np.unique(finite[[r - 1 for r in ranks]])


def ref_bucket(values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Brute force: how many boundaries are at or below each value (one comparison per pair)."""
    return (boundaries[None, :] <= values[:, None]).sum(axis=1)


def duck(values: np.ndarray) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (v DOUBLE, s INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(None if np.isnan(v) else float(v), i % 3) for i, v in enumerate(values)])
    return con


CASES = {
    "uniform [0, 2)": (np.random.default_rng(0).uniform(0, 2, 1000), 100),
    "heavy ties": (np.random.default_rng(1).integers(0, 5, 997).astype(float), 10),
    "wide range with infinities": (np.concatenate([np.random.default_rng(2).normal(0, 1e6, 500), [np.inf, -np.inf, np.inf]]), 7),
    "fewer values than bins": (np.array([3.0, -1.0, 2.5]), 100),
    "one value": (np.array([0.5]), 4),
    "exact quantile points": (np.arange(100, dtype=float), 4),  # k n / B integral
    "tiny and huge": (np.array([1e-300, -1e-300, 5e-324, 1e300, -0.0, 0.0, 1.0, 1.0 + 2**-52] * 9), 6),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_boundaries_and_buckets_equal_a_brute_force_reference(name: str) -> None:
    values, bins = CASES[name]
    con = duck(values)
    got, n = buckets.fit_boundaries(con, "t", "v", "true", bins)
    want = ref_boundaries(values, bins)
    assert n == int(np.isfinite(values).sum())
    assert np.array_equal(np.array(got), want) and len(got) <= bins - 1
    assert all(b < c for b, c in zip(got, got[1:]))
    # the SQL binary search over every value, NULL included, against the brute force and bisect
    probe = np.concatenate([values, want, np.nextafter(want, np.inf), np.nextafter(want, -np.inf), [np.inf, -np.inf]])
    rows = con.execute(
        f"SELECT {buckets.bucket_sql('x', got)} FROM (SELECT unnest(?::DOUBLE[]) AS x)", [[float(p) for p in probe]]
    ).fetchall()
    assert [r[0] for r in rows] == ref_bucket(probe, want).tolist() == np.searchsorted(want, probe, side="right").tolist()
    assert con.execute(f"SELECT {buckets.bucket_sql('NULL::DOUBLE', got)}").fetchone()[0] is None


def test_boundaries_are_fitted_on_the_rows_asked_for_only() -> None:
    values = np.random.default_rng(3).uniform(-5, 5, 600)
    con = duck(values)
    got, n = buckets.fit_boundaries(con, "t", "v", "s = 0", 20)
    assert n == 200 and np.array_equal(np.array(got), ref_boundaries(values[0::3], 20))


def test_double_literals_read_back_as_the_same_doubles() -> None:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2**63 - 1, 2000, dtype=np.int64)
    values = [v for v in np.frombuffer(bits.tobytes(), dtype=np.float64) if np.isfinite(v)] + [0.1, 1e-5, -0.0, 5e-324, 1.7976931348623157e308]
    con = duckdb.connect()
    sql = "SELECT [" + ", ".join(buckets.double_literal(v) for v in values) + "]"
    back = con.execute(sql).fetchone()[0]
    assert [struct.pack("<d", v) for v in back] == [struct.pack("<d", float(v)) for v in values]
    with pytest.raises(ValueError):
        buckets.double_literal(float("nan"))


def test_recorded_boundaries_are_checked_before_they_reach_sql(tmp_path: Path) -> None:
    ok = buckets.record(4, [0.5, 1.0, 2.0], 10)
    assert buckets.boundaries_of(ok) == [0.5, 1.0, 2.0]
    for bad in (
        {**ok, "boundaries": ["1); DROP TABLE parsed; --"]},
        {**ok, "boundaries": [1.0, 1.0]},
        {**ok, "boundaries": [2.0, 1.0]},
        {**ok, "boundaries": [True]},
        {**ok, "boundaries": "0.5"},
        {**ok, "rule": "log"},
        [0.5],
    ):
        with pytest.raises(ArtifactError, match="bucketing of field price"):
            FieldVocab("price", tmp_path / "vocab" / "price.parquet", bucketing=bad).boundaries()  # type: ignore[arg-type]


# -- preprocess and predict on files -------------------------------------------------------------


def write_numeric_csv(path: Path, price: list[str], seed: int = 0) -> Path:
    """label, key (a unique id per row, to match encoded rows back), price (raw text), cat."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=len(price)) < 0.3).astype(int)
    lines = [f"{y},k{i:06d},{p},c{i % 5}" for i, (y, p) in enumerate(zip(labels, price))]
    path.write_text("y,key,price,cat\n" + "\n".join(lines) + "\n")
    return path


def config(**kw: object) -> PreprocessConfig:
    # counted on all rows with min-count 1: every key is kept, so each encoded row names its key
    return PreprocessConfig(fmt="csv", label="y", numeric=["price"], min_count=1, count_on="all", **kw)  # type: ignore[arg-type]


def ids_by_key(out: Path, schema: dict) -> dict[str, dict[str, tuple[int, int]]]:
    """Per split: key text -> (price id, label), read back from the encoded splits."""
    key_meta = next(f for f in schema["fields"] if f["name"] == "key")
    key_text = {r["id"]: r["value"] for r in pq.read_table(out / key_meta["vocab"]).to_pylist()}
    res = {}
    for split in ("train", "val", "test"):
        t = pq.read_table(out / f"{split}.parquet").to_pydict()
        res[split] = {key_text[k]: (p, y) for k, p, y in zip(t["key"], t["price"], t["label"])}
    return res


def price_vocab(out: Path, schema: dict) -> tuple[dict, dict[str, int]]:
    meta = next(f for f in schema["fields"] if f["name"] == "price")
    table = pq.read_table(out / meta["vocab"]).to_pylist()
    return meta, {r["value"]: r["id"] for r in table if r["value"] is not None}


@pytest.mark.parametrize("low, high", [(0.0, 2.0), (-1e6, 1e6)])
def test_many_distinct_floats_give_few_ids_bucketed_on_the_training_rows(tmp_path: Path, low: float, high: float) -> None:
    raw = np.random.default_rng(5).uniform(low, high, 6000)
    assert np.unique(raw).size == 6000
    src = write_numeric_csv(tmp_path / "f.csv", [repr(float(v)) for v in raw])
    res = preprocess(src, config(), tmp_path / "out")
    meta, vocab = price_vocab(tmp_path / "out", res.schema)
    assert meta["cardinality"] <= 200 and meta["kind"] == "numeric"
    rows = ids_by_key(tmp_path / "out", res.schema)
    value = {f"k{i:06d}": v for i, v in enumerate(raw)}
    train = np.array([value[k] for k in rows["train"]])
    want = ref_boundaries(train, 100)  # the training rows only: no leakage from val/test
    bucketing = meta["bucketing"]
    assert bucketing["rule"] == "quantile" and bucketing["bins"] == 100 and bucketing["values"] == len(train) == 4800
    assert np.array_equal(np.array(bucketing["boundaries"]), want)
    assert not np.array_equal(want, ref_boundaries(raw, 100))  # fitted on all rows they would differ
    for split, by_key in rows.items():
        keys = list(by_key)
        expected = ref_bucket(np.array([value[k] for k in keys]), want)
        assert [by_key[k][0] for k in keys] == [vocab[str(b)] for b in expected], split
    # about 48 training rows per bin
    counts = np.bincount(ref_bucket(train, want))
    assert counts.min() >= 47 and counts.max() <= 49
    assert json.loads((tmp_path / "out" / "schema.json").read_text())["fields"][1]["bucketing"] == bucketing


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_empty_nan_and_infinite_values(tmp_path: Path, kind: str) -> None:
    base = [repr(float(v)) for v in np.random.default_rng(6).uniform(0, 1, 400)]
    special = {3: "", 10: "nan", 17: "inf", 24: "-inf", 31: "NaN", 38: "1e999"}
    price = [special.get(i, v) for i, v in enumerate(base)]
    src = write_numeric_csv(tmp_path / "f.csv", price)
    if kind == "parquet":
        text = [line.split(",") for line in src.read_text().splitlines()[1:]]
        values = [None if p == "" else float(p) for _, _, p, _ in text]
        pq.write_table(pa.table({
            "y": [int(t[0]) for t in text], "key": [t[1] for t in text], "price": pa.array(values, pa.float64()),
            "cat": [t[3] for t in text],
        }), tmp_path / "f.parquet")
        src = tmp_path / "f.parquet"
    cfg = config(numeric_bins=8)
    cfg.fmt = kind
    res = preprocess(src, cfg, tmp_path / "out")
    meta, vocab = price_vocab(tmp_path / "out", res.schema)
    top = len(meta["bucketing"]["boundaries"])
    assert top == 7 and meta["bucketing"]["values"] <= 400 - 4
    rows = {k: v for split in ids_by_key(tmp_path / "out", res.schema).values() for k, v in split.items()}
    assert [rows[f"k{i:06d}"][0] for i in (3, 10, 31)] == [MISSING_ID] * 3
    assert rows["k000017"][0] == rows["k000038"][0] == vocab[str(top)]
    assert rows["k000024"][0] == vocab["0"]
    assert meta["missing_rows"] == 3  # counted on all rows (count_on all)


def test_a_non_number_is_a_bad_row(tmp_path: Path) -> None:
    price = [str(i / 7) for i in range(100)]
    price[42] = "abc"
    src = write_numeric_csv(tmp_path / "f.csv", price)
    with pytest.raises(DataError, match=r"non-numeric value in a numeric field .*price='abc'"):
        preprocess(src, config(), tmp_path / "out")
    res = preprocess(src, config(skip_bad_rows=True), tmp_path / "out2")
    assert sum(res.schema["rows"].values()) == 99


@pytest.mark.parametrize(
    "cfg, match",
    [
        (PreprocessConfig(fmt="csv", numeric=["price"], numeric_bins=1), r"--numeric-bins must be in \[2, 1000\]"),
        (PreprocessConfig(fmt="csv", numeric=["price"], numeric_bins=1001), r"--numeric-bins must be in"),
        (PreprocessConfig(fmt="csv", numeric=["price"], numeric_bins=2.5), "whole number"),  # type: ignore[arg-type]
        (PreprocessConfig(fmt="criteo", numeric_bins=50), "applies to the --numeric fields of csv and parquet"),
    ],
)
def test_bad_bin_counts_are_refused(cfg: PreprocessConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_predict_encodes_new_rows_with_the_recorded_boundaries(tmp_path: Path) -> None:
    """encode (predict's preprocessing) on the training file gives every row the id preprocess gave
    it; rows never seen get the bucket of the recorded boundaries, not refitted ones."""
    raw = np.random.default_rng(7).lognormal(0, 3, 3000)
    src = write_numeric_csv(tmp_path / "f.csv", [repr(float(v)) for v in raw])
    res = preprocess(src, config(numeric_bins=50), tmp_path / "out")
    schema = res.schema
    vocabs = [FieldVocab.from_record(f, tmp_path / "out" / f["vocab"]) for f in schema["fields"]]
    options = {"label": "y", "numeric": ["price"]}
    enc = encode_file(src, "csv", options, vocabs, tmp_path / "enc.parquet")
    got = pq.read_table(tmp_path / "enc.parquet").to_pydict()
    assert enc.rows == 3000 and got["row"] == list(range(3000))
    rows = {k: v for split in ids_by_key(tmp_path / "out", schema).values() for k, v in split.items()}
    assert got["f1"] == [rows[f"k{i:06d}"][0] for i in range(3000)]
    assert got["label"] == [rows[f"k{i:06d}"][1] for i in range(3000)]
    # new rows, unlabelled, of another range: bucketed by the recorded boundaries
    meta, vocab = price_vocab(tmp_path / "out", schema)
    bounds = np.array(meta["bucketing"]["boundaries"])
    new = np.concatenate([np.random.default_rng(8).uniform(-10, 1e4, 500), bounds[:5], [np.inf]])
    lines = [f"k{i:06d},{float(v)!r},c1" for i, v in enumerate(new)] + ["k999999,,c1"]
    (tmp_path / "new.csv").write_text("key,price,cat\n" + "\n".join(lines) + "\n")
    enc = encode_file(tmp_path / "new.csv", "csv", options, vocabs, tmp_path / "new.parquet")
    got = pq.read_table(tmp_path / "new.parquet").to_pydict()
    assert not enc.has_label
    assert got["f1"] == [vocab.get(str(b), 0) for b in ref_bucket(new, bounds)] + [MISSING_ID]


def test_criteo_numeric_columns_keep_the_log_square_rule(tmp_path: Path) -> None:
    lines = [f"{i % 2}\t" + "\t".join(["1.5", str(i), "0.25"] + ["1"] * 10) + "\t" + "\t".join(["a"] * 26) for i in range(60)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    res = preprocess(tmp_path / "c.txt", PreprocessConfig(min_count=1, count_on="all"), tmp_path / "out")
    assert not any("bucketing" in f for f in res.schema["fields"])
    values = {r["value"] for r in pq.read_table(tmp_path / "out" / "vocab" / "I1.parquet").to_pylist()}
    assert values == {None, "1.5"}  # a float <= 2 stays its own text under the Criteo rule
    values = {r["value"] for r in pq.read_table(tmp_path / "out" / "vocab" / "I2.parquet").to_pylist()} - {None}
    assert values == {str(int(np.floor(np.log(i) ** 2))) if i > 2 else str(i) for i in range(60)}


@pytest.mark.slow
def test_an_exported_bundle_scores_with_the_ids_preprocess_gave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """preprocess -> supernet -> retrain -> export -> predict on the raw file: the scores are the
    compact model's on preprocess's ids, and the bundle README's plain-Python encoder gives those
    ids too (floats bucketed by the recorded boundaries, NaN and empty missing, inf the top bin)."""
    import torch

    from optembed.models.checkpoint import load_model
    from optembed.training.config import TrainConfig
    from pipeline_fixtures import small_supernet
    from pipelines import export, predict, retrain
    from pipelines import preprocess as preprocess_stage
    from pipelines.store import Store

    rng = np.random.default_rng(9)
    raw = rng.normal(0, 1, 4000)
    price = [repr(float(v)) for v in raw]
    for i in range(0, 4000, 97):
        price[i] = ""
    price[5], price[6] = "nan", "inf"
    src = write_numeric_csv(tmp_path / "f.csv", price)
    labels = (rng.uniform(size=4000) < 1 / (1 + np.exp(-2 * np.nan_to_num(raw)))).astype(int)  # planted: y follows price
    text = src.read_text().splitlines()
    src.write_text("\n".join([text[0]] + [f"{y}{line[1:]}" for y, line in zip(labels, text[1:])]) + "\n")
    store = Store(tmp_path / "artifacts")
    pre = preprocess_stage.run(preprocess_stage.PreprocessStage(src, config(numeric_bins=20)), store)
    sn = small_supernet(store, "prune-only", epochs=1)
    r = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=TrainConfig(epochs=1, batch_size=512), device="cpu"), store)
    bundle = tmp_path / "bundle"
    export.run(export.ExportStage(source=r.fingerprint, out=bundle, formats=("pt2",)), store)
    meta = json.loads((bundle / "bundle.json").read_text())
    schema = json.loads(pre.output("schema").read_text())
    assert meta["preprocessing"]["fields"][1]["bucketing"] == schema["fields"][1]["bucketing"]
    readme = (bundle / "README.md").read_text()
    assert "quantile bins" in readme and "price: 19 boundaries" in readme

    out = tmp_path / "scores.parquet"
    res = predict.run(predict.PredictConfig(str(bundle), src, out, runtime="torch"), store)
    assert res.rows == 4000
    rows = {k: v for split in ids_by_key(Path(pre.path), schema).values() for k, v in split.items()}
    cat = {r["value"]: r["id"] for r in pq.read_table(Path(pre.path) / schema["fields"][2]["vocab"]).to_pylist()}
    key = {r["value"]: r["id"] for r in pq.read_table(Path(pre.path) / schema["fields"][0]["vocab"]).to_pylist()}
    ids = torch.tensor([[key[f"k{i:06d}"], rows[f"k{i:06d}"][0], cat[f"c{i % 5}"]] for i in range(4000)])
    compact, _ = load_model(r.output("compact"))
    with torch.no_grad():
        want = torch.sigmoid(compact(ids)).numpy()
    np.testing.assert_allclose(pq.read_table(out).column("score").to_numpy(), want, atol=1e-6, rtol=0)

    # the README's own encoder, run as written in the bundle folder, on the raw values
    code = readme.split("```python\n", 1)[1].split("# onnxruntime", 1)[0]
    monkeypatch.chdir(bundle)
    scope: dict = {"raw_rows": [[f"k{i:06d}", p, f"c{i % 5}"] for i, p in enumerate(price)]}
    exec(code, scope)  # noqa: S102 - the documentation's snippet under test
    assert scope["ids"].tolist() == ids.tolist()


def test_cli_numeric_bins_sets_the_bin_count(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optembed_cli.main import app

    raw = np.random.default_rng(7).uniform(0.0, 2.0, 3000)
    src = write_numeric_csv(tmp_path / "f.csv", [repr(float(v)) for v in raw])
    store = tmp_path / "store"
    args = ["preprocess", str(src), "--format", "csv", "--label", "y", "--numeric", "price", "--numeric-bins", "10", "--artifacts", str(store), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    schema = json.loads(next(store.glob("preprocess/*/schema.json")).read_text())
    price = next(f for f in schema["fields"] if f["name"] == "price")
    assert price["bucketing"]["bins"] == 10 and len(price["bucketing"]["boundaries"]) <= 9
    bad = CliRunner().invoke(app, [*args[:9], "1", "--artifacts", str(store)])
    assert bad.exit_code == 2 and "--numeric-bins" in bad.output
