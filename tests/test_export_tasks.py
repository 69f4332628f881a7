"""export / predict of a model of several tasks: one probability per task, equal to the in-package
model's sigmoid per task; a one-task bundle and its scores keep their format.

The data is the planted two-label file of ``test_multitask`` (a click driven by field ``a``, a
conversion among the clicks driven by ``b``); the reference ids are the raw tokens looked up by hand
in the preprocess vocabularies.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ArtifactError, DataError
from optembed.export.bundle import bundle_digest, model_scorer, open_bundle, torch_scorer
from optembed.export.graph import ServingNet
from optembed.export.readme import ONE_TASK, outputs_text
from optembed.export.score import score_columns, score_file
from optembed.export.tasks import check_task_meta, checked_scorer
from optembed.export.writers import export_program, save_pt2
from optembed.models.checkpoint import load_model, save_model
from optembed.models.compact import export_compact
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from pipelines import compress, export, predict, preprocess as pre_stage, retrain, supernet
from pipelines.readers import MODEL_OUTPUT
from pipelines.store import Store
from test_multitask import planted_rows, write_csv

CARDS = [7, 40, 12]
HEADER = ["click", "convert", "a", "b", "c"]
FIELDS = ["a", "b", "c"]


def random_ids(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)


def two_task_compact(name: str = "deepfm") -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(CARDS, ModelConfig(name, embed_dim=6, mlp_dims=(8,), dropout=0.0, tasks=2), "none")
    keep = torch.rand(sum(CARDS), generator=torch.Generator().manual_seed(4)) > 0.4
    keep[model.embedder.embedding.offsets] = True
    widths = torch.tensor([2, 6, 3])
    model.embedder.set_fixed_masks(keep, widths)
    return export_compact(model.eval(), keep, widths).eval()


# -- the network and the scorers ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fnn", "deepfm", "dcn", "ipnn"])
def test_serving_net_gives_one_probability_per_task(name: str) -> None:
    model = two_task_compact(name)
    x = random_ids(300, 1)
    with torch.no_grad():
        logit, prob = ServingNet(model)(x)
        want = model(x)
    assert logit.shape == prob.shape == (300, 2)
    assert torch.equal(logit, want) and torch.equal(prob, torch.sigmoid(want))


def test_model_file_scorer_and_pt2_graph_per_task(tmp_path: Path) -> None:
    """The torch runtime (the model file rebuilt) and the torch.export program give the model's
    (B, 2) logits for any batch size; a bundle count of tasks other than the model's is refused."""
    model = two_task_compact()
    save_model(tmp_path / "model.pt", model, FIELDS)
    x = random_ids(257, 2)
    with torch.no_grad():
        want = model(x).numpy()
    score = model_scorer(tmp_path / "model.pt", "compact", FIELDS, tasks=2)
    logit, prob = score(x.numpy())
    np.testing.assert_allclose(logit, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want)), atol=1e-6, rtol=0)
    with pytest.raises(ArtifactError, match=r"model\.pt gives 2 scores per row but .*bundle\.json lists one task"):
        model_scorer(tmp_path / "model.pt", "compact", FIELDS, tasks=1)
    net = ServingNet(model).eval()
    save_pt2(export_program(net, net.n_fields), tmp_path / "model.pt2")
    for batch in (x, x[:1], x[:5]):
        logit, prob = torch_scorer(tmp_path / "model.pt2")(batch.numpy())
        assert logit.shape == (len(batch), 2)
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)


