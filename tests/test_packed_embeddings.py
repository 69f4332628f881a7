"""Packed embeddings: the compact model's heads read the sum(D_f) real columns, never the padded block.

Every backbone's packed head gives the logits of its padded head and of the masked full model it
was sliced from; the FM term over width blocks is the brute-force sum of pairwise products; the
first layer's columns are permuted once (its state keeps the ascending order of older files); the
grouped gather's gradient is autograd's over the slices; the serving net's merged width groups,
in the in-package net and in the ONNX graph, give the in-package model's scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optembed.embedders.compact_lookup import CompactLookup
from optembed.embedders.group_gather import group_gather
from optembed.embedders.packed import PackedEmbeddings, PackedLayout
from optembed.export.graph import ServingNet
from optembed.layers.interactions import fm_second_order_packed
from optembed.layers.packed_linear import PackedLinear
from optembed.models.apply import apply_search
from optembed.models.checkpoint import load_model, save_model
from optembed.models.compact import compact_model
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.registry import build_model

CARDS = [12, 30, 7, 20, 9]
WIDTHS = [8, 3, 8, 5, 1]
DIM = 8


def masked(name: str, tasks: int, seed: int = 0):  # noqa: ANN201 - a CTRModel
    torch.manual_seed(seed)
    cfg = ModelConfig(name, embed_dim=DIM, mlp_dims=(16, 8), dropout=0.0, cross_layers=2, tasks=tasks)
    model = build_model(CARDS, cfg, "none")
    keep = torch.rand(sum(CARDS), generator=torch.Generator().manual_seed(seed + 1)) < 0.6
    apply_search(model, keep, torch.tensor(WIDTHS))
    with torch.no_grad():  # larger embeddings than the initialisation's, so every term weighs
        model.embedder.embedding.weight.normal_(0, 0.3)
    model.train()
    model(ids(256, 9)).sum().backward()  # BatchNorm statistics move
    model.zero_grad(set_to_none=True)
    return model.eval()


def ids(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)


@pytest.mark.parametrize("tasks", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_packed_head_is_the_padded_head_and_the_masked_model(name: str, tasks: int) -> None:
    full = masked(name, tasks)
    compact = compact_model(full)
    emb = compact.embedder
    x = ids(300, 3)
    with torch.no_grad():
        rows = emb.ids(x)
        packed = emb.packed_lookup(rows)
        assert packed is not None and packed.flat.shape == (300, sum(WIDTHS))
        got = compact(x)
        padded = compact.head(emb.lookup(rows), rows)
        want = full(x)
    assert got.shape == want.shape == ((300,) if tasks == 1 else (300, tasks))
    assert float(want.std()) > 1e-3  # the logits vary (by far more than the tolerance): a wrong term would show
    torch.testing.assert_close(got, padded, rtol=0, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_packed_blocks_are_the_kept_columns_by_width() -> None:
    compact = compact_model(masked("fnn", 1))
    emb = compact.embedder
    x = ids(40, 4)
    rows = emb.ids(x)
    packed = emb.packed_lookup(rows)
    assert packed is not None
    assert packed.layout == PackedLayout.exact(WIDTHS, DIM)
    assert [(w, list(fs)) for w, fs in packed.layout.groups] == [(8, [0, 2]), (5, [3]), (3, [1]), (1, [4])]
    full = emb.lookup(rows)
    cols = torch.tensor(packed.layout.columns())
    assert torch.equal(packed.flat, full.flatten(1)[:, cols])
    assert torch.equal(packed.padded(), full)


def test_fm_over_width_blocks_is_the_sum_of_pairwise_products() -> None:
    g = torch.Generator().manual_seed(0)
    widths = [5, 5, 3, 1, 3, 2]
    layout = PackedLayout.exact(widths, 6)
    fields = [torch.randn(7, w, generator=g) for w in widths]
    blocks = [torch.stack([fields[f] for f in fs], dim=1) for _, fs in layout.groups]
    flat = torch.cat([b.flatten(1) for b in blocks], dim=1)
    brute = torch.zeros(7)
    for i in range(len(widths)):
        for j in range(i + 1, len(widths)):
            k = min(widths[i], widths[j])
            brute += (fields[i][:, :k] * fields[j][:, :k]).sum(1)
    torch.testing.assert_close(fm_second_order_packed(blocks, flat), brute, rtol=1e-5, atol=1e-5)


def test_a_packed_linear_of_any_column_order() -> None:
    torch.manual_seed(3)
    full = torch.nn.Linear(10, 4)
    kept = torch.tensor([7, 0, 9, 3, 1])  # not ascending
    layer = PackedLinear(10, 4, kept)
    layer.load_state_dict(full.state_dict())  # the full layer's state: its kept columns, in kept's order
    assert torch.equal(layer.weight, full.weight[:, kept])
    x = torch.randn(6, 10)
    zero = torch.ones(10, dtype=torch.bool)
    zero[kept] = False
    x[:, zero] = 0.0
    torch.testing.assert_close(layer(x), full(x))
    torch.testing.assert_close(layer.forward_packed(x[:, kept]), full(x))
    # the state keeps the ascending column order (older files' layout), and reads back
    state = layer.state_dict()
    assert torch.equal(state["weight"], full.weight[:, kept.sort().values])
    other = PackedLinear(10, 4, kept.flip(0))
    other.load_state_dict(state)
    torch.testing.assert_close(other.forward_packed(x[:, kept.flip(0)]), full(x))
    # a layout with a zero column between kept ones
    relaid = layer.relayout([3, -1, 9, 0, 7, 1])
    packed = torch.stack([x[:, 3], torch.zeros(6), x[:, 9], x[:, 0], x[:, 7], x[:, 1]], dim=1)
    torch.testing.assert_close(relaid(packed), full(x))
    with pytest.raises(ValueError, match="not among"):
        layer.relayout([2])


def test_the_model_file_keeps_the_first_layer_in_field_order(tmp_path: Path) -> None:
    """The file holds the first layer's columns in field order (what every earlier file holds),
    so files written before the packed order read, and read the same."""
    full = masked("deepfm", 1)
    compact = compact_model(full)
    state = compact.state_dict()
    cols = [f * DIM + c for f, w in enumerate(WIDTHS) for c in range(w)]
    assert torch.equal(state["mlp.layers.0.weight"], full.state_dict()["mlp.layers.0.weight"][:, cols])
    assert not torch.equal(compact.mlp.first.weight, state["mlp.layers.0.weight"])  # in memory: by width
    save_model(tmp_path / "m.pt", compact, [f"f{i}" for i in range(len(CARDS))])
    loaded, _ = load_model(tmp_path / "m.pt")
    x = ids(100, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), compact(x), rtol=0, atol=0)


def test_the_grouped_gather_gradient_is_autograds_over_slices() -> None:
    g = torch.Generator().manual_seed(2)
    geometry = [(0, 5, 3), (15, 4, 2), (23, 6, 1)]
    flat = torch.randn(23 + 6 + 4, generator=g, requires_grad=True)  # a tail past the last table
    index = [torch.randint(0, r, (9, k), generator=g) for (_, r, _), k in zip(geometry, (2, 3, 1), strict=True)]
    weights = [torch.randn(9, k, w, generator=g) for (_, _, w), k in zip(geometry, (2, 3, 1), strict=True)]
    out = group_gather(flat, geometry, index)
    (sum((o * w).sum() for o, w in zip(out, weights, strict=True))).backward()
    got = flat.grad.clone()
    flat.grad = None
    ref = [torch.nn.functional.embedding(i, flat[a : a + r * w].view(r, w)) for (a, r, w), i in zip(geometry, index, strict=True)]
    for o, r in zip(out, ref, strict=True):
        assert torch.equal(o, r)
    (sum((o * w).sum() for o, w in zip(ref, weights, strict=True))).backward()
    torch.testing.assert_close(got, flat.grad)
    assert torch.count_nonzero(got[29:]) == 0


@pytest.mark.parametrize("tasks", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("slack", [0.0, 0.3, math.inf])
def test_the_serving_nets_width_groups_give_the_models_scores(name: str, tasks: int, slack: float) -> None:
    compact = compact_model(masked(name, tasks))
    lookup = CompactLookup(compact.embedder, slack)
    if slack > 0:
        assert not lookup.layout.is_exact  # merged groups: columns of padding in the blocks
    head = compact.for_layout(lookup.layout)
    assert (head is compact) == (lookup.layout == compact.embedder.packed_layout())
    x = ids(200, 6)
    with torch.no_grad():
        rows, packed = lookup.packed(x)
        assert isinstance(packed, PackedEmbeddings)
        torch.testing.assert_close(head.head_packed(packed, rows), compact(x), rtol=0, atol=1e-5)
    # the copy shares every parameter but the first layers it lays out anew
    shared = {id(p) for p in compact.parameters()}
    assert sum(id(p) not in shared for p in head.parameters()) == (0 if head is compact else 2)


@pytest.mark.slow  # ONNX exports (seconds each)
@pytest.mark.parametrize("tasks", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_onnx_graph_of_every_backbone_gives_the_models_scores(name: str, tasks: int, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from optembed.export.writers import export_program, save_onnx

    compact = compact_model(masked(name, tasks))
    net = ServingNet(compact).eval()
    save_onnx(export_program(net, net.n_fields), tmp_path / "m.onnx", net.n_fields)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    x = ids(300, 7)
    with torch.no_grad():
        want = compact(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):
        logit, prob = session.run(None, {"ids": batch.numpy()})
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-5, rtol=0)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want[: len(batch)])), atol=1e-5, rtol=0)
    if name in ("fnn", "deepfm"):  # nothing builds the (B, n, D) block: no Pad of a (B, n, W) block
        shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in graph.value_info}
        pads = [n for n in graph.node if n.op_type == "Pad"]
        assert all(shapes.get(n.input[0], 2) == 2 for n in pads), "a Pad of a 3-d block"


def test_a_model_over_tables_in_the_older_field_order_gives_the_same_logits() -> None:
    """Tables laid out field by field (files written before the by-width layout): no packed
    lookup, the padded head, whose first layer gathers its columns in the packed order."""
    compact = compact_model(masked("deepfm", 1))
    emb = compact.embedder
    tables = [emb.table(f).detach().clone() for f in range(len(CARDS))]
    sizes = torch.tensor([t.numel() for t in tables])
    state = compact.state_dict()
    state["embedder.flat"] = torch.cat([t.reshape(-1) for t in tables] + [torch.zeros(DIM)])
    state["embedder.field_start"] = torch.cumsum(sizes, 0) - sizes
    old = compact_model(masked("deepfm", 1))
    old.load_state_dict(state)
    x = ids(100, 8)
    assert old.embedder.packed_lookup(old.embedder.ids(x)) is None
    with torch.no_grad():
        torch.testing.assert_close(old(x), compact(x), rtol=0, atol=1e-6)
