"""The compact serving lookup: width groups against brute force, the same embeddings as the
embedder, and an ONNX graph of row gathers only that gives the in-package predictions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from optembed.embedders.compact import CompactEmbedder
from optembed.embedders.compact_lookup import CompactLookup, width_groups
from optembed.export.graph import ServingNet
from optembed.export.writers import export_program, save_onnx
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model

CARDS = [9, 300, 40, 6, 600, 25, 120]


def random_compact(cards: list[int], dim: int, widths: list[int], seed: int, scale: float = 1.0) -> CompactEmbedder:
    """Random tables of the given widths over a random half of each field's ids (OOV kept)."""
    g = torch.Generator().manual_seed(seed)
    tables, remaps = [], []
    for card, width in zip(cards, widths, strict=True):
        keep = torch.rand(card, generator=g) < 0.5
        keep[0] = True
        ids = torch.nonzero(keep).squeeze(1)
        remap = torch.zeros(card, dtype=torch.long)
        remap[ids] = torch.arange(ids.numel())
        tables.append(torch.randn(ids.numel(), width, generator=g) * scale)
        remaps.append(remap)
    return CompactEmbedder(tables, remaps, dim)


def random_ids(cards: list[int], n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)


def set_partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1:]]


def padding(groups: list[tuple[int, list[int]]], widths: list[int], kept: list[int]) -> int:
    return sum(kept[f] * (w - widths[f]) for w, fields in groups for f in fields)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("slack", [0.0, 0.01, 0.1, 0.5, math.inf])
def test_width_groups_are_the_fewest_within_the_budget(seed: int, slack: float) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 7
    widths = torch.randint(1, 9, (n,), generator=g).tolist()
    kept = (torch.randint(1, 1000, (n,), generator=g) ** 2 // 1000 + 1).tolist()  # a few large fields
    budget = slack * sum(k * w for k, w in zip(kept, widths))
    # brute force over every partition of the distinct widths, each part padded to its widest
    distinct = sorted(set(widths))
    best: tuple[int, int] | None = None
    for part in set_partitions(distinct):
        cost = sum(kept[f] * (max(p) - widths[f]) for p in part for f in range(n) if widths[f] in p)
        if cost <= budget and (best is None or (len(part), cost) < best):
            best = (len(part), cost)
    groups = width_groups(widths, kept, slack)
    assert best is not None
    assert (len(groups), padding(groups, widths, kept)) == best
    assert sorted(f for _, fields in groups for f in fields) == list(range(n))
    for w, fields in groups:
        assert fields == sorted(fields) and w == max(widths[f] for f in fields)
    assert [w for w, _ in groups] == sorted((w for w, _ in groups), reverse=True)


def test_no_slack_keeps_one_group_per_width_and_infinite_slack_one_table() -> None:
    widths, kept = [3, 1, 3, 8, 5], [10, 10, 10, 10, 10]
    assert width_groups(widths, kept, 0.0) == [(8, [3]), (5, [4]), (3, [0, 2]), (1, [1])]
    assert width_groups(widths, kept, math.inf) == [(8, [0, 1, 2, 3, 4])]
    # a large field of width 8, small ones elsewhere: 1% lets the width-5 field join it (30 of 8,180 entries)
    assert width_groups(widths, [10, 1, 10, 1000, 10], 0.01) == [(8, [3, 4]), (3, [0, 1, 2])]


@pytest.mark.parametrize("slack", [0.0, 0.01, 0.3, math.inf])
@pytest.mark.parametrize("widths", [[1, 8, 3, 5, 2, 8, 3], [8] * 7, [4] * 7, [2, 2, 2, 7, 7, 1, 1]])
def test_the_lookup_gives_the_embedders_rows_and_embeddings(widths: list[int], slack: float) -> None:
    emb = random_compact(CARDS, 8, widths, seed=sum(widths))
    lookup = CompactLookup(emb, slack)
    x = random_ids(CARDS, 300, 4)
    rows, got = lookup(x)
    want_rows = emb.ids(x)
    assert rows.dtype == want_rows.dtype and torch.equal(rows, want_rows)
    assert torch.equal(got, emb.lookup(want_rows))
    assert sum(t.numel() for t in lookup.tables()) <= (1 + slack) * emb.kept_params()
    if slack == 0:
        assert len(lookup.tables()) == len(set(widths))
    if len(set(widths)) == 1:  # an Original model's shape: the one table in field order, no permutation
        assert len(lookup.tables()) == 1 and not lookup.permuted
        assert torch.equal(lookup.tables()[0], emb.entries.view(-1, widths[0]))


@pytest.mark.slow  # ONNX exports (seconds each)
@pytest.mark.parametrize("widths", [[1, 8, 3, 5, 2, 8, 3], [8] * 7])
def test_the_onnx_graph_has_row_gathers_only_and_gives_the_models_scores(widths: list[int], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    embedder = random_compact(CARDS, 8, widths, seed=7, scale=0.05)  # a trained table's scale
    model = build_model(CARDS, ModelConfig("deepfm", embed_dim=8, mlp_dims=(16, 8)), "none", embedder=embedder).eval()
    x = random_ids(CARDS, 500, 9)
    # the lookup alone: its graph's rows and embeddings are the embedder's, bit for bit
    save_onnx(export_program(CompactLookup(embedder), len(CARDS)), tmp_path / "lookup.onnx", len(CARDS))
    rows, emb = ort.InferenceSession(str(tmp_path / "lookup.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"ids": x.numpy()})
    with torch.no_grad():
        want_rows = embedder.ids(x)
        want_emb = embedder.lookup(want_rows).numpy()
    assert np.array_equal(rows, want_rows.numpy()) and np.array_equal(emb, want_emb)
    net = ServingNet(model).eval()
    save_onnx(export_program(net, net.n_fields), tmp_path / "m.onnx", net.n_fields)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert "GatherND" not in ops and "Where" not in ops
    groups = width_groups(widths, embedder.kept)
    # no block is padded to D: the only Pads widen the FM term's partial field sums, (B, W_g) each
    assert ops.count("Pad") == len(groups) - 1
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(x).numpy()
    for batch in (x, x[:1], x[:3]):
        logit, prob = session.run(None, {"ids": batch.numpy()})
        np.testing.assert_allclose(logit, want[: len(batch)], atol=1e-6, rtol=0)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-want[: len(batch)])), atol=1e-6, rtol=0)