def test_checked_scorer_refuses_another_shape_in_one_line(tmp_path: Path) -> None:
    def three(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((len(ids), 3), dtype=np.float32)
        return z, z

    ids = np.zeros((4, 3), dtype=np.int64)
    assert checked_scorer(three, 3, tmp_path / "model.onnx")(ids)[0].shape == (4, 3)
    for tasks, listed in ((2, "2 tasks"), (1, "one task")):
        with pytest.raises(ArtifactError) as err:
            checked_scorer(three, tasks, tmp_path / "model.onnx")(ids)
        message = str(err.value)
        assert "\n" not in message and "model.onnx gives 3 scores per row" in message and f"lists {listed}" in message


def test_task_metadata_is_checked() -> None:
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"malformed bundle.json: {what}")

    outputs = [{"name": "logit", "shape": ["batch", 2]}, {"name": "probability", "shape": ["batch", 2]}]
    check_task_meta({"version": 3, "tasks": ["click", "convert"], "outputs": outputs}, bad)
    check_task_meta({"version": 2, "outputs": [{"name": "logit", "shape": ["batch"]}]}, bad)
    for meta, match in (
        ({"version": 2, "tasks": ["click", "convert"], "outputs": outputs}, "version 2"),
        ({"version": 3, "outputs": outputs}, "task names"),
        ({"version": 3, "tasks": ["click"], "outputs": outputs}, "task names"),
        ({"version": 3, "tasks": ["click", "click"], "outputs": outputs}, "task names"),
        ({"version": 3, "tasks": ["click", "convert", "buy"], "outputs": outputs}, "3 task"),
        ({"version": 2, "outputs": outputs}, "1 task"),
    ):
        with pytest.raises(ArtifactError, match=match):
            check_task_meta(meta, bad)


def test_readme_outputs_line() -> None:
    assert outputs_text({}) == ONE_TASK  # the one-task line of every earlier bundle
    assert ONE_TASK == "**Outputs** `logit` and `probability` (= sigmoid(logit)), float32, shape `(batch,)`."
    text = outputs_text({"tasks": ["click", "convert"]})
    assert "`(batch, 2)`" in text and "0 = `click` (primary), 1 = `convert`" in text
    assert "`score_click`, `score_convert`" in text


