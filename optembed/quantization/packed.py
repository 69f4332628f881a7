"""One-gather inference lookups for a quantized embedder's per-field tables.

:class:`~optembed.quantization.model.QuantizedEmbedder` trains (fine-tuning) through one module
per field; at inference that loop costs a few operator calls per field, which dominates a small
batch. :class:`PackedTables` lays the same numbers out for one ``embedding_bag``:

- one ``(entries, D)`` table: the float fields' rows, each zero-padded to ``D``, then every
  codebook entry of every coded field as a ``D``-wide row holding its values at its group's
  columns (zeros elsewhere, cut at the field's width), then one zero row used as padding;
- the coded fields' codes concatenated in their own narrow dtype (no wider copy of the largest
  part of a compressed model), turned into entry indices per batch by adding each field's and
  group's first entry.

A looked-up row is the bag of its entries: one float row, or its groups' entries summed. Adding
zeros is exact, so the result equals the per-field loop bit for bit. The layout is built from
the current parameters and rebuilt when any of them changes (:func:`state_key`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.quantization.fields import CodedField, FieldTable


class PackedTables:
    """The fields' tables as one entry table and one code table (see the module docstring)."""

    def __init__(self, fields: Sequence[FieldTable], dim: int, device: torch.device) -> None:
        self.dim, n = dim, len(fields)
        coded = [f for f, table in enumerate(fields) if table.kind == CodedField.kind]
        dense = [f for f, table in enumerate(fields) if f not in coded]
        self.groups = max([fields[f].groups for f in coded] + [1])
        rows: list[Tensor] = []
        start = 0
        self.dense_start = torch.zeros(n, dtype=torch.long, device=device)
        for f in dense:
            table = fields[f].table.detach()
            rows.append(F.pad(table, (0, dim - table.shape[1])))
            self.dense_start[f] = start
            start += table.shape[0]
        # entry_base[f, g]: the first entry of field f's group g; code_start[f]: its first code row
        self.entry_base = torch.full((n, self.groups), -1, dtype=torch.long, device=device)  # -1: padding
        self.code_start = torch.zeros(n, dtype=torch.long, device=device)
        codes: list[Tensor] = []
        code_rows = 0
        for f in coded:
            field = fields[f]
            books = field.codebooks.detach()  # (groups, K, sub)
            g, k, sub = books.shape
            spread = torch.zeros(g, k, g * sub, dtype=books.dtype, device=books.device)
            for j in range(g):
                spread[j, :, j * sub : (j + 1) * sub] = books[j]
            spread = spread[:, :, : field.width]
            rows.append(F.pad(spread, (0, dim - spread.shape[-1])).reshape(g * k, dim))
            self.entry_base[f, :g] = start + torch.arange(g, device=device) * k
            start += g * k
            codes.append(F.pad(field.codes, (0, self.groups - g)))
            self.code_start[f] = code_rows
            code_rows += field.codes.shape[0]
        self.pad = start  # the zero row: padding of every bag
        rows.append(torch.zeros(1, dim, device=device))
        self.entries = torch.cat(rows)
        self.entry_base[self.entry_base < 0] = self.pad  # a float field's bag is its row alone
        narrow = {c.dtype for c in codes} == {torch.uint8}
        self.codes = torch.cat([c if narrow else c.int() for c in codes]) if codes else None
        self.coded = torch.zeros(n, dtype=torch.bool, device=device)
        self.coded[coded] = True
        self.code_slots = self.coded.unsqueeze(-1) & (self.entry_base != self.pad)  # (n, groups): gets a code

    def lookup(self, ids: Tensor) -> Tensor:
        """``(B, n)`` rows -> ``(B, n, D)`` embeddings, as the per-field loop computes them."""
        b, n = ids.shape
        ids = ids.long()
        bags = self.entry_base.expand(b, n, self.groups).clone()  # (B, n, groups)
        # float fields: the row itself as the bag's first entry (the rest is padding)
        bags[:, :, 0] = torch.where(self.coded, bags[:, :, 0], self.dense_start + ids)
        if self.codes is not None:
            code_rows = torch.where(self.coded, self.code_start + ids, torch.zeros_like(ids))
            bags = torch.where(self.code_slots, bags + self.codes[code_rows].long(), bags)
        out = F.embedding_bag(bags.view(b * n, self.groups), self.entries, mode="sum", padding_idx=self.pad)
        return out.view(b, n, self.dim)


def state_key(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lives and its version counter: an in-place update (an
    optimizer step, ``load_state_dict``) or a move to another device changes the key. Tensors
    made under ``torch.inference_mode`` keep no version counter (nothing trains them in place)."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in (*module.parameters(), *module.buffers()))
