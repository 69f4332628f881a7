"""The QR and PEP baselines: lookups against hand computations, sizes, the stage and evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from optembed.embedders.pep import PEPEmbedder, csr_bytes
from optembed.embedders.qr import QREmbedder
from optembed.errors import ConfigError
from optembed.models.checkpoint import load_model, save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from pipeline_fixtures import synthetic_preprocess
from pipelines import baseline, evaluate

CARDS = [300, 3, 7]
CFG = ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,))


@pytest.mark.parametrize("operation", ["mult", "add", "concat"])
def test_qr_reads_quotient_and_remainder_rows_by_hand(operation: str) -> None:
    emb = QREmbedder(CARDS, 4, collisions=3, operation=operation, min_rows=5)
    assert emb.split_mask == [True, False, True]
    x = torch.tensor([[0, 2, 6], [299, 1, 4], [151, 0, 5]])
    out = emb(x)
    q, r, whole = emb.quotient.weight, emb.remainder.weight, emb.whole.weight
    q_rows, r_rows = [0, math.ceil(300 / 3)], [0, 3]  # quotient / remainder table offsets: fields 0 and 2
    for b in range(3):
        for f, k in ((0, 0), (2, 1)):
            v = int(x[b, f])
            qv, rv = q[q_rows[k] + v // 3], r[r_rows[k] + v % 3]
            expected = {"mult": qv * rv, "add": qv + rv, "concat": torch.cat([qv, rv])}[operation]
            assert torch.equal(out[b, f], expected)
        assert torch.equal(out[b, 1], whole[int(x[b, 1])])  # the small field stays whole
    # ids of a field never share both rows: distinct ids, distinct (quotient, remainder) pairs
    ids = torch.arange(300)
    assert len({(int(i) // 3, int(i) % 3) for i in ids}) == 300


def test_qr_sizes_and_half_sparsity() -> None:
    emb = QREmbedder([1000, 2000, 50], 8, collisions=2, min_rows=100)
    stored = (500 + 1000) * 8 + (2 + 2) * 8 + 50 * 8
    assert emb.kept_params() == stored
    model = build_model([1000, 2000, 50], ModelConfig("fnn", embed_dim=8, mlp_dims=(8,)), embedder=emb)
    size = model.size_report()
    assert size["sparsity"] == pytest.approx(1 - stored / (3050 * 8))
    assert 0.45 < size["sparsity"] < 0.5
    assert size["embedding_bytes"] == stored * 4
    with pytest.raises(ConfigError):
        QREmbedder(CARDS, 4, collisions=1)
    with pytest.raises(ConfigError):
        QREmbedder(CARDS, 4, operation="max")


def test_pep_soft_threshold_by_hand() -> None:
    emb = PEPEmbedder(CARDS, 4, granularity="field", threshold_init=0.0)
    with torch.no_grad():
        emb.s.copy_(torch.tensor([[-1.0], [0.0], [2.0]]))
    x = torch.tensor([[5, 1, 6], [299, 2, 0]])
    out = emb(x)
    w = emb.embedding.weight
    offsets = [0, 300, 303]
    for b in range(2):
        for f in range(3):
            g = 1 / (1 + math.exp(-float(emb.s.detach()[f, 0])))
            for d in range(4):
                e = float(w[offsets[f] + int(x[b, f]), d])
                expected = math.copysign(max(abs(e) - g, 0.0), e) if abs(e) > g else 0.0
                assert float(out[b, f, d]) == pytest.approx(expected, abs=1e-7)


def test_pep_granularities_and_sparse_bytes() -> None:
    shapes = {"global": (1, 1), "dim": (1, 4), "field": (3, 1), "field-dim": (3, 4)}
    for granularity, shape in shapes.items():
        emb = PEPEmbedder(CARDS, 4, granularity=granularity)
        assert tuple(emb.s.shape) == shape
        assert emb.sparsity() < 0.01  # sigmoid(-15) ~ 3e-7 prunes almost nothing of N(0, 0.01^2)
    emb = PEPEmbedder(CARDS, 4, granularity="global", threshold_init=0.0)
    with torch.no_grad():
        emb.embedding.weight.fill_(0.2)
        emb.embedding.weight[:10] = 0.9  # only these rows stay above sigmoid(0) = 0.5
    assert emb.kept_params() == 40
    assert emb.sparsity() == pytest.approx(1 - 40 / (310 * 4))
    assert emb.memory_bytes()["embedding"] == csr_bytes(40, 310, 4) == 40 * 5 + 311 * 4
    assert emb.field_rows() == [10, 0, 0]
    assert emb.search_done()  # target 0.5 reached


def test_pep_mask_retraining_and_model_file(tmp_path: Path) -> None:
    emb = PEPEmbedder(CARDS, 4, masked=True)
    mask = torch.rand(310, 4, generator=torch.Generator().manual_seed(0)) < 0.3
    emb.set_mask(mask)
    model = build_model(CARDS, CFG, embedder=emb)
    x = torch.tensor([[5, 1, 6]])
    out = model.embedder(x)
    assert torch.equal(out[0, 0], emb.embedding.weight[5] * mask[5])
    assert model.embedder.excluded_params() == [emb.s]  # the thresholds no longer train
    save_model(tmp_path / "m.pt", model, "none", ["a", "b", "c"])
    loaded, payload = load_model(tmp_path / "m.pt")
    assert payload["embedder"]["kind"] == "pep" and payload["embedder"]["masked"]
    assert torch.equal(loaded.embedder.mask, mask)
    model.eval()
    loaded.eval()
    xs = torch.tensor([[5, 1, 6], [0, 0, 0], [299, 2, 3]])
    assert torch.equal(model(xs), loaded(xs))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    store, pre, truth = synthetic_preprocess(tmp_path_factory.mktemp("bl"), rows=6000)
    return store, pre


SMALL = ModelConfig("deepfm", embed_dim=8, mlp_dims=(16,))
FAST = TrainConfig(epochs=2, batch_size=512, check_every=1)


def test_qr_and_pep_stages_in_evaluate(prepared) -> None:
    store, pre = prepared
    qr = baseline.run(baseline.BaselineStage("qr", SMALL, FAST, {"min_rows": 10}, device="cpu"), store)
    pep = baseline.run(
        baseline.BaselineStage("pep", SMALL, FAST, {"threshold_init": -4.0, "target_sparsity": 0.05}, device="cpu"),
        store,
    )
    assert pep.metrics["target_reached"] and pep.metrics["search_sparsity"] >= 0.05
    assert pep.metrics["sparsity"] == pytest.approx(pep.metrics["search_sparsity"])  # the ticket's mask is kept
    assert 0.3 < qr.metrics["sparsity"] < 0.5
    ev = evaluate.run(evaluate.EvaluateStage(sources=[qr.fingerprint, pep.fingerprint], device="cpu", latency=False), store)
    rows = {r["variant"]: r for r in json.loads(ev.output("metrics").read_text())["models"]}
    assert set(rows) == {"qr", "pep"}
    for art, row in ((qr, rows["qr"]), (pep, rows["pep"])):
        assert row["test_auc"] == pytest.approx(art.metrics["test_auc"], abs=1e-6)
        assert row["sparsity"] == pytest.approx(art.metrics["sparsity"])
        assert row["embedding_bytes"] == art.metrics["embedding_bytes"]
    assert "| qr |" in ev.output("report").read_text()
    with pytest.raises(ConfigError):
        baseline.BaselineStage("qr", SMALL, FAST, {"colisions": 2}).validate()


def test_run_chain_with_baseline_variants(prepared, tmp_path: Path) -> None:
    from optembed.data.preprocess import PreprocessConfig
    from pipelines import chain
    from pipelines.store import Store

    store, _ = prepared
    raw = next(store.root.parent.glob("synth-*.txt"))
    cfg = chain.ChainConfig(
        data=raw, preprocess=PreprocessConfig(), model=SMALL, retrain=TrainConfig(epochs=1, batch_size=512),
        baseline={"qr": {"min_rows": 10, "operation": "add"}}, variants=("qr",), device="cpu", latency=False,
    )
    done = chain.run(cfg, Store(tmp_path / "a"))
    assert done["baseline qr"].params["options"] == {"min_rows": 10, "operation": "add"}
    rows = json.loads(done["evaluate"].output("metrics").read_text())["models"]
    assert [r["variant"] for r in rows] == ["qr"]
    with pytest.raises(ConfigError, match="unknown variant"):
        chain.ChainConfig(data=raw, variants=("autodim-x",)).validate()
    with pytest.raises(ConfigError, match="baseline"):
        chain.ChainConfig(data=raw, variants=("qr",), baseline={"qrr": {}}).validate()
