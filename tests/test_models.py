"""Backbones x modes, interaction operators against brute force, candidates, checkpoints."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import torch

from optembed.errors import ConfigError
from optembed.layers import CrossNetwork, FieldEmbedding, PairwiseInnerProduct, fm_second_order
from optembed.masks import apply_candidates, sample_widths
from optembed.models import MODEL_NAMES, MODES, CTRModel, ModelConfig, SupernetMode, build_model

CARDS = [5, 3, 7, 4]
DIM = 8
BATCH = 16


def small_cfg(name: str, **kw: Any) -> ModelConfig:
    return ModelConfig(name, embed_dim=DIM, mlp_dims=(16, 8), cross_layers=2, **kw)


def random_ids(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (batch,), generator=g) for c in CARDS], dim=1)


def trained_model(name: str, mode: str = "optembed") -> CTRModel:
    """A model after one optimizer step, so batch-norm statistics are not trivial."""
    torch.manual_seed(0)
    model = build_model(CARDS, small_cfg(name), mode)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = random_ids(64, seed=1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), (x[:, 0] % 2).float())
    loss.backward()
    opt.step()
    return model.eval()


@pytest.mark.parametrize(("name", "mode"), list(itertools.product(MODEL_NAMES, MODES)))
def test_every_backbone_and_mode_trains(name: str, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, small_cfg(name), mode)
    parsed = SupernetMode.parse(mode)
    assert (model.embedder.prune_rows, model.sample_dims) == (parsed.prune_rows, parsed.sample_dims)
    assert build_model(CARDS, small_cfg(name), parsed).embedder.spec() == model.embedder.spec()
    x = random_ids()
    widths = sample_widths(BATCH, len(CARDS), DIM) if model.sample_dims else None
    logits = model(x, widths)
    assert logits.shape == (BATCH,)
    assert torch.isfinite(logits).all()
    loss = logits.mean() + 1e-4 * model.embedder.pruner.regularizer()
    loss.backward()
    assert model.embedder.embedding.weight.grad is not None
    assert torch.isfinite(model.embedder.embedding.weight.grad).all()
    t_grad = model.embedder.pruner.threshold.grad
    assert t_grad is not None
    if model.embedder.prune_rows:
        # loss gradient through the mask adds to the regulariser's -1e-4 * exp(-t)
        assert not torch.allclose(t_grad, torch.full_like(t_grad, -1e-4))


def test_modes_and_errors() -> None:
    flags = {"optembed": (True, True), "prune-only": (True, False), "dims-only": (False, True), "none": (False, False)}
    assert MODES == tuple(flags)
    for name, (prune_rows, sample_dims) in flags.items():
        mode = SupernetMode.parse(name)
        assert (mode.name, mode.prune_rows, mode.sample_dims) == (name, prune_rows, sample_dims)
        assert str(mode) == name and mode.searchable == (prune_rows or sample_dims)
    with pytest.raises(ConfigError, match="choose one of optembed, prune-only, dims-only, none"):
        SupernetMode.parse("everything")
    with pytest.raises(ConfigError):
        ModelConfig("widedeep")
    with pytest.raises(ConfigError):
        ModelConfig("fnn", embed_dim=0)
    with pytest.raises(ConfigError):
        ModelConfig("fnn", mlp_dims=(16, 0))
    with pytest.raises(ConfigError):
        ModelConfig("dcn", cross_layers=0)
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"name": "fnn", "embed_size": 8})
    with pytest.raises(ConfigError):
        FieldEmbedding([3, 0], 4)


def test_field_embedding_offsets() -> None:
    emb = FieldEmbedding(CARDS, DIM)
    assert emb.weight.shape == (sum(CARDS), DIM)
    assert emb.offsets.tolist() == [0, 5, 8, 15]
    assert emb.field_of_row.tolist() == [0] * 5 + [1] * 3 + [2] * 7 + [3] * 4
    x = random_ids()
    out = emb(x)
    for f in range(len(CARDS)):
        assert torch.equal(out[:, f], emb.weight[emb.offsets[f] + x[:, f]])
    emb.sparse = True
    emb(x).sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse


def test_fm_second_order_is_sum_over_pairs() -> None:
    e = torch.randn(6, 5, 4, dtype=torch.float64)
    brute = sum((e[:, i] * e[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    assert torch.allclose(fm_second_order(e), brute)


def test_deepfm_head_is_linear_plus_fm_plus_mlp() -> None:
    model = trained_model("deepfm")
    x = random_ids(seed=3)
    with torch.no_grad():
        emb = model.embedder.rows(x)
        lin = model.linear.weight[model.linear.global_ids(x)].sum(dim=(1, 2))
        pairs = sum(
            (emb[:, i] * emb[:, j]).sum(-1) for i in range(len(CARDS)) for j in range(i + 1, len(CARDS))
        )
        expected = model.bias + lin + pairs + model.mlp(emb.flatten(1)).squeeze(-1)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_pairwise_inner_products_brute_force() -> None:
    e = torch.randn(3, 4, 5)
    out = PairwiseInnerProduct(4)(e)
    brute = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4)], dim=1)
    assert out.shape == (3, 6)
    assert torch.allclose(out, brute, atol=1e-6)


def test_one_cross_layer_by_hand() -> None:
    cross = CrossNetwork(3, 1)
    with torch.no_grad():
        cross.weights[0].copy_(torch.tensor([1.0, 0.0, -1.0]))
        cross.biases[0].copy_(torch.tensor([0.5, 0.5, 0.5]))
    x0 = torch.tensor([[2.0, 3.0, 1.0]])
    # w . x0 = 2 - 1 = 1; x1 = x0 * 1 + b + x0 = [4.5, 6.5, 2.5]
    assert torch.allclose(cross(x0), torch.tensor([[4.5, 6.5, 2.5]]))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_full_widths_equal_no_widths(name: str) -> None:
    model = trained_model(name)
    x = random_ids(seed=4)
    with torch.no_grad():
        base = model(x)
        assert torch.equal(model(x, torch.full((len(CARDS),), DIM)), base)
        assert torch.equal(model(x, torch.full((BATCH, len(CARDS)), DIM)), base)
        assert not torch.allclose(model(x, torch.ones(len(CARDS), dtype=torch.long)), base)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_candidate_stacked_head_equals_each_candidate(name: str) -> None:
    model = trained_model(name)
    x = random_ids(seed=5)
    cands = sample_widths(3, len(CARDS), DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stacked = model.head(apply_candidates(model.embedder.rows(x), cands), x.repeat(3, 1)).view(3, BATCH)
        via_method = model.forward_candidates(x, cands)
        shared = model.forward_candidates(x, cands, block=3)  # blocks shared across candidates
        for c in range(3):
            one = model(x, cands[c])
            assert torch.allclose(stacked[c], one, atol=1e-5)
            assert torch.allclose(via_method[c], one, atol=1e-5)
            assert torch.allclose(shared[c], one, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_rebuild_from_config_and_state_dict(name: str) -> None:
    model = trained_model(name, "prune-only")
    cfg_json = json.dumps(model.cfg.to_dict())
    rebuilt = build_model(CARDS, ModelConfig.from_dict(json.loads(cfg_json)), "prune-only")
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = random_ids(seed=6)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_row_pruning_zeroes_embeddings_and_fixed_mask() -> None:
    model = build_model(CARDS, small_cfg("fnn"), "prune-only").eval()
    x = random_ids(seed=7)
    with torch.no_grad():
        model.embedder.pruner.threshold[1] = 1e6  # prune every row of field 1
        emb = model.embedder.rows(x)
        assert torch.equal(emb[:, 1], torch.zeros(BATCH, DIM))
        assert torch.equal(emb[:, 0], model.embedder.embedding(x)[:, 0])
        table = model.embedder.pruner.table_mask(model.embedder.embedding.weight, model.embedder.embedding.field_of_row)
        model.embedder.set_row_mask(table)
        model.embedder.pruner.threshold.zero_()  # the fixed mask no longer depends on thresholds
        assert torch.equal(model.embedder.rows(x), emb)
        model.embedder.set_row_mask(None)
        assert torch.equal(model.embedder.rows(x), model.embedder.embedding(x))
    assert "row_mask" not in model.state_dict()
    with pytest.raises(ConfigError):
        model.embedder.set_row_mask(torch.ones(3, dtype=torch.bool))


def test_mode_none_does_not_prune() -> None:
    model = build_model(CARDS, small_cfg("ipnn"), "none")
    x = random_ids(seed=8)
    with torch.no_grad():
        model.embedder.pruner.threshold.fill_(1e6)
        assert torch.equal(model.embedder.rows(x), model.embedder.embedding(x))
