"""Training the compact tables: the same model as training the full table under its masks.

The compact embedder's by-width lookup is checked against its window lookup (the general form,
any layout) and against the masked full table; training it with the shared loop from the same
start gives, step for step, the model the masked full table trains into, with an optimizer state
over the kept entries alone.
"""

from __future__ import annotations

import copy

import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.embedders.compact import CompactEmbedder
from optembed.errors import ConfigError
from optembed.models.apply import apply_search
from optembed.models.compact import compact_model
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.trainer import Trainer

CPU = torch.device("cpu")
CARDS = [12, 30, 7, 20]
WIDTHS = [8, 3, 8, 5]


def planted(n: int, seed: int) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1).to(torch.int32)
    effect = torch.randn(30, generator=torch.Generator().manual_seed(5))
    y = (torch.rand(n, generator=g) < torch.sigmoid(effect[x[:, 1].long()] + 0.5 * effect[x[:, 0].long()])).float()
    return SplitTensors(x, y)


def masked_model(name: str, seed: int = 0, batch_norm: bool = True, tasks: int = 1):  # noqa: ANN201 - a CTRModel
    torch.manual_seed(seed)
    cfg = ModelConfig(name, embed_dim=8, mlp_dims=(16,), dropout=0.0, cross_layers=1, batch_norm=batch_norm, tasks=tasks)
    model = build_model(CARDS, cfg, "none")
    keep = torch.rand(sum(CARDS), generator=torch.Generator().manual_seed(seed + 1)) < 0.6
    apply_search(model, keep, torch.tensor(WIDTHS))
    return model


def test_width_lookup_equals_window_lookup_and_the_masked_table() -> None:
    model = masked_model("fnn").eval()
    compact = compact_model(model)
    emb = compact.embedder
    assert isinstance(emb, CompactEmbedder)
    assert emb.width_tables() == [(8, [0, 2]), (5, [3]), (3, [1])]  # widest first, field order inside
    x = planted(64, 3).x
    ids = emb.ids(x)
    assert torch.equal(emb.lookup(ids), emb.window_lookup(ids))
    assert torch.allclose(emb(x), model.embedder(x), atol=0, rtol=0)  # the masked table's values, zero-padded


