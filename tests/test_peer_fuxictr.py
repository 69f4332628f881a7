"""benchmarks/peer_fuxictr.py: the peer DeepFM on FuxiCTR's layers, on a tiny planted artifact.

The model tests need the ``bench`` extra (fuxictr==2.3.7) and skip without it; the input checks
and pure helpers run everywhere."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest
import torch
from bench_modules import load_benchmark

pf = load_benchmark("peer_fuxictr.py", "peer_fuxictr")
CARDS = {"a": 12, "b": 7, "c": 5}


def planted_artifact(folder: Path, rows: dict[str, int] | None = None, seed: int = 0) -> Path:
    """An optembed-shaped preprocess folder: label ~ Bernoulli(0.9) when field a's id is even, else 0.1."""
    rows = rows or {"train": 2400, "val": 400, "test": 400}
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    positives = {}
    for split, n in rows.items():
        cols = {name: rng.integers(0, card, n).astype(np.int32) for name, card in CARDS.items()}
        p = np.where(cols["a"] % 2 == 0, 0.9, 0.1)
        label = (rng.random(n) < p).astype(np.int8)
        positives[split] = float(label.mean())
        pq.write_table(pa.table({"label": label, **cols}), folder / f"{split}.parquet")
    schema = {
        "fields": [{"name": k, "cardinality": v} for k, v in CARDS.items()],
        "rows": rows,
        "positive_ratio": positives,
        "min_count": 1,
        "split": [0.8, 0.1, 0.1],
        "seed": 2022,
    }
    (folder / "schema.json").write_text(json.dumps(schema))
    return folder


