"""retrain: fixed masks, the compact export equals the masked model, variants and errors."""

from __future__ import annotations

from dataclasses import replace

import json

import pytest
import torch

from optembed.errors import ArtifactError, ConfigError
from optembed.models.checkpoint import load_model
from optembed.models.checkpoint import load_model
from optembed.models.compact import export_compact
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from pipeline_fixtures import STRONG_PRUNING, small_supernet, synthetic_preprocess
from pipelines import retrain, supernet
from pipelines.readers import load_row_mask

FAST = TrainConfig(epochs=1, batch_size=512)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    store, pre, truth = synthetic_preprocess(tmp_path_factory.mktemp("rt"), rows=8000)
    sn = small_supernet(store, "prune-only", epochs=2, **STRONG_PRUNING)
    return store, pre, sn


def random_ids(cards: list[int], n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)


@pytest.mark.parametrize(
    "name, width_list", [("fnn", [1, 8, 3, 5, 2]), ("deepfm", [1, 8, 3, 5, 2]), ("deepfm", [3, 8, 3, 1, 3]), ("dcn", [2, 2, 2, 2, 2]), ("ipnn", [1, 8, 3, 5, 2])]
)
def test_compact_equals_masked_model(name: str, width_list: list[int]) -> None:
    torch.manual_seed(1)
    cards = [9, 2, 40, 6, 13]
    model = build_model(cards, ModelConfig(name, embed_dim=8, mlp_dims=(16, 8)), "none")
    keep = torch.rand(sum(cards), generator=torch.Generator().manual_seed(2)) > 0.5
    widths = torch.tensor(width_list)
    model.embedder.set_fixed_masks(keep, widths)
    model.train()
    model(random_ids(cards, 256, 3)).sum().backward()  # BatchNorm statistics move
    model.eval()
    compact = export_compact(model, keep, widths)
    x = random_ids(cards, 500, 4)
    # the same embeddings; the network's first layer reads the nonzero columns only (another sum order)
    assert torch.equal(model.embedder(x), compact.embedder(x))
    assert torch.allclose(model(x), compact(x), atol=1e-6)
    assert torch.allclose(model(x[:5]), compact(x[:5]), atol=1e-6)
    ids = compact.embedder.ids(x)  # the serving lookup of exported graphs reads the same values
    assert torch.equal(compact.embedder.serving_lookup()(x)[1], compact.embedder.lookup(ids))
    for f, w in enumerate(width_list):  # each field's table is its own (kept, D_f) block
        assert compact.embedder.table(f).shape[1] == w
    assert compact.embedder.field_widths() == widths.tolist()
    kept = [int(keep[o : o + c].sum() + (0 if keep[o] else 1)) for o, c in zip(model.embedder.embedding.offsets.tolist(), cards)]
    assert compact.embedder.field_rows() == kept
    assert compact.embedder.kept_params() == sum(k * w for k, w in zip(kept, widths.tolist()))
    # pruned ids behave exactly like the field's OOV id
    pruned = (~keep[: cards[0]]).nonzero().squeeze(1)
    if pruned.numel():
        x2 = x.clone()
        x2[:, 0] = pruned[0]
        x3 = x.clone()
        x3[:, 0] = 0
        assert torch.equal(compact(x2), compact(x3))


def test_retrain_from_supernet_trains_the_compact_tables(prepared, tmp_path) -> None:
    store, pre, sn = prepared
    m = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=FAST, device="cpu"), store)
    assert m.metrics["variant"] == "optembed-e"
    assert m.upstream == {"supernet": sn.fingerprint, "preprocess": pre.fingerprint}
    assert m.metrics["trained_compact"] and m.outputs["model"] == m.outputs["compact"] == "compact.pt"
    compact, payload = load_model(m.output("compact"))
    assert compact.embedder.kind == "compact" and payload["extra"]["variant"] == "optembed-e"
    sn_kept = load_row_mask(sn)["kept_per_field"]
    assert all(k in (s, s + 1) for k, s in zip(compact.embedder.field_rows(), sn_kept))  # + the OOV row when pruned
    assert m.metrics["sparsity"] > 0
    assert m.metrics["embedding_params"] == compact.embedder.kept_params()


