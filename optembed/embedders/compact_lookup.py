"""A compact embedding's serving lookup in row gathers only: the form exported graphs run.

The fields are grouped by width (:func:`width_groups`); group ``g`` is one dense
``(sum of its fields' kept rows, W_g)`` table, its fields' tables end to end, each zero-padded
to ``W_g`` columns, and each field reads it at a fixed row offset. A lookup is the remap gather
(original id -> compact row), one ``Add`` of the per-field row offsets, one ``Gather`` on axis 1
that puts the fields in group order and one ``Split``, then per group one row ``Gather`` and a
zero ``Pad`` to ``D``, one ``Concat`` and one fixed field permutation (``Gather`` on axis 1)
back to field order. No index arithmetic runs over the ``(B, n, D)`` elements, and the
embeddings are the embedder's own values with zero padding, so the head computes exactly what
the in-package model computes. An exported graph stops before the padding
(:meth:`CompactLookup.packed`): the group blocks go to the head as packed embeddings in the
lookup's :attr:`CompactLookup.layout`, and the head's first layer is laid out for it
(:meth:`optembed.models.base.CTRModel.for_layout`: a zero weight column per column of a group's
padding), so no ``(B, n, D)`` block is built at all.

Fields of nearby widths may share a group, padded to its widest (:func:`width_groups`): the
fewest groups whose padding adds at most ``slack`` x the embedder's entries (zeros in the
graph's tables, none in the model file; ``DEFAULT_SLACK``, 1%, for an export). Every group is a
row gather and a pad in the graph, and at batch 1 onnxruntime spends about a microsecond per
operator, so a few dozen exact-width groups show: over Criteo's fields, where a few large fields
hold nearly all rows, 1% of padding takes 28 distinct widths down to about 7 groups.
``slack=0`` keeps one group per width (exactly the embedder's entries); ``slack=inf`` gives one
table padded to ``D``, the plain model's graph plus the remap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.compact import CompactEmbedder
from optembed.embedders.packed import PackedEmbeddings, PackedLayout

DEFAULT_SLACK = 0.01  # the exported tables may hold up to 1% more entries than the embedder (zeros)


def width_groups(widths: Sequence[int], kept: Sequence[int], slack: float = DEFAULT_SLACK) -> list[tuple[int, list[int]]]:
    """Fields grouped for :class:`CompactLookup`: ``(group width, its fields in field order)``,
    widest group first. Groups are runs of fields sorted by width, each padded to its widest;
    the fewest such groups whose padding (sum over fields of ``kept_f x (W_g - D_f)``) is at
    most ``slack x sum kept_f x D_f``, the least padding among those."""
    distinct = sorted(set(int(w) for w in widths))
    rows = [sum(int(k) for k, w in zip(kept, widths, strict=True) if int(w) == d) for d in distinct]
    budget = slack * sum(int(k) * int(w) for k, w in zip(kept, widths, strict=True))
    u = len(distinct)
    row_sum, entry_sum = [0], [0]  # prefix sums over the distinct widths
    for d, r in zip(distinct, rows, strict=True):
        row_sum.append(row_sum[-1] + r)
        entry_sum.append(entry_sum[-1] + r * d)

    def pad(i: int, j: int) -> int:  # distinct widths i..j (inclusive) padded to distinct[j]
        return distinct[j] * (row_sum[j + 1] - row_sum[i]) - (entry_sum[j + 1] - entry_sum[i])

    inf = float("inf")
    # best[g][j]: least padding covering distinct widths 0..j-1 with g groups; cut: the last group's start
    best = [[inf] * (u + 1) for _ in range(u + 1)]
    cut = [[0] * (u + 1) for _ in range(u + 1)]
    best[0][0] = 0
    groups = u
    for g in range(1, u + 1):
        for j in range(1, u + 1):
            for i in range(g - 1, j):
                cost = best[g - 1][i] + pad(i, j - 1)
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
        if best[g][u] <= budget:
            groups = g
            break
    spans, j = [], u
    for g in range(groups, 0, -1):
        i = cut[g][j]
        spans.append((i, j - 1))
        j = i
    out = []
    for i, j in spans:  # widest first
        members = [f for f, w in enumerate(widths) if distinct[i] <= int(w) <= distinct[j]]
        out.append((distinct[j], members))
    return out


class CompactLookup(nn.Module):
    """Ids -> (compact rows, ``(B, n, D)`` embeddings) of a :class:`CompactEmbedder` (see the
    module's docstring). The group tables are copies of the embedder's, taken when the lookup is
    built (an export builds it just before tracing)."""

    row_offset: Tensor
    order: Tensor
    inverse: Tensor

    def __init__(self, embedder: CompactEmbedder, slack: float = DEFAULT_SLACK) -> None:
        super().__init__()
        self.embedder = embedder
        kept = embedder.kept
        groups = width_groups(embedder.widths, kept, slack)
        self.widths = [w for w, _ in groups]
        self.sizes = [len(fields) for _, fields in groups]
        order = [f for _, fields in groups for f in fields]
        offset = [0] * len(kept)
        for g, (width, fields) in enumerate(groups):
            start, parts = 0, []
            for f in fields:
                offset[f], start = start, start + kept[f]
                table = embedder.table(f).detach()
                parts.append(F.pad(table, (0, width - table.shape[1])))
            self.register_buffer(f"table{g}", torch.cat(parts).clone(), persistent=False)
        device = embedder.flat.device
        self.register_buffer("row_offset", torch.tensor(offset, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("order", torch.tensor(order, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("inverse", torch.argsort(self.order), persistent=False)
        self.permuted = order != list(range(len(kept)))
        self.layout = PackedLayout.of_groups(groups, embedder.widths, embedder.dim)

    def tables(self) -> list[Tensor]:
        return [getattr(self, f"table{g}") for g in range(len(self.widths))]

    def rows(self, x: Tensor) -> Tensor:
        """:meth:`CompactEmbedder.ids` as a row gather (ONNX ``Gather``, not ``GatherND``)."""
        e = self.embedder
        return F.embedding(x + e.remap_offsets, e.remap.unsqueeze(1)).squeeze(-1).long()

    def packed(self, ids: Tensor) -> tuple[Tensor, PackedEmbeddings]:
        """Ids -> (compact rows, the group blocks as packed embeddings in :attr:`layout`)."""
        rows = self.rows(ids)
        index = rows + self.row_offset
        if self.permuted:
            index = index.index_select(1, self.order)
        parts = index.split(self.sizes, dim=1) if len(self.sizes) > 1 else (index,)
        blocks = [F.embedding(part, table) for part, table in zip(parts, self.tables(), strict=True)]
        return rows, PackedEmbeddings(blocks, self.layout, self.inverse if self.permuted else None)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        rows, packed = self.packed(ids)
        return rows, packed.padded()
