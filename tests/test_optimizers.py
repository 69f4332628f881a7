"""Embedding optimizers, the frequency-adaptive learning rate and per-epoch re-initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.freq_lr import remapped_counts, row_scale
from optembed.training.optimizers import RowLRScale, RowWiseAdagrad, state_bytes, touched_rows
from optembed.training.trainer import Trainer, build_optimizers

CPU = torch.device("cpu")
CARDS = [30, 30, 30, 30]

# -- row-wise Adagrad against an independent dense reference ----------------------------------


def reference_rowwise_adagrad(w, acc, batches, lr, eps, wd, scale=None):
    """Dense, loop-per-row reference: the full dense gradient, rows with a nonzero lookup count."""
    w, acc = w.clone(), acc.clone()
    for ids, upstream in batches:
        g = torch.zeros_like(w)
        for i, row in enumerate(ids.tolist()):
            g[row] += upstream[i]
        for row in sorted(set(ids.tolist())):
            gr = g[row] + wd * w[row]
            acc[row] += float((gr * gr).mean())
            rate = lr * (1.0 if scale is None else float(scale[row]))
            w[row] = w[row] - rate * gr / (math.sqrt(acc[row]) + eps)
    return w, acc


def sparse_batches(rows: int, dim: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        ids = torch.randint(0, rows, (12,), generator=g)
        ids[:3] = ids[0]  # repeated ids in the batch
        out.append((ids, torch.randn(12, dim, generator=g, dtype=torch.float64)))
    return out


def run_sparse(opt_factory, w0, batches):
    w = torch.nn.Parameter(w0.clone())
    opt = opt_factory(w)
    for ids, upstream in batches:
        opt.zero_grad(set_to_none=True)
        (F.embedding(ids, w, sparse=True) * upstream).sum().backward()
        assert w.grad.is_sparse
        opt.step()
    return w.detach(), opt


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_rowwise_adagrad_matches_dense_reference(wd: float) -> None:
    w0 = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    batches = sparse_batches(10, 4, steps=6)
    lr, eps = 0.1, 1e-8
    w, opt = run_sparse(lambda p: RowWiseAdagrad([p], lr=lr, eps=eps, weight_decay=wd), w0, batches)
    ref_w, ref_acc = reference_rowwise_adagrad(w0, torch.zeros(10, dtype=torch.float64), batches, lr, eps, wd)
    assert torch.allclose(w, ref_w, atol=1e-12)
    assert torch.allclose(opt.state[next(iter(opt.state))]["sum"], ref_acc, atol=1e-12)
    untouched = sorted(set(range(10)) - {r for ids, _ in batches for r in ids.tolist()})
    assert torch.equal(w[untouched], w0[untouched])  # weight decay too touches batch rows only
    assert state_bytes(opt) == 10 * 8  # one float64 accumulator per row


def test_rowwise_adagrad_row_scale_and_dense_gradients() -> None:
    w0 = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    batches = sparse_batches(10, 4, steps=4, seed=3)
    scale = torch.linspace(0.1, 1.0, 10, dtype=torch.float64)

    def factory(p):
        opt = RowWiseAdagrad([p], lr=0.05)
        opt.set_row_scale(p, scale)
        return opt

    w, _ = run_sparse(factory, w0, batches)
    ref_w, _ = reference_rowwise_adagrad(w0, torch.zeros(10, dtype=torch.float64), batches, 0.05, 1e-8, 0.0, scale)
    assert torch.allclose(w, ref_w, atol=1e-12)
    # a dense gradient counts every row as touched; zero rows do not move
    p = torch.nn.Parameter(w0.clone())
    opt = RowWiseAdagrad([p], lr=0.05)
    (F.embedding(batches[0][0], p) * batches[0][1]).sum().backward()
    opt.step()
    ref_w, _ = reference_rowwise_adagrad(w0, torch.zeros(10, dtype=torch.float64), batches[:1], 0.05, 1e-8, 0.0)
    assert torch.allclose(p.detach(), ref_w, atol=1e-12)


def test_touched_rows_sums_repeats() -> None:
    w = torch.nn.Parameter(torch.zeros(6, 2))
    F.embedding(torch.tensor([4, 1, 4, 4]), w, sparse=True).sum().backward()
    rows, g = touched_rows(w.grad)
    assert rows.tolist() == [1, 4]
    assert g.tolist() == [[1.0, 1.0], [3.0, 3.0]]


def reference_lazy_adam(w, batches, lr, betas=(0.9, 0.999), eps=1e-8):
    """Lazy Adam written out: moments and update of the batch's rows only, per-row step as in
    torch.optim.SparseAdam (one global step count, bias correction with it)."""
    w = w.clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, (ids, upstream) in enumerate(batches, start=1):
        g = torch.zeros_like(w).index_add_(0, ids, upstream)
        rows = torch.unique(ids)
        m[rows] = betas[0] * m[rows] + (1 - betas[0]) * g[rows]
        v[rows] = betas[1] * v[rows] + (1 - betas[1]) * g[rows] ** 2
        step = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
        w[rows] -= step * m[rows] / (v[rows].sqrt() + eps)
    return w


def test_sparse_adam_wiring_matches_lazy_adam_reference() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "none")
    cfg = TrainConfig(embedding_optimizer="sparse-adam", lr=0.01)
    opts = build_optimizers(model, cfg)
    assert [type(o).__name__ for o in opts] == ["Adam", "SparseAdam"]
    tables = {id(model.embedder.embedding.weight), id(model.linear.weight)}
    assert {id(p) for p in opts[1].param_groups[0]["params"]} == tables
    assert not tables & {id(p) for p in opts[0].param_groups[0]["params"]}
    assert model.embedder.embedding.sparse and model.linear.sparse
    # the same optimizer on a bare table equals the written-out lazy Adam
    w0 = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    batches = sparse_batches(10, 4, steps=5, seed=5)
    w, _ = run_sparse(lambda p: torch.optim.SparseAdam([p], lr=0.01), w0, batches)
    assert torch.allclose(w, reference_lazy_adam(w0, batches, 0.01), atol=1e-10)


def test_dense_adam_is_the_default_grouping() -> None:
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "prune-only")
    opts = build_optimizers(model, TrainConfig())
    assert [type(o).__name__ for o in opts] == ["Adam", "SGD"]  # the thresholds: plain SGD, as in the reference
    expected = [p for p in model.parameters() if p is not model.embedder.pruner.threshold]
    grouped = [p for g in opts[0].param_groups for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in expected} and len(grouped) == len(expected)
    assert not model.embedder.embedding.sparse
    assert "embedding_optimizer" not in TrainConfig().to_params()
    assert TrainConfig(embedding_optimizer="rowwise-adagrad").to_params()["embedding_optimizer"] == "rowwise-adagrad"
    assert "freq_lr_c0" not in TrainConfig(freq_lr_c0=5.0).to_params()  # inert without --freq-lr
    assert TrainConfig(freq_lr="clip", freq_lr_c0=5.0).to_params()["freq_lr_c0"] == 5.0


# -- frequency-adaptive learning rate ------------------------------------------------------------


def test_row_scale_forms() -> None:
    counts = torch.tensor([0, 10, 100, 400, 10_000])
    clip = row_scale(counts, "clip", 100.0, 0.5)
    assert torch.allclose(clip, torch.tensor([1.0, 1.0, 1.0, 0.5, 0.1]))
    smooth = row_scale(counts, "smooth", 100.0, 1.0)
    assert torch.allclose(smooth, 1 / (1 + counts.double() / 100).float())
    remap = torch.tensor([0, 1, 0, 0, 1, 2])  # field 0: id 2 pruned -> OOV; field 1 (offset 3) keeps all
    merged = remapped_counts(torch.tensor([5, 7, 11, 1, 2, 3]), remap, torch.tensor([0, 3]), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert merged.tolist() == [16, 7, 0, 1, 2, 3]


def two_row_moves(optimizer: str, freq: str) -> tuple[float, float]:
    """How far a frequent row (count 10^6) and a rare row (count 1) move in one step of the same batch."""
    torch.manual_seed(0)
    model = build_model([4, 4], ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), batch_norm=False), "none")
    counts = torch.tensor([0, 0, 1_000_000, 1, 0, 0, 5, 5])
    cfg = TrainConfig(embedding_optimizer=optimizer, weight_decay=0.0, freq_lr=freq, freq_lr_c0=10.0, freq_lr_power=0.5)
    trainer = Trainer(model, cfg, CPU, row_counts=counts)
    before = model.embedder.embedding.weight.detach().clone()
    x = torch.tensor([[2, 2], [3, 3], [2, 3], [3, 2]], dtype=torch.int32)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    trainer.step(x, y)
    moved = (model.embedder.embedding.weight.detach() - before).norm(dim=1)
    return float(moved[2]), float(moved[3])


@pytest.mark.parametrize("optimizer", ["adam", "sparse-adam", "rowwise-adagrad"])
def test_freq_lr_slows_the_frequent_row(optimizer: str) -> None:
    freq_plain, rare_plain = two_row_moves(optimizer, "none")
    freq_scaled, rare_scaled = two_row_moves(optimizer, "clip")
    assert freq_plain > 0 and rare_plain > 0
    assert rare_scaled == pytest.approx(rare_plain, rel=1e-5)  # count 1 <= c0: full rate
    # count 10^6, c0 = 10, p = 0.5: the frequent row's step is 1/316 of its unscaled step
    assert freq_scaled == pytest.approx(freq_plain * (10 / 1e6) ** 0.5, rel=1e-4)


def test_row_lr_scale_on_dense_adam_scales_the_update() -> None:
    w = torch.nn.Parameter(torch.randn(5, 3))
    other = torch.nn.Parameter(w.detach().clone())
    scale = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0])
    opt_a, opt_b = torch.optim.Adam([w], lr=0.1, weight_decay=0.01), torch.optim.Adam([other], lr=0.1, weight_decay=0.01)
    scaled = RowLRScale(opt_a, {w: scale})
    for p in (w, other):
        p.grad = torch.ones_like(p)
    before = other.detach().clone()
    scaled.step()
    opt_b.step()
    assert torch.allclose(w.detach() - before, scale[:, None] * (other.detach() - before), atol=1e-6)


def test_freq_lr_without_counts_is_a_config_error() -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    with pytest.raises(ConfigError, match="--freq-lr needs the id counts"):
        Trainer(model, TrainConfig(freq_lr="clip"), CPU)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embedding_optimizer": "sgd"}, "unknown --embedding-optimizer 'sgd'"),
        ({"freq_lr": "log"}, "unknown --freq-lr 'log'"),
        ({"freq_lr": "clip", "freq_lr_c0": 0.0}, "--freq-lr-c0 must be positive"),
        ({"embedding_lr": -1.0}, "--embedding-lr must be positive"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs).validate()


def test_sparse_adam_embedding_l2_warns() -> None:
    assert TrainConfig(embedding_optimizer="sparse-adam", embedding_l2=0.01).warnings()
    assert not TrainConfig(embedding_optimizer="sparse-adam").warnings()  # auto: 0 for sparse-adam
    assert not TrainConfig(embedding_optimizer="sparse-adam", weight_decay=1e-3, embedding_l2=0.0).warnings()
    assert not TrainConfig(embedding_optimizer="rowwise-adagrad").warnings()


# -- re-initialisation after every epoch --------------------------------------------------------


def planted(n: int, seed: int) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 30, (n, 4), generator=g, dtype=torch.int32)
    y = (torch.rand(n, generator=g) < torch.sigmoid((x[:, 0] % 3).float() - 1)).float()
    return SplitTensors(x, y)


@pytest.mark.parametrize("optimizer", ["adam", "rowwise-adagrad"])
def test_reinit_redraws_embeddings_and_keeps_the_network(optimizer: str) -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "prune-only")
    cfg = TrainConfig(epochs=2, batch_size=256, patience=5, embedding_optimizer=optimizer, reinit_embeddings_each_epoch=True)
    trainer = Trainer(model, cfg, CPU)
    seen: list[dict] = []

    def snapshot(state: dict) -> None:
        seen.append({k: {n: t.clone() for n, t in state[k].items()} for k in ("model", "best_state")})

    trainer.fit(planted(2000, 1), planted(500, 2), checkpoint=snapshot)
    after, trained = seen[0]["model"], seen[0]["best_state"]  # after epoch 1: the live model, its best copy
    redraw = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1)
    expected = torch.empty(model.embedder.embedding.weight.shape).normal_(0, model.embedder.embedding.init_std, generator=redraw)
    assert torch.equal(after["embedding.weight"], expected)  # re-drawn from the seeded generator
    assert not torch.equal(trained["embedding.weight"], after["embedding.weight"])
    assert not torch.equal(trained["linear.weight"], after["linear.weight"])  # DeepFM's per-feature table too
    for key in ("mlp.layers.0.weight", "mlp.layers.1.running_mean", "bias", "pruner.threshold"):
        assert torch.equal(trained[key], after[key]), key  # the network and thresholds are kept
    assert after["pruner.threshold"].abs().sum() > 0
    # the optimizer state of the tables was dropped and rebuilt during epoch 2
    assert all(len(opt.state) > 0 for opt in trainer.optimizers if not isinstance(opt, torch.optim.SGD))  # SGD keeps none


def test_reinit_keeps_the_mlp_weights() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=256), CPU)
    trainer.fit(planted(1000, 1), planted(300, 2))
    mlp = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("embedding")}
    emb = model.embedder.embedding.weight.detach().clone()
    trainer.reinit_embeddings(1)
    assert not torch.equal(model.embedder.embedding.weight, emb)
    for k, v in model.state_dict().items():
        if k in mlp:
            assert torch.equal(v, mlp[k]), k
    assert model.embedder.embedding.weight not in trainer.optimizers[0].state


def test_table_state_bytes_per_optimizer() -> None:
    sizes = {}
    for optimizer in ("adam", "sparse-adam", "rowwise-adagrad"):
        torch.manual_seed(0)
        model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
        cfg = TrainConfig(epochs=1, batch_size=256, embedding_optimizer=optimizer, weight_decay=0.0)
        result = Trainer(model, cfg, CPU).fit(planted(1000, 1), planted(300, 2))
        sizes[optimizer] = result.optimizer_state_bytes["embedding_optimizer_state_bytes"]
    rows = sum(CARDS)
    assert sizes["rowwise-adagrad"] == rows * 4
    assert sizes["sparse-adam"] >= 2 * rows * 4 * 4  # two dense moments
    assert sizes["adam"] >= 2 * rows * 4 * 4


def test_field_embedding_reset_parameters_is_seeded() -> None:
    emb = FieldEmbedding([5, 5], 3, init_std=0.1)
    emb.reset_parameters(torch.Generator().manual_seed(7))
    first = emb.weight.detach().clone()
    emb.reset_parameters(torch.Generator().manual_seed(7))
    assert torch.equal(first, emb.weight)


def test_resume_with_reinit_and_sparse_optimizer_continues_exactly() -> None:
    def run(**kwargs):
        torch.manual_seed(0)
        model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "prune-only")
        cfg = TrainConfig(
            epochs=3, batch_size=256, patience=5, embedding_optimizer="rowwise-adagrad", freq_lr="smooth",
            reinit_embeddings_each_epoch=True,
        )
        counts = torch.arange(model.embedder.embedding.num_rows) * 10
        return Trainer(model, cfg, CPU, row_counts=counts).fit(planted(1500, 1), planted(400, 2), **kwargs)

    full = run()
    saved: list[dict] = []

    def crash_after_first(state: dict) -> None:
        saved.append(state)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=crash_after_first)
    resumed = run(resume=saved[0])
    assert [r["val_auc"] for r in resumed.history] == [r["val_auc"] for r in full.history]
    for k, v in full.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


# -- the embedding L2 regulariser ----------------------------------------------------------------


def _one_step(cfg: TrainConfig, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """The embedding table before and after one training step on a batch reading only ``ids`` of field 0."""
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), batch_norm=False), "none")
    trainer = Trainer(model, cfg, CPU)
    x = torch.tensor([[i, 0, 0, 0] for i in ids], dtype=torch.int32)
    before = model.embedder.embedding.weight.detach().clone()
    trainer.step(x, torch.ones(len(ids)))
    return before, model.embedder.embedding.weight.detach().clone(), model


def test_embedding_l2_on_dense_adam_shrinks_every_row_by_hand() -> None:
    """Dense Adam over the whole table: a row the batch does not read gets only the regulariser's
    gradient g = l2 * w, and Adam's first step moves it by lr * g / (|g| + eps) (bias-corrected
    moments m = g, v = g^2)."""
    lr, l2, eps = 1e-3, 0.05, 1e-8
    before, after, model = _one_step(TrainConfig(lr=lr, weight_decay=0.0, embedding_l2=l2), [3, 4])
    unread = model.embedder.embedding.offsets[1].item() + 7  # field 1, id 7: no batch row reads it
    g = l2 * before[unread].double()
    expected = before[unread].double() - lr * g / (g.abs() + eps)
    assert torch.allclose(after[unread].double(), expected, rtol=0, atol=1e-9)
    assert not torch.equal(after[unread], before[unread])
    # without the regulariser the same row does not move at all
    before0, after0, _ = _one_step(TrainConfig(lr=lr, weight_decay=0.0, embedding_l2=0.0), [3, 4])
    assert torch.equal(after0[unread], before0[unread])


def test_embedding_l2_is_apart_from_the_network_weight_decay() -> None:
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "none")
    opts = build_optimizers(model, TrainConfig(weight_decay=1e-4, embedding_l2=0.05))
    tables = {id(model.embedder.embedding.weight), *(id(t.weight) for t in model.additive_id_tables())}
    decay = {id(p): g["weight_decay"] for g in opts[0].param_groups for p in g["params"]}
    assert {decay[t] for t in tables} == {0.05}
    assert {v for k, v in decay.items() if k not in tables} == {1e-4}
    left_out = {id(p) for p in [*model.embedder.excluded_params(), *model.embedder.threshold_params()]}
    assert set(decay) == {id(p) for p in model.parameters()} - left_out
    # None keeps one L2 for everything (and the fingerprinted parameters of older runs)
    opts = build_optimizers(model, TrainConfig(weight_decay=1e-4))
    assert {g["weight_decay"] for g in opts[0].param_groups} == {1e-4}
    assert "embedding_l2" not in TrainConfig(embedding_l2=None).to_params()
    assert TrainConfig(embedding_l2=0.05).to_params()["embedding_l2"] == 0.05


def test_embedding_l2_with_rowwise_adagrad_touches_only_the_batch_rows() -> None:
    cfg = TrainConfig(lr=1e-2, weight_decay=0.0, embedding_l2=0.05, embedding_optimizer="rowwise-adagrad")
    before, after, model = _one_step(cfg, [3, 4])
    unread = model.embedder.embedding.offsets[1].item() + 7
    assert torch.equal(after[unread], before[unread])
    assert not torch.equal(after[3], before[3])


def test_dropout_is_off_at_evaluation() -> None:
    """Dropout changes training outputs and none at evaluation: eval mode equals the same network
    with its dropout layers taken out."""
    import copy

    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(16, 16), dropout=0.5), "none")
    plain = copy.deepcopy(model)
    layers = plain.mlp.layers
    dropped = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Dropout)]
    assert len(dropped) == 2
    for i in dropped:
        layers[i] = torch.nn.Identity()
    x = torch.randint(0, 30, (64, 4), dtype=torch.int32)
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


def test_lr_decay_scales_network_and_tables_not_thresholds() -> None:
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,)), "prune-only")
    cfg = TrainConfig(lr=1e-3, threshold_lr=1e-4, lr_decay=0.1, embedding_optimizer="rowwise-adagrad", embedding_lr=1e-2)
    trainer = Trainer(model, cfg, CPU)
    trainer.decay_lr()
    lrs = [[g["lr"] for g in opt.param_groups] for opt in trainer.optimizers]
    assert [type(o).__name__ for o in trainer.optimizers] == ["Adam", "RowWiseAdagrad", "SGD"]
    assert lrs[0] == [pytest.approx(1e-4)] and lrs[1] == [pytest.approx(1e-3)] and lrs[2] == [1e-4]
    for _ in range(5):
        trainer.decay_lr()
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1e-6  # the floor
    off = Trainer(build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none"), TrainConfig(lr=1e-3, lr_decay=1.0), CPU)
    off.decay_lr()
    assert {g["lr"] for g in off.optimizers[0].param_groups} == {1e-3}
    assert "lr_decay" not in TrainConfig(lr_decay=1.0).to_params() and TrainConfig(lr_decay=0.5).to_params()["lr_decay"] == 0.5
    with pytest.raises(ConfigError, match="lr-decay"):
        TrainConfig(lr_decay=0.0).validate()


def test_lr_decay_applies_after_an_epoch_without_gain() -> None:
    """Labels independent of the ids and a separate validation split: the first epoch's validation
    AUC is not beaten, and every later epoch halves the learning rate once."""
    g = torch.Generator().manual_seed(0)

    def noise() -> SplitTensors:
        return SplitTensors(torch.randint(0, 30, (512, 4), generator=g, dtype=torch.int32), (torch.rand(512, generator=g) < 0.5).float())

    train, val = noise(), noise()
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), batch_norm=False), "none")
    trainer = Trainer(model, TrainConfig(lr=1e-2, epochs=6, patience=0, batch_size=128, lr_decay=0.5), CPU)
    history = trainer.fit(train, val).history
    running, without_gain = -math.inf, 0
    for record in history:
        without_gain += record["val_auc"] <= running
        running = max(running, record["val_auc"])
    assert without_gain >= 3  # the planted case: most epochs gain nothing
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**without_gain)


def test_monitor_keeps_the_epoch_with_the_best_score() -> None:
    """The same run (no early stop, no decay) kept by two monitors: each keeps the epoch that
    maximises its score over the history (first of ties), checked by brute force; a high
    learning rate on a weak signal makes the two disagree."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 30, (2048, 4), generator=g, dtype=torch.int32)
    y = (torch.rand(2048, generator=g) < torch.sigmoid((x[:, 0].float() - 15) / 6)).float()
    train, val = SplitTensors(x[:1536], y[:1536]), SplitTensors(x[1536:], y[1536:])
    kept = {}
    for monitor in ("auc", "auc-logloss"):
        torch.manual_seed(0)
        model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(32,), batch_norm=False, dropout=0.0), "none")
        cfg = TrainConfig(lr=3e-2, epochs=8, patience=0, batch_size=64, monitor=monitor, embedding_l2=0.0, lr_decay=1.0)
        result = Trainer(model, cfg, CPU).fit(train, val)
        scores = [cfg.score(r) for r in result.history]
        assert result.best_epoch == result.history[scores.index(max(scores))]["epoch"]
        assert result.best_score == pytest.approx(max(scores))
        kept[monitor] = (result.best_epoch, [r["val_logloss"] for r in result.history])
    assert kept["auc"][1] == pytest.approx(kept["auc-logloss"][1])  # the same run
    assert kept["auc"][0] != kept["auc-logloss"][0]