def test_a_file_of_the_field_order_layout_reads_the_same() -> None:
    """Tables laid out in field order (older files): no by-width tables; same lookup."""
    emb = compact_model(masked_model("fnn")).embedder
    state = emb.state_dict()
    tables = [emb.table(f).clone() for f in range(len(CARDS))]
    sizes = torch.tensor([t.numel() for t in tables])
    old = copy.deepcopy(emb)
    state["flat"] = torch.cat([t.reshape(-1) for t in tables] + [torch.zeros(emb.dim)])
    state["field_start"] = torch.cumsum(sizes, 0) - sizes
    old.load_state_dict(state)
    assert old.width_tables() is None
    x = planted(50, 4).x
    assert torch.equal(old(x), emb(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_the_compact_tables_is_training_the_masked_table(name: str) -> None:
    """Without BatchNorm: the compact model's first layer sums its columns in another order (by
    width group), and the bias before a BatchNorm has a gradient that is zero but for rounding,
    which Adam turns into full steps of either sign; so the two trainings agree to rounding
    only without BatchNorm (with it, one step's gradients agree: the next test)."""
    masked = masked_model(name, batch_norm=False)
    compact = compact_model(copy.deepcopy(masked)).train()
    cfg = TrainConfig(epochs=2, batch_size=128, lr=3e-3, patience=0, lr_decay=1.0, embedding_l2=1e-3, seed=7)
    train, val = planted(1500, 1), planted(400, 2)
    ra = Trainer(masked, cfg, CPU).fit(train, val)
    rb = Trainer(compact, cfg, CPU).fit(train, val)
    assert [r["val_auc"] for r in ra.history] == pytest.approx([r["val_auc"] for r in rb.history], abs=1e-5)
    masked.load_state_dict(ra.best_state)
    compact.load_state_dict(rb.best_state)
    expected = compact_model(masked).eval()
    x = val.x
    with torch.no_grad():
        assert torch.allclose(compact.eval()(x), expected(x), atol=1e-5)
    # the tables' optimizer state covers the kept entries only
    kept = compact.embedder.kept_params()
    assert kept < sum(CARDS) * 8 * 0.6
    assert compact.embedder.flat.numel() == kept + 8  # the entries and the zero tail
    assert torch.count_nonzero(compact.embedder.flat[kept:]) == 0


@pytest.mark.parametrize("tasks", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_training_step_of_the_compact_tables_has_the_masked_tables_gradients(name: str, tasks: int) -> None:
    """BatchNorm in training mode: the loss and every gradient of the head and of the kept entries
    are the masked full model's (read at the kept rows and columns)."""
    masked = masked_model(name, tasks=tasks).train()
    compact = compact_model(copy.deepcopy(masked)).train()
    data = planted(256, 8)
    y = data.y if tasks == 1 else torch.stack([data.y, 1 - data.y], dim=1)
    losses = []
    for model in (masked, compact):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(data.x), y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-6)
    # the tables: the masked table's gradient at the kept rows' first D_f columns
    emb = compact.embedder
    table = masked.embedder.embedding
    _, kept_ids = masked.embedder.export()
    assert emb.flat.grad is not None and table.weight.grad is not None
    for f, ids in enumerate(kept_ids):
        start, width = int(emb.field_start[f]), WIDTHS[f]
        got = emb.flat.grad[start : start + ids.numel() * width].view(ids.numel(), width)
        torch.testing.assert_close(got, table.weight.grad[int(table.offsets[f]) + ids, :width], rtol=1e-4, atol=1e-7)
    # the head: every parameter's gradient (the first layer's at its kept columns, in its order)
    first_c = (compact.deep if name == "dcn" else compact.mlp).first
    first_m = (masked.deep if name == "dcn" else masked.mlp).first
    torch.testing.assert_close(first_c.weight.grad, first_m.weight.grad[:, first_c.kept], rtol=1e-4, atol=1e-7)
    want = {n: p.grad for n, p in masked.named_parameters()}
    compared = 0
    for n, p in compact.named_parameters():
        if p is first_c.weight or p is emb.flat or n.startswith("linear."):
            continue  # the first layer and the tables above; DeepFM's linear weights are per kept row
        atol = 1e-5 if p is first_c.bias else 1e-7  # the bias before BatchNorm: its gradient is 0 but for rounding
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=atol, msg=n)
        compared += 1
    assert compared >= 3


def test_row_optimizers_refused_on_the_compact_tables() -> None:
    compact = compact_model(masked_model("fnn")).train()
    with pytest.raises(ConfigError, match="train it with --embedding-optimizer adam"):
        Trainer(compact, TrainConfig(embedding_optimizer="rowwise-adagrad", batch_size=64), CPU)


# -- the network reads the columns that can be nonzero -----------------------------------------
def test_packed_linear_is_the_full_layer_on_zero_padded_inputs() -> None:
    from optembed.layers.packed_linear import PackedLinear

    torch.manual_seed(3)
    full = torch.nn.Linear(6, 4)
    kept = torch.tensor([0, 1, 3, 5])
    packed = PackedLinear(6, 4, kept)
    packed.load_state_dict(full.state_dict())  # the full layer's state: its kept columns
    assert packed.weight.shape == (4, 4) and torch.equal(packed.weight, full.weight[:, kept])
    x = torch.randn(5, 6)
    x[:, [2, 4]] = 0.0
    assert torch.allclose(packed(x), full(x), atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compact_network_reads_sum_of_widths(name: str) -> None:
    compact = compact_model(masked_model(name))
    mlp = compact.deep if name == "dcn" else compact.mlp
    extra = mlp.first.full_in_features - len(CARDS) * 8  # IPNN: the inner products after the embeddings
    assert mlp.first.in_features == sum(WIDTHS) + extra
    full_width = compact_model(build_model(CARDS, ModelConfig(name, embed_dim=8, mlp_dims=(16,), cross_layers=1), "none"))
    first = (full_width.deep if name == "dcn" else full_width.mlp).first
    assert type(first) is torch.nn.Linear  # every column can be nonzero: the plain layer


def test_first_lookup_under_inference_mode_then_training() -> None:
    """A warm start validates its starting weights (inference mode) before the first step: the
    layout's indices built then serve the backward pass too."""
    compact = compact_model(masked_model("deepfm"))
    x = planted(32, 6).x
    with torch.inference_mode():
        compact(x)
    compact.train()
    compact(x).sum().backward()
    assert compact.embedder.flat.grad is not None and compact.embedder.flat.grad.abs().sum() > 0
