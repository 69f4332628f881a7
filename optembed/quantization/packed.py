"""One-gather inference lookups for a quantized embedder's per-field tables.

:class:`~optembed.quantization.model.QuantizedEmbedder` trains (fine-tuning) through one module
per field; at inference that loop costs a few operator calls per field, which dominates a small
batch. :class:`PackedTables` lays the same numbers out for two batched gathers:

- the float fields' tables stacked into one ``(rows, D)`` table, each zero-padded to ``D``;
- every codebook entry of every coded field as a ``D``-wide row holding its values at its
  group's columns (zeros elsewhere, cut at the field's width), and each coded row's codes as
  indices of those rows, so a row is the sum (``embedding_bag``) of its groups' entry rows.

Adding zeros is exact, so the result equals the per-field loop bit for bit. The layout is built
from the current parameters and rebuilt when any of them changes (its version counter moves).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PackedTables:
    """The fields' tables in two stacked forms (see the module docstring)."""

    def __init__(self, fields: Sequence[nn.Module], dim: int, device: torch.device) -> None:
        from optembed.quantization.model import CodedField

        self.dim = dim
        self.coded = [f for f, table in enumerate(fields) if isinstance(table, CodedField)]
        self.dense = [f for f, table in enumerate(fields) if not isinstance(table, CodedField)]
        n = len(fields)
        self.row_offset = torch.zeros(n, dtype=torch.long, device=device)
        dense_rows: list[Tensor] = []
        start = 0
        for f in self.dense:
            table = fields[f].table.detach()
            dense_rows.append(F.pad(table, (0, dim - table.shape[1])))
            self.row_offset[f] = start
            start += table.shape[0]
        self.dense_table = torch.cat(dense_rows) if dense_rows else torch.zeros(0, dim, device=device)
        groups = max((fields[f].groups for f in self.coded), default=0)
        entries: list[Tensor] = []
        codes: list[Tensor] = []
        entry_start, code_start = 0, 0
        for f in self.coded:
            field = fields[f]
            books = field.codebooks.detach()  # (groups, K, sub)
            g, k, sub = books.shape
            spread = torch.zeros(g, k, g * sub, dtype=books.dtype, device=books.device)
            for j in range(g):
                spread[j, :, j * sub : (j + 1) * sub] = books[j]
            spread = spread[:, :, : field.width]
            entries.append(F.pad(spread, (0, dim - spread.shape[-1])).reshape(g * k, dim))
            index = field.codes.long() + torch.arange(g, device=books.device) * k + entry_start
            codes.append(F.pad(index, (0, groups - g), value=-1))  # -1: the zero row, set below
            self.row_offset[f] = code_start
            entry_start += g * k
            code_start += field.codes.shape[0]
        zero_row = entry_start
        self.entries = torch.cat([*entries, torch.zeros(1, dim, device=device)]) if entries else torch.zeros(1, dim, device=device)
        self.codes = torch.cat(codes) if codes else torch.zeros(0, max(groups, 1), dtype=torch.long, device=device)
        self.codes[self.codes < 0] = zero_row
        self.dense_index = torch.tensor(self.dense, dtype=torch.long, device=device)
        self.coded_index = torch.tensor(self.coded, dtype=torch.long, device=device)

    def lookup(self, ids: Tensor) -> Tensor:
        """``(B, n)`` rows -> ``(B, n, D)`` embeddings, as the per-field loop computes them."""
        b, n = ids.shape
        rows = ids.long() + self.row_offset
        out = torch.empty(b, n, self.dim, dtype=self.entries.dtype, device=ids.device)
        if self.dense:
            out[:, self.dense_index] = F.embedding(rows[:, self.dense_index], self.dense_table)
        if self.coded:
            bag = self.codes[rows[:, self.coded_index].reshape(-1)]  # (B * coded, groups)
            out[:, self.coded_index] = F.embedding_bag(bag, self.entries, mode="sum").view(b, len(self.coded), self.dim)
        return out


def state_key(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lives and its version counter: an in-place update (an
    optimizer step, ``load_state_dict``) or a move to another device changes the key."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