# -- scoring an encoded file ---------------------------------------------------------------------
def brute_auc(y: np.ndarray, z: np.ndarray) -> float:
    pos, neg = z[y == 1], z[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def _encoded(path: Path, n: int, labels: dict[str, np.ndarray]) -> np.ndarray:
    ids = random_ids(n, 9).numpy().astype(np.int32)
    cols = {"row": pa.array(np.arange(n, dtype=np.int64)), **{k: pa.array(v) for k, v in labels.items()}}
    cols.update({f"f{i}": pa.array(ids[:, i]) for i in range(len(CARDS))})
    pq.write_table(pa.table(cols), path)
    return ids


def _fixed_scorer(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two logits per row that are plain functions of the ids."""
    z = np.stack([ids[:, 0] * 0.5 - ids[:, 1] * 0.05, ids[:, 2] * 0.3 - 1.0], axis=1).astype(np.float32)
    return z, 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("present", [(0, 1), (0,), (1,), ()])
def test_score_file_columns_and_metrics_per_task(tmp_path: Path, present: tuple[int, ...]) -> None:
    n = 900
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (n, 2)).astype(np.int8)
    stored = {0: "label", 1: "label_1"}
    ids = _encoded(tmp_path / "enc.parquet", n, {stored[k]: y[:, k] for k in present})
    res = score_file(tmp_path / "enc.parquet", _fixed_scorer, 3, present, tmp_path / "s.parquet", batch_size=128, tasks=["click", "convert"])
    got = pq.read_table(tmp_path / "s.parquet")
    want = ["row", "score", *(["label"] if 0 in present else []), "score_click", "score_convert",
            *[f"label_{['click', 'convert'][k]}" for k in present]]
    assert got.column_names == want == score_columns(["click", "convert"], present)
    z, p = _fixed_scorer(ids.astype(np.int64))
    table = got.to_pydict()
    np.testing.assert_allclose(table["score"], p[:, 0], atol=1e-7)
    np.testing.assert_allclose(table["score_click"], p[:, 0], atol=1e-7)
    np.testing.assert_allclose(table["score_convert"], p[:, 1], atol=1e-7)
    assert got.schema.field("score_convert").type == pa.float32() and table["row"] == list(range(n))
    for k, name in enumerate(("click", "convert")):
        if k in present:
            assert table[f"label_{name}"] == y[:, k].tolist()
            numbers = res.metrics["tasks"][name]
            assert numbers["auc"] == pytest.approx(brute_auc(y[:, k], z[:, k]), abs=1e-9)
            ll = -np.mean(y[:, k] * np.log(p[:, k]) + (1 - y[:, k]) * np.log(1 - p[:, k]))
            assert numbers["logloss"] == pytest.approx(ll, abs=1e-5) and numbers["positives"] == int(y[:, k].sum())
        else:
            assert name not in res.metrics.get("tasks", {})
    # the plain keys are the primary's, present only with its label
    assert ("auc" in res.metrics) == (0 in present)
    if 0 in present:
        assert res.metrics["auc"] == res.metrics["tasks"]["click"]["auc"] and table["label"] == y[:, 0].tolist()
    assert ("tasks" in res.metrics) == bool(present)


def test_score_file_one_task_keeps_its_columns(tmp_path: Path) -> None:
    n = 300
    y = np.random.default_rng(6).integers(0, 2, n).astype(np.int8)
    ids = _encoded(tmp_path / "enc.parquet", n, {"label": y})

    def one(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _fixed_scorer(batch)[0][:, 0].copy()
        return z, 1 / (1 + np.exp(-z))

    res = score_file(tmp_path / "enc.parquet", one, 3, (0,), tmp_path / "s.csv", batch_size=64)
    table = pacsv.read_csv(tmp_path / "s.csv")
    assert table.column_names == ["row", "score", "label"] and "tasks" not in res.metrics
    assert res.metrics["auc"] == pytest.approx(brute_auc(y, one(ids.astype(np.int64))[0]), abs=1e-9)
    score_file(tmp_path / "enc.parquet", one, 3, (), tmp_path / "u.parquet")
    assert pq.read_table(tmp_path / "u.parquet").column_names == ["row", "score"]


# -- end to end: preprocess two labels, train, export, predict ----------------------------------------
ROWS = 4000
TRAIN = TrainConfig(epochs=1, batch_size=256, lr=0.01, patience=0, lr_decay=1.0, alpha=0.0)
MODEL = ModelConfig("deepfm", embed_dim=4, mlp_dims=(16,), dropout=0.0)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    """Two-label data -> the Original (retrain --full), OptEmbed-E (retrain from a supernet) and a
    product-quantized Original, each exported to a bundle folder."""
    root = tmp_path_factory.mktemp("export_tasks")
    store = Store(root / "artifacts")
    rows = planted_rows(ROWS, seed=8)
    src = write_csv(root / "conv.csv", rows)
    pre = pre_stage.run(pre_stage.PreprocessStage(src, PreprocessConfig(fmt="csv", label="click,convert")), store)
    full = retrain.run(retrain.RetrainStage(source=pre.fingerprint, full=True, model=MODEL, train=TRAIN, device="cpu"), store)
    sn = supernet.run(supernet.SupernetStage(model=MODEL, mode="optembed", train=TRAIN, device="cpu"), store)
    warm = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=TRAIN, device="cpu"), store)
    pq_ = compress.run(compress.CompressStage(source=full.fingerprint, device="cpu", min_rows=1), store)
    formats = ("onnx", "pt2") if export.onnx_available() is None else ("pt2",)
    sources = {"original": full, "optembed": warm, "quantized": pq_}
    bundles = {}
    for kind, source in sources.items():
        m = export.run(export.ExportStage(source=source.fingerprint, out=root / f"bundle-{kind}", formats=formats), store)
        bundles[kind] = (source, m, root / f"bundle-{kind}")
    return root, store, pre, rows, bundles


def reference_ids(pre, rows: list[list[object]]) -> torch.Tensor:
    """The raw tokens of ``rows`` looked up by hand in the preprocess vocabularies."""
    schema = json.loads(pre.output("schema").read_text())
    cols = []
    for j, f in enumerate(schema["fields"]):
        vocab = pq.read_table(pre.file(f["vocab"])).to_pydict()
        lookup = {v: i for v, i in zip(vocab["value"], vocab["id"]) if v is not None}
        cols.append([lookup.get(str(r[2 + j]), f["oov_id"]) for r in rows])
    return torch.tensor(cols).T


def write_rows(path: Path, rows: list[list[object]], columns: list[str]) -> Path:
    keep = [HEADER.index(c) for c in columns]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[r[k] for k in keep] for r in rows])
    return path


def runtimes(meta: dict) -> list[str]:
    return ["torch", *(["onnx"] if "onnx" in meta["graphs"] and export.onnx_available() is None and _has_ort() else [])]


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["original", "optembed", "quantized"])
def test_predict_scores_equal_the_models_sigmoid_per_task(pipeline, kind: str, tmp_path: Path) -> None:
    root, store, pre, rows, bundles = pipeline
    source, m, folder = bundles[kind]
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["version"] == 3 and meta["tasks"] == ["click", "convert"]
    assert [o["shape"] for o in meta["outputs"]] == [["batch", 2], ["batch", 2]]
    assert set(meta["metrics"]["tasks"]) == {"click", "convert"} and m.metrics["tasks"] == meta["metrics"]["tasks"]
    assert m.params["tasks"] == 2  # not the fingerprint of a bundle written before bundles had tasks
    model, _ = load_model(source.output(MODEL_OUTPUT[source.stage]))
    assert model.tasks == 2 and model.embedder.kind == ("quantized" if kind == "quantized" else "compact")
    # the bundle's test numbers per task: the model's on the test split (and the source artifact's, where it records them)
    test = pq.read_table(pre.output("test")).to_pydict()
    with torch.no_grad():
        z = model(torch.tensor([test[f] for f in FIELDS]).T).numpy()
    for k, (task, col) in enumerate((("click", "label"), ("convert", "label_1"))):
        assert meta["metrics"]["tasks"][task]["test_auc"] == pytest.approx(brute_auc(np.array(test[col]), z[:, k]), abs=1e-6)
        if "tasks" in source.metrics:
            assert meta["metrics"]["tasks"][task]["test_auc"] == pytest.approx(source.metrics["tasks"][task]["test_auc"], abs=1e-6)
    assert meta["metrics"]["test_auc"] == meta["metrics"]["tasks"]["click"]["test_auc"]
    readme = (folder / "README.md").read_text()
    assert "`(batch, 2)`" in readme and "0 = `click` (primary), 1 = `convert`" in readme
    sample = rows[:1500]
    with torch.no_grad():
        want = torch.sigmoid(model(reference_ids(pre, sample))).numpy()
    raw = write_rows(tmp_path / "raw.csv", sample, HEADER)
    y = np.array([[int(r[0]), int(r[1])] for r in sample])
    for runtime in runtimes(meta):
        out = tmp_path / f"scores-{runtime}.parquet"
        res = predict.run(predict.PredictConfig(str(folder), raw, out, runtime=runtime, batch_size=400), store)
        got = pq.read_table(out).to_pydict()
        assert list(got) == ["row", "score", "label", "score_click", "score_convert", "label_click", "label_convert"]
        assert got["row"] == list(range(len(sample))) and got["label_convert"] == y[:, 1].tolist()
        np.testing.assert_allclose(got["score_click"], want[:, 0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["score_convert"], want[:, 1], atol=1e-5, rtol=0)
        assert got["score"] == got["score_click"]
        assert res.has_label and set(res.metrics["tasks"]) == {"click", "convert"}
        for k, task in enumerate(("click", "convert")):
            assert res.metrics["tasks"][task]["auc"] == pytest.approx(brute_auc(y[:, k], want[:, k]), abs=1e-4)
            assert res.metrics["tasks"][task]["positives"] == int(y[:, k].sum())
        assert res.metrics["auc"] == res.metrics["tasks"]["click"]["auc"]


@pytest.mark.slow
def test_files_with_some_or_no_label_columns(pipeline, tmp_path: Path) -> None:
    root, store, pre, rows, bundles = pipeline
    _, _, folder = bundles["original"]
    sample = rows[:600]
    full = predict.run(predict.PredictConfig(str(folder), write_rows(tmp_path / "all.csv", sample, HEADER), tmp_path / "all.parquet",
                                             runtime="torch"), store)
    scores = pq.read_table(tmp_path / "all.parquet").to_pydict()
    y = {"click": [int(r[0]) for r in sample], "convert": [int(r[1]) for r in sample]}
    for columns, labelled in (
        (["click", "a", "b", "c"], ["click"]),
        (["a", "b", "convert", "c"], ["convert"]),  # the secondary only, not in its usual place
        (["c", "b", "a"], []),
    ):
        out = tmp_path / f"s-{len(columns)}-{labelled}.csv"
        res = predict.run(predict.PredictConfig(str(folder), write_rows(tmp_path / "part.csv", sample, columns), out, runtime="torch"), store)
        table = pacsv.read_csv(out).to_pydict()
        assert list(table) == score_columns(["click", "convert"], [["click", "convert"].index(t) for t in labelled])
        for name in ("score", "score_click", "score_convert"):
            np.testing.assert_allclose(table[name], scores[name], atol=1e-6)  # the same rows score the same
        assert res.rows == len(sample) and res.has_label == ("click" in labelled)
        assert sorted(res.metrics.get("tasks", {})) == labelled
        for task in labelled:
            assert table[f"label_{task}"] == y[task]
            assert res.metrics["tasks"][task]["auc"] == pytest.approx(full.metrics["tasks"][task]["auc"], abs=1e-9)
        assert ("auc" in res.metrics) == ("click" in labelled)
    # a Parquet file (predict --format parquet) with the secondary label only
    pq.write_table(pa.table({"convert": y["convert"], **{f: [str(r[2 + j]) for r in sample] for j, f in enumerate(FIELDS)}}),
                   tmp_path / "part.parquet")
    res = predict.run(predict.PredictConfig(str(folder), tmp_path / "part.parquet", tmp_path / "p.parquet", fmt="parquet", runtime="torch"), store)
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert list(table) == ["row", "score", "score_click", "score_convert", "label_convert"] and table["label_convert"] == y["convert"]
    np.testing.assert_allclose(table["score_convert"], scores["score_convert"], atol=1e-6)
    assert res.metrics["tasks"]["convert"]["auc"] == pytest.approx(full.metrics["tasks"]["convert"]["auc"], abs=1e-9)


@pytest.mark.slow
def test_a_bad_secondary_label_is_named(pipeline, tmp_path: Path) -> None:
    root, store, pre, rows, bundles = pipeline
    _, _, folder = bundles["original"]
    sample = [list(r) for r in rows[:50]]
    sample[17][1] = "maybe"
    raw = write_rows(tmp_path / "bad.csv", sample, HEADER)
    out = tmp_path / "s.parquet"
    with pytest.raises(DataError) as err:
        predict.run(predict.PredictConfig(str(folder), raw, out, runtime="torch"), store)
    assert "convert='maybe'" in str(err.value) and "bad.csv" in str(err.value) and "data row 18" in str(err.value)
    assert not out.exists()
    res = predict.run(predict.PredictConfig(str(folder), raw, out, runtime="torch", skip_bad_rows=True), store)
    assert res.rows == 49 and res.bad_rows["label"] == 1 and 17 not in pq.read_table(out).column("row").to_pylist()


def _rewrite(folder: Path, edit) -> None:
    meta = json.loads((folder / "bundle.json").read_text())
    edit(meta)
    meta["bundle_sha256"] = bundle_digest(meta)
    (folder / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_a_bundle_whose_task_count_disagrees_with_its_graph(pipeline, tmp_path: Path, cli) -> None:
    root, store, pre, rows, bundles = pipeline
    _, _, folder = bundles["original"]
    raw = write_rows(tmp_path / "raw.csv", rows[:40], HEADER)

    def three(meta: dict) -> None:
        meta["tasks"] = ["click", "convert", "buy"]
        for o in meta["outputs"]:
            o["shape"] = ["batch", 3]

    def one(meta: dict) -> None:
        meta["version"] = 2
        del meta["tasks"]
        for o in meta["outputs"]:
            o["shape"] = ["batch"]

    graphs = json.loads((folder / "bundle.json").read_text())["graphs"]
    for name, edit, says in (("three", three, "lists 3 tasks"), ("one", one, "lists one task")):
        forged = tmp_path / name
        shutil.copytree(folder, forged)
        _rewrite(forged, edit)
        open_bundle(forged)  # consistent in itself: the hashes and the description hold
        for runtime, file in (("torch", "model.pt"), *((("onnx", "model.onnx"),) if "onnx" in graphs and _has_ort() else ())):
            with pytest.raises(ArtifactError) as err:
                predict.run(predict.PredictConfig(str(forged), raw, tmp_path / "s.csv", runtime=runtime), store)
            message = str(err.value)
            assert "\n" not in message and f"{file} gives 2 scores per row" in message and says in message, message
        result = cli("predict", forged, raw, "--out", tmp_path / "s.csv", "--runtime", "torch", "--artifacts", store.root)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "gives 2 scores per row" in lines[0], result.stderr
        assert "Traceback" not in result.output and not (tmp_path / "s.csv").exists()
    # a description disagreeing with itself (3 tasks, outputs of 2) is malformed
    forged = tmp_path / "self"
    shutil.copytree(folder, forged)
    _rewrite(forged, lambda meta: meta.update(tasks=["click", "convert", "buy"]))
    with pytest.raises(ArtifactError, match="malformed .*3 task"):
        open_bundle(forged)


@pytest.mark.slow
def test_cli_predict_shows_every_task(pipeline, tmp_path: Path, cli) -> None:
    root, store, pre, rows, bundles = pipeline
    _, _, folder = bundles["optembed"]
    raw = write_rows(tmp_path / "raw.csv", rows[:300], HEADER)
    result = cli("predict", folder, raw, "--out", tmp_path / "s.csv", "--runtime", "torch", "--artifacts", store.root, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown["tasks"]) == {"click", "convert"} and shown["auc"] == shown["tasks"]["click"]["auc"]
    result = cli("predict", folder, raw, "--out", tmp_path / "s.csv", "--runtime", "torch", "--artifacts", store.root)
    assert result.exit_code == 0 and "auc_convert" in result.output
    source, _, _ = bundles["optembed"]
    result = cli("export", "--from", source.fingerprint[:10], "--format", "pt2", "--out", tmp_path / "b", "--artifacts", store.root)
    assert result.exit_code == 0, result.output
    assert "test_auc_convert" in result.output and json.loads((tmp_path / "b" / "bundle.json").read_text())["tasks"] == ["click", "convert"]


# -- one task: the bundle and the scores as before ------------------------------------------------------
@pytest.mark.slow
def test_one_task_bundle_and_scores_keep_their_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "artifacts")
    rows = planted_rows(3000, seed=9)
    src = write_rows(tmp_path / "one.csv", rows, ["click", "a", "b", "c"])
    pre = pre_stage.run(pre_stage.PreprocessStage(src, PreprocessConfig(fmt="csv", label="click")), store)
    rt = retrain.run(retrain.RetrainStage(source=pre.fingerprint, full=True, model=MODEL, train=TRAIN, device="cpu"), store)
    formats = ("onnx", "pt2") if export.onnx_available() is None else ("pt2",)
    m = export.run(export.ExportStage(source=rt.fingerprint, out=tmp_path / "b", formats=formats), store)
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert meta["version"] == 2 and "tasks" not in meta and "tasks" not in meta["metrics"] and "tasks" not in m.metrics
    assert "tasks" not in m.params and m.params == export.stage_params(export.ExportStage(formats=formats))
    assert sorted(meta) == sorted([
        "format", "version", "made_by", "versions", "onnx_opset", "source", "model", "inputs", "outputs", "model_file", "graphs",
        "preprocessing", "metrics", "files", "bundle_sha256",
    ])
    assert meta["outputs"] == [{"name": n, "dtype": "float32", "shape": ["batch"]} for n in ("logit", "probability")]
    assert ONE_TASK in (tmp_path / "b" / "README.md").read_text()
    if "onnx" in meta["graphs"] and _has_ort():
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logit", "probability"]
        assert all(len(o.shape) == 1 for o in session.get_outputs())
    model, _ = load_model(rt.output("compact"))
    with torch.no_grad():
        want = torch.sigmoid(model(reference_ids(pre, rows[:500]))).numpy()
    assert want.shape == (500,)
    for columns, names in ((["click", "a", "b", "c"], ["row", "score", "label"]), (["a", "b", "c"], ["row", "score"])):
        for runtime in runtimes(meta):
            out = tmp_path / f"s-{runtime}.csv"
            res = predict.run(predict.PredictConfig(str(tmp_path / "b"), write_rows(tmp_path / "r.csv", rows[:500], columns), out, runtime=runtime),
                              store)
            table = pacsv.read_csv(out).to_pydict()
            assert list(table) == names and "tasks" not in res.metrics
            np.testing.assert_allclose(table["score"], want, atol=1e-5, rtol=0)
            assert res.has_label == ("label" in names)
