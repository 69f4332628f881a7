"""Several labels on one shared embedding table: data, model heads, the weighted loss, training.

The data is planted by hand: a click that depends on field ``a`` and a sparse conversion among
the clicks that depends on field ``b`` only, so each task has a signal the other does not carry.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from optembed.data.labels import label_columns, task_names
from optembed.data.preprocess import PreprocessConfig, preprocess
from optembed.data.tensors import read_split
from optembed.errors import ConfigError, DataError
from optembed.fingerprint import fingerprint_params
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.tasks import task_bce


def planted_rows(n: int, seed: int = 0) -> list[list[object]]:
    """``click, convert, a, b, c``: P(click) 0.55 for a < 5 else 0.18; P(convert | click) 0.3 for
    b < 3 else 0.01; ``c`` is noise."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 20, n), rng.integers(0, 30, n), rng.integers(0, 10, n)
    click = rng.random(n) < np.where(a < 5, 0.55, 0.18)
    convert = click & (rng.random(n) < np.where(b < 3, 0.3, 0.01))
    return [[int(k), int(v), f"a{x}", f"b{y}", f"c{z}"] for k, v, x, y, z in zip(click, convert, a, b, c)]


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["click", "convert", "a", "b", "c"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def two_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[object]]]:
    root = tmp_path_factory.mktemp("two_label")
    rows = planted_rows(6000)
    src = write_csv(root / "conv.csv", rows)
    preprocess(src, PreprocessConfig(fmt="csv", label="click,convert"), root / "out")
    return root / "out", rows


# -- data --------------------------------------------------------------------------------------
def test_preprocess_stores_every_label_with_its_ratio(two_label: tuple[Path, list[list[object]]]) -> None:
    out, rows = two_label
    schema = json.loads((out / "schema.json").read_text())
    assert [f["name"] for f in schema["fields"]] == ["a", "b", "c"]  # neither label is a field
    assert [(e["name"], e["column"]) for e in schema["labels"]] == [("click", "label"), ("convert", "label_1")]
    assert label_columns(schema) == ["label", "label_1"] and task_names(schema) == ["click", "convert"]
    stored = {s: pq.read_table(out / f"{s}.parquet") for s in ("train", "val", "test")}
    assert all(t.schema.field("label_1").type == "int8" for t in stored.values())
    total = {name: sum(int(np.sum(t.column(col).to_numpy())) for t in stored.values())
             for name, col in (("click", "label"), ("convert", "label_1"))}
    assert total == {"click": sum(int(r[0]) for r in rows), "convert": sum(int(r[1]) for r in rows)}
    for entry, col in zip(schema["labels"], ("label", "label_1"), strict=True):
        for s, table in stored.items():
            assert entry["positive_rate"][s] == pytest.approx(float(np.mean(table.column(col).to_numpy())))
        assert entry["positive_rate"]["all"] == pytest.approx(total[entry["name"]] / len(rows))
    # the single-label keys keep their meaning: the primary task's
    assert schema["positive_ratio"] == schema["labels"][0]["positive_rate"] and schema["source_label"] == "click"
    # every stored conversion is a click (the rows were not shuffled between the columns)
    for table in stored.values():
        assert not np.any((table.column("label_1").to_numpy() == 1) & (table.column("label").to_numpy() == 0))


def test_read_split_shapes(two_label: tuple[Path, list[list[object]]]) -> None:
    out, _ = two_label
    one = read_split(out / "train.parquet", ["a", "b", "c"])
    both = read_split(out / "train.parquet", ["a", "b", "c"], ["label", "label_1"], tasks=["click", "convert"])
    assert one.y.shape == (len(one),) and both.y.shape == (len(one), 2) and both.tasks == ("click", "convert")
    assert both.y[:, 0].tolist() == one.y.tolist() and both.primary_y.tolist() == one.y.tolist()
    assert both.slice(10, 20).y.shape == (10, 2) and both.slice(10, 20).tasks == both.tasks


def test_one_label_schema_has_no_labels_key(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "one.csv", planted_rows(400))
    result = preprocess(src, PreprocessConfig(fmt="csv", label="click", fields=["a", "b"]), tmp_path / "out")
    assert "labels" not in result.schema and "label_positive_ratios" not in result.metrics
    assert pq.read_table(tmp_path / "out" / "train.parquet").column_names == ["label", "a", "b"]
    assert label_columns(result.schema) == ["label"] and task_names(result.schema) == ["click"]