def test_retrain_with_a_row_optimizer_trains_the_masked_table(prepared, tmp_path) -> None:
    """Row-wise optimizers (and --freq-lr, re-drawn tables) work on the full table's rows: the
    masked table trains and its compact slice is exported beside it, the same predictions."""
    store, pre, sn = prepared
    train = replace(FAST, embedding_optimizer="rowwise-adagrad")
    m = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=train, device="cpu"), store)
    assert not m.metrics["trained_compact"] and m.outputs["model"] == "model.pt"
    compact, payload = load_model(m.output("compact"))
    masked, _ = load_model(m.output("model"))
    extra = torch.load(m.output("model"), weights_only=True)["extra"]
    masked.embedder.set_fixed_masks(extra["keep"], torch.tensor(extra["widths"]))
    masked.eval()
    x = random_ids(list(masked.embedder.embedding.cardinalities), 300, 5)
    assert torch.allclose(masked(x), compact(x), atol=1e-6)
    assert m.metrics["compact_bytes"] < m.metrics["dense_bytes"]


def test_retrain_full_is_original(prepared) -> None:
    store, pre, sn = prepared
    m = retrain.run(retrain.RetrainStage(source=sn.fingerprint, full=True, train=FAST, device="cpu"), store)
    assert m.metrics["variant"] == "original" and m.metrics["sparsity"] == 0.0
    model_cfg = ModelConfig("fnn", embed_dim=4, mlp_dims=(8,))
    m2 = retrain.run(
        retrain.RetrainStage(source=pre.fingerprint, full=True, train=FAST, model=model_cfg, device="cpu"), store
    )
    assert m2.params["model"]["name"] == "fnn"


def test_retrain_rewind_uses_supernet_init(prepared) -> None:
    store, _, sn = prepared
    m = retrain.run(retrain.RetrainStage(source=sn.fingerprint, init="rewind", train=FAST, device="cpu"), store)
    assert m.params["init"] == "rewind" and m.fingerprint != retrain.run(
        retrain.RetrainStage(source=sn.fingerprint, train=FAST, device="cpu"), store
    ).fingerprint


def test_retrain_errors(prepared, cli) -> None:
    store, pre, sn = prepared
    with pytest.raises(ArtifactError, match="expected search or supernet"):
        retrain.run(retrain.RetrainStage(source=pre.fingerprint, train=FAST), store)
    with pytest.raises(ConfigError, match="unknown --init"):
        retrain.run(retrain.RetrainStage(source=sn.fingerprint, init="warm", train=FAST), store)
    res = cli("retrain", "--artifacts", store.root, "--from", pre.fingerprint)
    assert res.exit_code == 2 and "expected search or supernet" in res.stderr
    ok = cli("retrain", "--artifacts", store.root, "--from", sn.fingerprint, "--epochs", "1", "--json", "--device", "cpu",
             "--lr", "1e-2", "--amp", "none")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["stage"] == "retrain"
    # a diverging run: one line naming where and the loss, exit 2, nothing published
    before = sorted(p.name for p in (store.root / "retrain").iterdir())
    bad = cli("retrain", "--artifacts", store.root, "--from", sn.fingerprint, "--epochs", "1", "--device", "cpu", "--lr", "1e6")
    lines = [l for l in bad.stderr.splitlines() if l.strip()]
    # the warm start (--init auto -> supernet) reports the starting weights' validation first
    assert lines[0].startswith("retrain: epoch 0 (the starting weights)"), bad.output
    assert bad.exit_code == 2 and len(lines) == 2 and lines[1].startswith("error: "), bad.output
    assert "at epoch 1, step" in lines[1] and "try a lower --lr (now 1e+06)" in lines[1], lines[1]
    assert sorted(p.name for p in (store.root / "retrain").iterdir()) == before
