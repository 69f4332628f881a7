"""export / predict: exported graphs equal the in-package model, predict reproduces evaluate."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from optembed.errors import ArtifactError, DataError
from optembed.export.bundle import check_pt2, open_bundle, torch_scorer
from optembed.export.graph import ServingNet
from optembed.quantization.serving import RankLookup, popcount32_div
from optembed.export.writers import export_program, save_onnx, save_pt2
from optembed.models.checkpoint import load_model
from optembed.models.compact import export_compact
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.quantization.fields import CodedField, DenseField
from optembed.quantization.model import quantized_model
from optembed.quantization.rank_remap import RankRemap, popcount32
from optembed.training.config import TrainConfig
from pipeline_fixtures import STRONG_PRUNING, small_supernet, synthetic_preprocess
from pipelines import export, predict, retrain

CARDS = [9, 300, 40, 6, 600]


def random_ids(cards: list[int], n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)


def tiny_compact(name: str = "deepfm", widths: tuple[int, ...] = (1, 8, 3, 5, 2)):
    torch.manual_seed(1)
    model = build_model(CARDS, ModelConfig(name, embed_dim=8, mlp_dims=(16, 8)), "none")
    keep = torch.rand(sum(CARDS), generator=torch.Generator().manual_seed(2)) > 0.5
    keep[model.embedder.embedding.offsets] = True
    model.embedder.set_fixed_masks(keep, torch.tensor(widths))
    model.train()
    model(random_ids(CARDS, 256, 3)).sum().backward()  # BatchNorm statistics move
    model.eval()
    return export_compact(model, keep, torch.tensor(widths))


def tiny_quantized():
    """Fields 1 (uint8 codes) and 4 (uint16 codes) product-quantized, the others float; a pruned remap."""
    compact = tiny_compact()
    g = torch.Generator().manual_seed(5)
    fields = []
    for f in range(len(CARDS)):
        table = compact.embedder.table(f).detach()
        if f in (1, 4):
            groups, entries, dtype = (2, 16, torch.uint8) if f == 1 else (3, 300, torch.uint16)
            sub = -(-table.shape[1] // groups)
            codes = torch.randint(0, entries, (table.shape[0], groups), generator=g).to(dtype)
            fields.append(CodedField(codes, torch.randn(groups, entries, sub, generator=g), table.shape[1]))
        else:
            fields.append(DenseField(table))
    return quantized_model(compact, fields).eval()


def test_popcount_by_division_counts_bits() -> None:
    values = torch.cat([torch.randint(0, 2**32, (2000,)), torch.tensor([0, 1, 2**31, 2**32 - 1])])
    brute = torch.tensor([bin(int(v)).count("1") for v in values])
    assert torch.equal(popcount32_div(values), brute)
    assert torch.equal(popcount32(values), brute)


def test_rank_lookup_equals_the_remap() -> None:
    keeps = [torch.rand(c, generator=torch.Generator().manual_seed(c)) > 0.6 for c in (700, 33, 1)]
    for k in keeps:
        k[0] = True
    remap = RankRemap.from_keep(keeps)
    x = torch.stack([torch.randint(0, k.numel(), (500,)) for k in keeps], dim=1)
    rows = RankLookup(remap)(x)
    assert torch.equal(rows, remap(x))
    for f, k in enumerate(keeps):  # against the definition: rank among kept ids, pruned -> 0
        want = torch.where(k, torch.cumsum(k.long(), 0) - 1, torch.zeros_like(k, dtype=torch.long))
        assert torch.equal(rows[:, f], want[x[:, f]])


@pytest.mark.parametrize("name", ["fnn", "deepfm", "dcn", "ipnn"])
def test_serving_net_equals_the_in_package_model(name: str) -> None:
    compact = tiny_compact(name)
    x = random_ids(CARDS, 500, 7)
    with torch.no_grad():
        logit, prob = ServingNet(compact)(x)
        # the net's merged width groups sum the first layer's columns in another order: to rounding
        torch.testing.assert_close(logit, compact(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(prob, torch.sigmoid(compact(x)), rtol=0, atol=1e-6)
        ids = compact.embedder.ids(x)
        padded = compact.head(compact.embedder.lookup(ids), ids)  # the unpacked head: an independent path
        torch.testing.assert_close(logit, padded, rtol=0, atol=1e-6)
    quantized = tiny_quantized()
    with torch.no_grad():
        torch.testing.assert_close(ServingNet(quantized)(x)[0], quantized(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["compact", "quantized"])
@pytest.mark.slow
def test_exported_graphs_give_the_models_scores(kind: str, tmp_path: Path) -> None:
    model = tiny_compact() if kind == "compact" else tiny_quantized()
    net = ServingNet(model).eval()
    x = random_ids(CARDS, 1000, 11)
    with torch.no_grad():
        want = model(x).numpy()
    program = export_program(net, net.n_fields)
    save_pt2(program, tmp_path / "model.pt2")
    for batch in (x, x[:1], x[:3]):  # any batch size, including 1
        logit, prob = torch_scorer(tmp_path / "model.pt2")(batch.numpy())
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want[: len(batch)])), atol=1e-5, rtol=0)
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    opset = save_onnx(program, tmp_path / "model.onnx", net.n_fields)
    assert opset >= 17
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ids"]
    assert [o.name for o in session.get_outputs()] == ["logit", "probability"]
    for batch in (x, x[:1]):
        logit, prob = session.run(None, {"ids": batch.numpy()})
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)


@pytest.mark.slow  # the first ONNX export of a run loads the exporter (seconds)
def test_an_unexportable_operator_is_named(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")

    class Shifts(nn.Module):
        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = (ids >> (ids % 3)).float().sum(1)  # a shift by a tensor: no ONNX translation
            return y, y

    program = export_program(Shifts(), 3)
    with pytest.raises(ArtifactError, match=r"operator aten\.__rshift__"):
        save_onnx(program, tmp_path / "m.onnx", 3)
    assert not (tmp_path / "m.onnx").exists()


def test_a_pt2_archive_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    net = ServingNet(tiny_compact()).eval()
    save_pt2(export_program(net, net.n_fields), tmp_path / "model.pt2")
    check_pt2(tmp_path / "model.pt2")  # the real one passes
    with zipfile.ZipFile(tmp_path / "model.pt2") as src:
        members = {n: src.read(n) for n in src.namelist()}
    prefix = next(iter(members)).split("/")[0]
    for name, data in (
        (f"{prefix}/data/constants/opaque_obj_0", b"\x80\x04K\x01."),
        (next(n for n in members if "sample_inputs" in n), _pickled_object()),
    ):
        forged = dict(members, **{name: data})
        with zipfile.ZipFile(tmp_path / "forged.pt2", "w") as out:
            for n, d in forged.items():
                out.writestr(n, d)
        with pytest.raises(ArtifactError, match="refusing|cannot read"):
            torch_scorer(tmp_path / "forged.pt2")


def _pickled_object() -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Path("/")}, buf)  # a non-tensor object: weights_only refuses it
    return buf.getvalue()


# -- end to end: a tiny pipeline, export, predict on raw lines ------------------------------------
ROWS = 6000


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("export")
    store, pre, _ = synthetic_preprocess(root, rows=ROWS)
    sn = small_supernet(store, "prune-only", epochs=1, **STRONG_PRUNING)
    r = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=TrainConfig(epochs=1, batch_size=512), device="cpu"), store)
    formats = ("onnx", "pt2") if export.onnx_available() is None else ("pt2",)
    m = export.run(export.ExportStage(source=r.fingerprint, out=root / "bundle", formats=formats), store)
    return root, store, pre, r, m


def test_split_lines(path: Path, seed: int, n: int, split: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """The raw lines preprocess put in the test split: its seeded hash of each row's position
    above the validation cut point (recomputed here)."""
    lines = path.read_text().splitlines()
    n_train, n_val = round(n * split[0]), round(n * split[1])
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT range AS i, hash(range, {seed}) AS h FROM range({len(lines)})")
    cut = con.execute(f"SELECT quantile_disc(h, {(n_train + n_val - 0.5) / n!r}) FROM t").fetchone()[0]
    keep = [i for (i,) in con.execute(f"SELECT i FROM t WHERE h > {int(cut)}::UBIGINT ORDER BY i").fetchall()]
    return [lines[i] for i in keep]


test_split_lines.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_predict_on_the_raw_test_lines_reproduces_evaluate(exported, tmp_path: Path) -> None:
    root, store, pre, r, m = exported
    meta = json.loads((m.path / "bundle.json").read_text())
    assert meta["source"]["fingerprint"] == r.fingerprint and meta["source"]["preprocess"] == pre.fingerprint
    assert meta["metrics"]["test_auc"] == pytest.approx(r.metrics["test_auc"], abs=1e-9)
    assert meta["inputs"][0]["shape"] == ["batch", 39] and "/" not in "".join(meta["graphs"].values())
    raw = tmp_path / "test_lines.txt"
    lines = test_split_lines(root / f"synth-{ROWS}-0.txt", pre.params["seed"], ROWS)
    raw.write_text("\n".join(lines) + "\n")
    schema = json.loads(pre.output("schema").read_text())
    assert len(lines) == schema["rows"]["test"]
    compact, _ = load_model(r.output("compact"))
    test = pq.read_table(pre.output("test")).to_pydict()
    x = torch.tensor([test[f["name"]] for f in schema["fields"]]).T
    with torch.no_grad():
        want = torch.sigmoid(compact(x)).numpy()
    # a copy of the bundle in another folder (the original removed): no absolute paths inside
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(root / "bundle", moved)
    for runtime in meta["graphs"]:
        out = tmp_path / f"scores-{runtime}.parquet"
        res = predict.run(predict.PredictConfig(str(moved), raw, out, runtime={"onnx": "onnx", "pt2": "torch"}[runtime], batch_size=500), store)
        got = pq.read_table(out).to_pydict()
        assert got["row"] == list(range(len(lines)))
        assert got["label"] == test["label"]
        np.testing.assert_allclose(np.array(got["score"]), want, atol=1e-5, rtol=0)
        assert res.metrics["auc"] == pytest.approx(r.metrics["test_auc"], abs=1e-6)
        assert res.metrics["logloss"] == pytest.approx(r.metrics["test_logloss"], abs=1e-5)


@pytest.mark.slow
def test_unseen_values_read_oov_and_empty_ones_missing(exported, tmp_path: Path) -> None:
    root, store, pre, r, m = exported
    line = (root / f"synth-{ROWS}-0.txt").read_text().splitlines()[0].split("\t")
    unlabeled = line[1:]
    unlabeled[13] = "never-seen-value"  # C1
    unlabeled[14] = ""  # C2
    unlabeled[0] = ""  # I1
    raw = tmp_path / "rows.txt"
    raw.write_text("\t".join(unlabeled) + "\n")  # 39 columns: no label
    out = tmp_path / "s.csv"
    res = predict.run(predict.PredictConfig(str(root / "bundle"), raw, out, runtime="torch"), store)
    assert not res.has_label and res.rows == 1 and "auc" not in res.metrics
    table = pacsv.read_csv(out).to_pydict()
    assert list(table) == ["row", "score"]
    # the reference: the same line encoded by hand from the vocabularies
    schema = json.loads(pre.output("schema").read_text())
    ids = []
    for j, f in enumerate(schema["fields"]):
        vocab = pq.read_table(pre.file(f["vocab"])).to_pydict()
        lookup = {v: i for v, i in zip(vocab["value"], vocab["id"]) if v is not None}
        value = unlabeled[j]
        if value == "":
            ids.append(f["missing_id"])
            continue
        if f["kind"] == "numeric":
            v = float(value)
            value = str(int(np.floor(np.log(v) ** 2))) if v > 2 else str(int(v))
        ids.append(lookup.get(value, f["oov_id"]))
    assert ids[13] == 0 and ids[14] == 1 and ids[0] == 1
    compact, _ = load_model(r.output("compact"))
    with torch.no_grad():
        want = float(torch.sigmoid(compact(torch.tensor([ids]))))
    assert table["score"][0] == pytest.approx(want, abs=1e-6)


@pytest.mark.slow
def test_bad_rows_and_a_damaged_bundle(exported, tmp_path: Path) -> None:
    root, store, pre, r, m = exported
    lines = (root / f"synth-{ROWS}-0.txt").read_text().splitlines()[:20]
    raw = tmp_path / "bad.txt"
    raw.write_text("\n".join(lines[:5] + ["1\t2\t3"] + lines[5:]) + "\n")
    out = tmp_path / "s.parquet"
    with pytest.raises(DataError, match="columns"):
        predict.run(predict.PredictConfig(str(root / "bundle"), raw, out, runtime="torch"), store)
    assert not out.exists() and not list(tmp_path.glob(".s.parquet.tmp-*"))
    res = predict.run(predict.PredictConfig(str(root / "bundle"), raw, out, runtime="torch", skip_bad_rows=True), store)
    assert res.rows == 20 and res.bad_rows["columns"] == 1
    # by artifact id (the export's, or the retrain's, whose export is found)
    for ref in (m.fingerprint[:8], r.fingerprint[:8]):
        assert predict.run(predict.PredictConfig(ref, raw, out, runtime="torch", skip_bad_rows=True), store).rows == 20
    broken = tmp_path / "broken"
    shutil.copytree(root / "bundle", broken)
    vocab = next((broken / "vocab").glob("*.parquet"))
    vocab.write_bytes(vocab.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="does not match bundle.json"):
        open_bundle(broken)


@pytest.mark.slow
def test_cli_export_and_predict(exported, cli, tmp_path: Path) -> None:
    root, store, pre, r, m = exported
    result = cli("export", "--from", r.fingerprint[:8], "--format", "pt2", "--out", tmp_path / "b", "--artifacts", store.root, "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "model.pt2").is_file() and not (tmp_path / "b" / "manifest.json").exists()
    assert "onnxruntime" in (tmp_path / "b" / "README.md").read_text()
    lines = (root / f"synth-{ROWS}-0.txt").read_text().splitlines()[:50]
    raw = tmp_path / "rows.txt"
    raw.write_text("\n".join(lines) + "\n")
    result = cli("predict", tmp_path / "b", raw, "--out", tmp_path / "s.csv", "--runtime", "torch", "--artifacts", store.root)
    assert result.exit_code == 0, result.output
    assert "auc" in result.output and len((tmp_path / "s.csv").read_text().splitlines()) == 51
    for args, message in (
        (("predict", tmp_path / "b", tmp_path / "missing.txt", "--out", tmp_path / "s.csv"), "not found"),
        (("predict", tmp_path / "b", raw, "--out", tmp_path / "s.txt"), ".parquet or .csv"),
        (("predict", tmp_path / "b", raw, "--out", tmp_path / "s.csv", "--runtime", "onnx"), "no onnx graph"),
        (("export", "--from", r.fingerprint[:8], "--format", "tflite"), "unknown --format"),
        (("export", "--from", r.fingerprint[:8], "--format", "pt2", "--out", tmp_path / "b"), "already holds a bundle"),
    ):
        result = cli(*args, "--artifacts", store.root)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