def test_table_bytes_and_summary() -> None:
    assert pf.table_bytes([5, 7], 3) == (5 + 7) * (3 + 1) * 4
    s = pf.summarise([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1) and (s["min"], s["max"], s["n"]) == (0.1, 0.3, 3)
    one = pf.summarise([math.nan, 1.0])
    assert one["n"] == 1 and one["mean"] == 1.0 and math.isnan(one["std"])
    assert pf.finite_or_null({"x": [math.nan, 1.5], "y": math.inf}) == {"x": [None, 1.5], "y": None}


def test_constant_logloss_is_the_base_rate_entropy() -> None:
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # predicting 0.25 for every row: -(1/4) ln 0.25 - (3/4) ln 0.75
    assert pf.constant_logloss(0.25, labels) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


def test_bad_inputs_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "peer.json"
    assert pf.main(["--preprocess", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing/schema.json: no schema.json" in err

    art = planted_artifact(tmp_path / "art")
    table = pq.read_table(art / "val.parquet")
    bad_b = pa.array(np.full(table.num_rows, CARDS["b"], dtype=np.int32))
    pq.write_table(table.set_column(table.column_names.index("b"), "b", bad_b), art / "val.parquet")
    assert pf.main(["--preprocess", str(art), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "val.parquet: column b has ids outside 0..6" in err

    good = planted_artifact(tmp_path / "good")
    for option, value in (("--net-dropout", "1.5"), ("--seeds", "0,x"), ("--hidden-units", "16,0"), ("--device", "tpu")):
        assert pf.main(["--preprocess", str(good), "--out", str(out), option, value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {option}")
    assert not out.exists()


def _model(tmp_path: Path, **recipe: object):
    pytest.importorskip("fuxictr")
    art = pf.read_artifact(planted_artifact(tmp_path / "art"))
    fmap = pf.feature_map(art)
    torch.manual_seed(0)
    model = pf.build_model(fmap, pf.Recipe(hidden_units=(8, 4), **recipe), "cpu", str(tmp_path))
    return art, fmap, model


def _tables(model) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    emb = [model.embedding_layer.embedding_layer.embedding_layers[f].weight for f in CARDS]
    lr = [model.fm.lr_layer.embedding_layer.embedding_layer.embedding_layers[f].weight for f in CARDS]
    return emb, lr


def test_regulariser_is_l2_over_whole_tables(tmp_path: Path) -> None:
    _, _, model = _model(tmp_path, embedding_regularizer=0.05)
    emb, lr = _tables(model)
    with torch.no_grad():
        for w in [*emb, *lr]:
            w.normal_()
    assert [tuple(w.shape) for w in emb] == [(c, 10) for c in CARDS.values()]
    assert [tuple(w.shape) for w in lr] == [(c, 1) for c in CARDS.values()]
    expected = 0.05 / 2 * sum(float((w.detach().double() ** 2).sum()) for w in [*emb, *lr])
    reg = model.regularization_loss()
    assert float(reg) == pytest.approx(expected, rel=1e-5)
    reg.backward()  # d/dW (lambda/2)||W||^2 = lambda W, on every row whether a batch reads it or not
    for w in [*emb, *lr]:
        torch.testing.assert_close(w.grad, 0.05 * w.detach())
    with torch.no_grad():  # net regulariser 0: the MLP's weights are not in it
        for p in model.mlp.parameters():
            p.add_(1.0)
    assert float(model.regularization_loss()) == pytest.approx(expected, rel=1e-5)


def test_logit_is_bias_plus_lr_plus_pairwise_fm_plus_mlp(tmp_path: Path) -> None:
    art, _, model = _model(tmp_path)
    emb, lr = _tables(model)
    with torch.no_grad():
        for w in [*emb, *lr]:
            w.normal_()
        model.fm.lr_layer.bias.fill_(0.3)
    batch_table = pq.read_table(art.path / "test.parquet").slice(0, 16)
    batch = {k: torch.from_numpy(batch_table.column(k).to_numpy().astype(np.int64)) for k in [*CARDS, "label"]}
    model.eval()
    with torch.no_grad():
        got = model.forward(batch)["logit"].reshape(-1)
        names = list(CARDS)
        e = [emb[i][batch[f]] for i, f in enumerate(names)]
        want = 0.3 + sum(lr[i][batch[f], 0] for i, f in enumerate(names))
        for i, j in itertools.combinations(range(len(names)), 2):  # brute-force pairwise interactions
            want = want + (e[i] * e[j]).sum(dim=1)
        want = want + model.mlp(torch.cat(e, dim=1)).reshape(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    dropouts = [m for m in model.mlp.modules() if isinstance(m, torch.nn.Dropout)]
    norms = [m for m in model.mlp.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(dropouts) == 2 and all(m.p == 0.2 for m in dropouts) and len(norms) == 2


def test_planted_run_restores_best_epoch(tmp_path: Path) -> None:
    pytest.importorskip("fuxictr")
    art = planted_artifact(tmp_path / "art")
    out = tmp_path / "peer.json"
    args = ["--preprocess", str(art), "--out", str(out), "--seeds", "0,1", "--epochs", "8", "--batch-size", "256",
            "--hidden-units", "16", "--embedding-regularizer", "0.001", "--learning-rate", "0.01"]
    assert pf.main(args) == 0
    res = json.loads(out.read_text())
    assert res["table_bytes"] == (12 + 7 + 5) * 11 * 4 and res["recipe"]["hidden_units"] == [16]
    assert [r["seed"] for r in res["seeds"]] == [0, 1]
    for r in res["seeds"]:
        assert r["test_auc"] > 0.8  # the planted signal: Bayes AUC 0.9
        h = r["history"]
        assert len(h) == r["epochs_run"] <= 8 and 1 <= r["kept_epoch"] <= r["epochs_run"]
        best = max(range(len(h)), key=lambda i: (h[i]["val_auc"], -i))
        assert r["kept_epoch"] == h[best]["epoch"]
        assert r["val_auc"] == pytest.approx(h[best]["val_auc"], abs=1e-9)  # the best weights were restored
        best_so_far = -math.inf
        for prev, cur in zip(h, h[1:]):  # reduce-on-plateau: x0.1 after an epoch that did not beat the best by 1e-6
            improved = prev["val_auc"] >= best_so_far + 1e-6
            best_so_far = prev["val_auc"] if improved else best_so_far
            assert cur["lr"] == pytest.approx(prev["lr"] if improved else max(prev["lr"] * 0.1, 1e-6))
        if r["epochs_run"] < 8:  # stopped early: the last two epochs did not beat the best
            assert best <= len(h) - 3
    s = res["summary"]["test_auc"]
    assert s["n"] == 2 and s["mean"] == pytest.approx(np.mean([r["test_auc"] for r in res["seeds"]]))


TRAIN_CSV = "label,a,b\n1,x,p\n0,y,p\n1,x,\n0,z,q\n1,x,q\n"
VAL_CSV = "label,a,b\n0,w,p\n"
TEST_CSV = "label,b,a\n1,r,y\n"  # columns in another order


def _csvs(folder: Path, train: str = TRAIN_CSV, val: str = VAL_CSV, test: str = TEST_CSV) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{s}.csv" for s in ("train", "val", "test")]
    for path, text in zip(paths, (train, val, test)):
        path.write_text(text)
    return paths


@pytest.mark.parametrize(
    ("min_count", "ids", "cards"),
    [
        # a: x x3, y x1, z x1 -> x 2, y 3, z 4 (ties by text); b: p x2, q x2, one empty -> p 2, q 3, missing 1
        (1, {"train": ([2, 3, 2, 4, 2], [2, 2, 1, 3, 3]), "val": ([0], [2]), "test": ([3], [0])}, {"a": 5, "b": 4}),
        # min count 2: only x is kept in a; y and z become OOV
        (2, {"train": ([2, 0, 2, 0, 2], [2, 2, 1, 3, 3]), "val": ([0], [2]), "test": ([0], [0])}, {"a": 3, "b": 4}),
    ],
)
def test_csv_splits_encode_like_preprocess(tmp_path: Path, min_count: int, ids: dict, cards: dict) -> None:
    art = pf.resolve_data(*_csvs(tmp_path / "csv"), tmp_path / "art", min_count)
    assert art.fields == ["a", "b"] and dict(zip(art.fields, art.cardinalities)) == cards
    assert art.rows == {"train": 5, "val": 1, "test": 1}
    for split, (a, b) in ids.items():
        t = pq.read_table(art.path / f"{split}.parquet")
        assert t.column_names == ["label", "a", "b"]
        assert (t.column("a").to_pylist(), t.column("b").to_pylist()) == (a, b)
    assert pq.read_table(art.path / "train.parquet").column("label").to_pylist() == [1, 0, 1, 0, 1]
    assert art.schema["positive_ratio"]["train"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"val": "label,a\n0,w\n"}, "val.csv: columns ['label', 'a'] differ"),
        ({"train": "y,a,b\n1,x,p\n"}, "train.csv: no 'label' column"),
        ({"test": "label,a,b\n2,x,p\n"}, "test.csv: label is not 0/1 on 1 rows"),
        ({"train": "label,a,b\n"}, "train.csv: no rows"),
        ({"val": "label,a,b\n0,\"x\n"}, "val.csv: not a readable CSV"),
    ],
)
def test_bad_csv_splits_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict, message: str) -> None:
    texts = {"train": TRAIN_CSV, "val": VAL_CSV, "test": TEST_CSV} | files
    train, val, test = _csvs(tmp_path, texts["train"], texts["val"], texts["test"])
    out = tmp_path / "peer.json"
    assert pf.main(["--train", str(train), "--val", str(val), "--test", str(test), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and message in err, err
    assert not out.exists()
    assert pf.main(["--train", str(train), "--out", str(out)]) == 2
    assert "--train needs --val and --test" in capsys.readouterr().err


def test_run_without_fuxictr_raises_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fuxictr", None)  # import fuxictr -> ImportError
    with pytest.raises(pf.PeerError, match=r"fuxictr is not installed: pip install 'optembed\[bench\]'"):
        pf.run(planted_artifact(tmp_path / "art"), seeds=[0])


def test_run_on_csv_splits_smoke(tmp_path: Path) -> None:
    """Tiny run from raw CSVs (the planted artifact decoded to text): sane per-seed dicts."""
    pytest.importorskip("fuxictr")
    art = planted_artifact(tmp_path / "art", rows={"train": 1600, "val": 300, "test": 300})
    paths = []
    for split in ("train", "val", "test"):
        t = pq.read_table(art / f"{split}.parquet")
        cols = {"label": t.column("label")} | {k: pa.array([f"{k}{v}" for v in t.column(k).to_pylist()]) for k in CARDS}
        path = tmp_path / f"{split}.csv"
        pa.csv.write_csv(pa.table(cols), path)
        paths.append(path)
    recipe = pf.Recipe(hidden_units=(16,), epochs=4, batch_size=256, learning_rate=0.01, embedding_regularizer=0.001)
    results = pf.run(*paths, seeds=[3], recipe=recipe)
    assert len(results) == 1 and results[0]["seed"] == 3
    r = results[0]
    seen = {k: len(set(pq.read_table(art / "train.parquet").column(k).to_pylist())) for k in CARDS}
    assert r["table_bytes"] == sum(2 + n for n in seen.values()) * 11 * 4  # train's values + OOV + missing rows
    assert 0.8 < r["test_auc"] <= 1 and 0 < r["test_logloss"] < math.log(2)  # Bayes AUC 0.9; beats a coin
    assert 1 <= r["kept_epoch"] <= r["epochs_run"] <= 4 and len(r["history"]) == r["epochs_run"]
    json.dumps(r, allow_nan=False)