def test_bad_second_label_is_refused_naming_its_column(tmp_path: Path) -> None:
    rows = planted_rows(300)
    rows[41][1] = "2"
    src = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as err:
        preprocess(src, PreprocessConfig(fmt="csv", label="click,convert"), tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "bad.csv" in message and "convert='2'" in message and "data row 42" in message
    # --skip-bad-rows drops the row once, whichever label is bad
    rows[7][0] = "x"
    src = write_csv(tmp_path / "bad2.csv", rows)
    result = preprocess(src, PreprocessConfig(fmt="csv", label="click,convert", skip_bad_rows=True), tmp_path / "out2")
    assert result.schema["bad_rows_skipped"]["label"] == 2 and result.metrics["rows"] == 298


@pytest.mark.parametrize("label", ["click,", "click,click", "click,missing"])
def test_bad_label_lists(tmp_path: Path, label: str) -> None:
    src = write_csv(tmp_path / "x.csv", planted_rows(50))
    with pytest.raises(ConfigError):
        preprocess(src, PreprocessConfig(fmt="csv", label=label), tmp_path / "out")


def test_cli_bad_label_one_line(tmp_path: Path, store_dir: Path, cli) -> None:
    rows = planted_rows(200)
    rows[10][1] = "maybe"
    src = write_csv(tmp_path / "bad.csv", rows)
    res = cli("preprocess", src, "--label", "click,convert")
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "convert='maybe'" in errors[0] and "bad.csv" in errors[0]
    assert "Traceback" not in res.output


def test_synth_two_tasks(tmp_path: Path) -> None:
    from optembed.data.synth import CONVERT_AMONG_CLICKS, MULTITASK_CLICKS, generate

    truth = generate(tmp_path / "mt.csv", 30_000, seed=2, tasks=2)
    assert truth.tasks is not None and truth.tasks["names"] == ["click", "convert"]
    import pyarrow.csv as pacsv

    raw = pacsv.read_csv(tmp_path / "mt.csv")
    click, convert = raw.column("click").to_numpy(), raw.column("convert").to_numpy()
    assert raw.column_names[:3] == ["click", "convert", "I1"] and raw.num_columns == 41
    assert click.mean() == pytest.approx(MULTITASK_CLICKS, abs=0.03)
    assert convert[click == 1].mean() == pytest.approx(CONVERT_AMONG_CLICKS, abs=0.015)
    assert not np.any((convert == 1) & (click == 0))
    assert truth.tasks["positive_ratio"]["convert"] == pytest.approx(convert.mean())
    assert len(truth.tasks["signal_fields"]["convert"]) == 4
    written = json.loads((tmp_path / "mt.csv.truth.json").read_text())
    assert written["tasks"] == truth.tasks
    with pytest.raises(ConfigError):
        generate(tmp_path / "three.csv", 100, tasks=3)
    # one task: the truth has no tasks key
    generate(tmp_path / "one.txt", 500, seed=2)
    assert "tasks" not in json.loads((tmp_path / "one.txt.truth.json").read_text())


# -- models ------------------------------------------------------------------------------------
CARDS = [6, 9, 11]


def small(name: str, tasks: int) -> ModelConfig:
    return ModelConfig(name, embed_dim=4, mlp_dims=(8, 5), dropout=0.0, cross_layers=1, tasks=tasks)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes(name: str) -> None:
    x = torch.stack([torch.randint(0, c, (7,)) for c in CARDS], dim=1)
    widths = torch.tensor([[4, 2, 1], [3, 3, 3]])
    for tasks, shape, cand_shape in ((1, (7,), (2, 7)), (2, (7, 2), (2, 7, 2)), (3, (7, 3), (2, 7, 3))):
        model = build_model(CARDS, small(name, tasks)).eval()
        assert model(x).shape == shape
        cands = model.forward_candidates(x, widths)
        assert cands.shape == cand_shape
        assert torch.allclose(cands[1], model(x, widths[1]), atol=1e-5)  # the shared-work path agrees


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_task_is_the_one_task_model_with_its_own_last_layer(name: str) -> None:
    """Shared bottom: task ``k`` of a two-task model is exactly a one-task model over the same
    embeddings and hidden layers whose last layer (and bias) is task ``k``'s slice."""
    torch.manual_seed(0)
    two = build_model(CARDS, small(name, 2)).eval()
    x = torch.stack([torch.randint(0, c, (9,)) for c in CARDS], dim=1)
    both = two(x)
    for k in range(2):
        one = build_model(CARDS, small(name, 1)).eval()
        target = one.state_dict()
        state = {}
        for key, value in two.state_dict().items():
            want = target[key].shape
            if value.shape == want:
                state[key] = value
            elif want == torch.Size([]):
                state[key] = value[k]
            else:
                assert value.shape[0] == 2 and value.shape[1:] == want[1:], key
                state[key] = value[k : k + 1]
        one.load_state_dict(state)
        assert torch.allclose(one(x), both[:, k], atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_task_logits_bit_for_bit(name: str) -> None:
    """One task: the logits are the one-logit formulas of every backbone, to the last bit (the
    order of DeepFM's sum included), so one-task training runs are unchanged."""
    from optembed.layers.interactions import fm_second_order

    torch.manual_seed(1)
    model = build_model(CARDS, small(name, 1), "none").eval()
    x = torch.stack([torch.randint(0, c, (16,)) for c in CARDS], dim=1)
    ids = model.embedder.ids(x)
    emb = model.embedder.lookup(ids, None)
    flat = emb.flatten(1)
    with torch.no_grad():
        if name == "fnn":
            want = model.mlp(flat).squeeze(-1)
        elif name == "deepfm":
            want = model.bias + model.linear(ids).sum(dim=(1, 2)) + fm_second_order(emb) + model.mlp(flat).squeeze(-1)
        elif name == "dcn":
            want = model.out(torch.cat([model.cross(flat), model.deep(flat)], dim=1)).squeeze(-1)
        else:
            want = model.mlp(torch.cat([flat, model.products(emb)], dim=1)).squeeze(-1)
        assert torch.equal(model(x), want)


def test_one_task_model_unchanged() -> None:
    model = build_model(CARDS, small("deepfm", 1))
    assert model.bias.shape == () and model.mlp.layers[-1].out_features == 1
    assert "tasks" not in small("fnn", 1).to_dict() and small("fnn", 2).to_dict()["tasks"] == 2
    assert ModelConfig.from_dict(small("fnn", 2).to_dict()).tasks == 2
    with pytest.raises(ConfigError):
        ModelConfig("fnn", tasks=0)


def test_single_task_fingerprints_unchanged() -> None:
    assert "tasks" not in fingerprint_params(ModelConfig("dcn"))
    assert fingerprint_params(ModelConfig("dcn", tasks=2))["tasks"] == 2
    assert "task_weights" not in TrainConfig().to_params()
    assert TrainConfig(task_weights=[1.0, 0.5]).to_params()["task_weights"] == [1.0, 0.5]
    assert "task_weights" not in TrainConfig(task_weights=[]).to_params()  # a JSON list reads back as ()


# -- the loss ----------------------------------------------------------------------------------
def _bce(z: float, y: float) -> float:
    p = 1.0 / (1.0 + np.exp(-z))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_weighted_loss_against_hand_computation() -> None:
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, -2.5]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    per_task = [np.mean([_bce(float(logits[i, t]), float(labels[i, t])) for i in range(3)]) for t in range(2)]
    weights = torch.tensor([1.0, 4.0])
    assert float(task_bce(logits, labels, weights)) == pytest.approx(per_task[0] + 4.0 * per_task[1], rel=1e-9)
    assert float(task_bce(logits, labels)) == pytest.approx(per_task[0] + per_task[1], rel=1e-9)
    summed = float(task_bce(logits, labels, weights, reduction="sum"))
    assert summed == pytest.approx(3 * (per_task[0] + 4.0 * per_task[1]), rel=1e-9)
    # gradients: d/dz of w_t * mean_i BCE = w_t * (sigmoid(z) - y) / rows
    z = logits.clone().requires_grad_(True)
    task_bce(z, labels, weights).backward()
    expected = (torch.sigmoid(logits) - labels) * weights.double() / 3
    assert torch.allclose(z.grad, expected, atol=1e-12)
    # one task: the plain mean BCE
    one = float(task_bce(logits[:, 0], labels[:, 0]))
    assert one == pytest.approx(per_task[0], rel=1e-9)
    with pytest.raises(ConfigError):
        task_bce(logits, labels[:, 0])


def test_task_weights_validated() -> None:
    from optembed.training.trainer import Trainer

    for bad in ((-1.0, 1.0), (0.0, 0.0), (float("nan"), 1.0)):
        with pytest.raises(ConfigError):
            TrainConfig(task_weights=bad).validate()
    with pytest.raises(ConfigError, match="3 weights"):
        Trainer(build_model(CARDS, small("fnn", 2)), TrainConfig(task_weights=(1.0, 1.0, 1.0)), torch.device("cpu"))


# -- training ----------------------------------------------------------------------------------
def test_training_learns_both_planted_tasks(two_label: tuple[Path, list[list[object]]]) -> None:
    from optembed.metrics import auc
    from optembed.training.trainer import Trainer

    out, _ = two_label
    names = ["a", "b", "c"]
    cards = [f["cardinality"] for f in json.loads((out / "schema.json").read_text())["fields"]]
    splits = {
        s: read_split(out / f"{s}.parquet", names, ["label", "label_1"], tasks=["click", "convert"])
        for s in ("train", "val", "test")
    }
    torch.manual_seed(0)
    model = build_model(cards, ModelConfig("fnn", embed_dim=4, mlp_dims=(16,), dropout=0.0, tasks=2), "none")
    cfg = TrainConfig(epochs=6, batch_size=256, lr=0.01, patience=0, lr_decay=1.0, task_weights=(1.0, 3.0), alpha=0.0)
    result = Trainer(model, cfg, torch.device("cpu")).fit(splits["train"], splits["val"], splits["test"])
    for record in result.history:
        assert {"val_auc_click", "val_logloss_click", "val_auc_convert", "val_logloss_convert"} <= set(record)
        assert record["val_auc"] == record["val_auc_click"] and record["val_logloss"] == record["val_logloss_click"]
    best = result.best_metrics()
    assert best["test_auc_click"] > 0.65 and best["test_auc_convert"] > 0.65
    assert best["test_auc"] == best["test_auc_click"]
    # the per-task numbers are the metrics of each column of the logits
    model.load_state_dict(result.best_state)
    model.eval()
    with torch.no_grad():
        logits = model(splits["test"].x)
    assert auc(splits["test"].y[:, 1], logits[:, 1]) == pytest.approx(best["test_auc_convert"])
    # each head learned its own task: the conversion's signal in b is not the click's, so the
    # conversion head ranks the conversions better than the click head does
    test = splits["test"]
    assert auc(test.y[:, 1], logits[:, 1]) > auc(test.y[:, 1], logits[:, 0]) + 0.05


# -- the stages --------------------------------------------------------------------------------
def test_stages_carry_every_task(tmp_path: Path) -> None:
    """preprocess -> supernet -> retrain (full) -> evaluate on two labels: one logit per task all
    the way, each task's metrics in the manifests and in metrics.json's rows."""
    from pipelines import evaluate, preprocess as pre_stage, retrain, supernet
    from pipelines.store import Store

    store = Store(tmp_path / "artifacts")
    src = write_csv(tmp_path / "conv.csv", planted_rows(6000, seed=3))
    pre = pre_stage.run(pre_stage.PreprocessStage(src, PreprocessConfig(fmt="csv", label="click,convert")), store)
    model = ModelConfig("fnn", embed_dim=4, mlp_dims=(16,), dropout=0.0)
    train = TrainConfig(epochs=3, batch_size=256, lr=0.01, patience=0, lr_decay=1.0, alpha=0.0, task_weights=(1.0, 3.0))
    sn = supernet.run(supernet.SupernetStage(model=model, mode="optembed", train=train, device="cpu"), store)
    assert sn.params["model"]["tasks"] == 2 and set(sn.metrics["tasks"]) == {"click", "convert"}
    assert sn.metrics["tasks"]["click"]["test_auc"] == sn.metrics["test_auc"]
    # the search scores every task, one tolerance for all or one per task: a count that does not
    # match is refused in one line before any work
    from optembed.evolution import EvolutionConfig
    from pipelines import search

    three = EvolutionConfig(max_auc_drop=(0.001, 0.002, 0.003))
    with pytest.raises(ConfigError, match=f"gives 3 tolerances but supernet {sn.fingerprint} predicts 2 tasks"):
        search.run(search.SearchStage(source=sn.fingerprint, evolution=three, device="cpu"), store)
    # OptEmbed-E: re-trained from the supernet, its row mask applied, the compact model kept;
    # its splits streamed from Parquet with every label
    warm = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=train, device="cpu", stream=True), store)
    assert set(warm.metrics["tasks"]) == {"click", "convert"} and warm.metrics["streamed_splits"] == ["train", "val", "test"]
    assert warm.metrics["tasks"]["convert"]["test_auc"] > 0.65
    rt = retrain.run(retrain.RetrainStage(source=pre.fingerprint, full=True, model=model, train=train, device="cpu"), store)
    assert rt.metrics["tasks"]["convert"]["test_auc"] > 0.65 and rt.metrics["tasks"]["click"]["test_auc"] > 0.6
    ev = evaluate.run(evaluate.EvaluateStage(sources=[rt.fingerprint, warm.fingerprint], device="cpu", latency=False), store)
    rows = sorted(json.loads(ev.output("metrics").read_text())["models"], key=lambda r: r["id"] != rt.fingerprint)
    assert len(rows) == 2 and all(set(r["tasks"]) == {"click", "convert"} for r in rows)
    assert rows[0]["tasks"]["click"]["test_auc"] == pytest.approx(rows[0]["test_auc"])
    assert rows[0]["tasks"]["convert"]["test_auc"] == pytest.approx(rt.metrics["tasks"]["convert"]["test_auc"])
    assert rows[0]["tasks"]["convert"]["test_logloss"] == pytest.approx(rt.metrics["tasks"]["convert"]["test_logloss"])


