"""Folding pruned rows into their field's OOV row.

Under a row mask, every pruned id of a field is read as the field's OOV row (local id 0), in the
embedding table and in any per-id term of the head (DeepFM's linear weights). After re-training
that shared row stands for all the ids it absorbed; the least-squares single vector for them is
their traffic-weighted mean. A trained model whose OOV row was never meant to carry those ids
(a supernet, or the row search's candidates) reads it instead at its old value, so a pruned
field looks worse than it will be after re-training - a distribution shift of the head's input,
not a loss of information. Folding replaces the OOV row by the weighted mean of the rows it now
stands for (itself included), before scoring or as the re-training's starting point.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor

from optembed.layers.embedding import FieldEmbedding
from optembed.masks.oov import field_offsets, with_oov_rows


def reads_oov(keep: Tensor, field_embedding: FieldEmbedding) -> Tensor:
    """``BoolTensor(|f|)``: the rows read as their field's OOV row under ``keep`` (pruned rows and
    the OOV rows themselves)."""
    return with_oov_rows(~keep.to(field_embedding.weight.device, torch.bool), field_embedding.offsets)


@torch.no_grad()
def folded_rows(weight: Tensor, counts: Tensor, absorbed: Tensor, field_of_row: Tensor, n_fields: int,
                oov_rows: Tensor) -> Tensor:
    """Per field, the ``counts``-weighted mean of its ``absorbed`` rows of ``weight`` (``(|f|, d)``);
    a field whose absorbed rows have no count keeps its OOV row. Returns ``(n_fields, d)``."""
    w = (counts.to(weight.device, weight.dtype) * absorbed.to(weight.device, weight.dtype))
    sums = torch.zeros(n_fields, weight.shape[1], dtype=weight.dtype, device=weight.device)
    sums.index_add_(0, field_of_row, weight * w[:, None])
    mass = torch.zeros(n_fields, dtype=weight.dtype, device=weight.device).index_add_(0, field_of_row, w)
    out = weight[oov_rows].clone()
    has = mass > 0
    out[has] = sums[has] / mass[has, None]
    return out


@torch.no_grad()
def fold_field(weight: Tensor, counts: Tensor, local_absorbed: Tensor) -> Tensor:
    """One field's folded OOV row: ``weight`` and ``counts`` are the field's rows (OOV first),
    ``local_absorbed`` (``BoolTensor(rows)``) the rows read as OOV. Returns ``(d,)``."""
    one_field = torch.zeros(weight.shape[0], dtype=torch.long, device=weight.device)
    return folded_rows(weight, counts, local_absorbed, one_field, 1, one_field[:1])[0]


@torch.no_grad()
def folded_oov_rows(table: FieldEmbedding, keep: Tensor, counts: Tensor) -> Tensor:
    """``(n_fields, d)``: every field's folded OOV row of ``table`` under the mask ``keep``, with
    ``counts`` (both ``(|f|,)`` over the table's ids); the table is left as it is."""
    return folded_rows(table.weight.detach(), counts, reads_oov(keep, table), table.field_of_row,
                       table.n_fields, table.offsets)


@torch.no_grad()
def fold_pruned_rows(tables: list[FieldEmbedding], keep: Tensor, counts: Tensor) -> None:
    """Write each field's folded OOV row into every table of ``tables`` (the embedding table and the
    head's per-id tables, all indexed by the same ids) in place; ``keep`` and ``counts`` are
    ``(|f|,)`` over those ids."""
    for table in tables:
        table.weight.data[table.offsets] = folded_oov_rows(table, keep, counts).to(table.weight.dtype)


def id_counts(x: Tensor, field_embedding: FieldEmbedding) -> Tensor:
    """``LongTensor(|f|)``: how often each id occurs in the ``(N, n)`` per-field ids ``x``."""
    ids = field_embedding.global_ids(x.to(field_embedding.offsets.device)).flatten()
    return torch.bincount(ids, minlength=field_embedding.num_rows)


class _Batched(Protocol):
    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]: ...


def split_id_counts(
    split: _Batched, cardinalities: Sequence[int], device: torch.device, batch_size: int = 1 << 16
) -> Tensor:
    """``LongTensor(|f|)`` on ``device``: how often each id of fields of ``cardinalities`` (laid end
    to end, as the rows of the full table) occurs in every row of a split, in-memory or streamed,
    one batch at a time."""
    offsets = field_offsets(cardinalities).to(device)
    out = torch.zeros(int(sum(cardinalities)), dtype=torch.long, device=device)
    for xb, _ in split.batches(batch_size, device):
        out += torch.bincount((xb + offsets).flatten(), minlength=out.numel())
    return out