def test_streamed_split_carries_every_label(tmp_path: Path) -> None:
    """A split too large for memory streams with all its labels: with a buffer holding it the
    batches are the in-memory ones; with a small one every row keeps its own labels."""
    import pyarrow as pa

    from optembed.data.stream import StreamSplit

    rng = np.random.default_rng(4)
    n = 900
    x = rng.integers(0, 1000, (n, 2)).astype(np.int32)
    x[:, 0] = np.arange(n)  # a row key
    y = np.stack([x[:, 0] % 2, (x[:, 0] % 3 == 0)], axis=1).astype(np.int8)  # labels that follow the key
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"label": y[:, 0], "label_1": y[:, 1], "f0": x[:, 0], "f1": x[:, 1]}), path, row_group_size=100)
    memory = read_split(path, ["f0", "f1"], ["label", "label_1"], tasks=["click", "convert"])
    whole = StreamSplit(path, ["f0", "f1"], buffer_rows=n, extra_labels=("label_1",), tasks=("click", "convert"))
    assert torch.equal(whole.y, memory.y) and whole.tasks == memory.tasks and torch.equal(whole.primary_y, memory.y[:, 0])
    cpu = torch.device("cpu")
    want = list(memory.batches(64, cpu, torch.Generator().manual_seed(5), shuffle=True))
    got = list(whole.batches(64, cpu, torch.Generator().manual_seed(5), shuffle=True))
    assert len(got) == len(want) and all(torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]) for g, w in zip(got, want))
    small = StreamSplit(path, ["f0", "f1"], buffer_rows=150, extra_labels=("label_1",)).slice(30, 800)
    batches = list(small.batches(64, cpu, torch.Generator().manual_seed(6), shuffle=True))
    keys = torch.cat([b[0][:, 0] for b in batches]).long()
    labels = torch.cat([b[1] for b in batches])
    assert labels.shape == (770, 2) and sorted(keys.tolist()) == list(range(30, 800))
    assert torch.equal(labels[:, 0], (keys % 2).float()) and torch.equal(labels[:, 1], (keys % 3 == 0).float())
