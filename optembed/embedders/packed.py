"""Packed embeddings: only the columns a field's width keeps, in groups of fields of one width.

An embedder whose field ``f`` is zero beyond its width ``D_f`` (the compact tables) can hand the
head its embeddings without the zero padding to ``D``. A :class:`PackedLayout` says how: the
fields in groups, widest group first, each group's fields in field order; group ``g`` is one
``(B, n_g, W_g)`` block (a field narrower than ``W_g`` padded to it, which only an exported
graph's merged width groups do), and the packed columns are the groups' blocks flattened and
concatenated: ``sum_g n_g x W_g`` columns, ``sum_f D_f`` for the exact layout
(:meth:`PackedLayout.exact`, one group per distinct width).

:class:`PackedEmbeddings` holds the blocks and what the heads read from them: the packed columns
(an MLP's first layer reads them with its weight columns in the same order), and, for heads that
need the fields side by side, the ``(B, n, D)`` zero-padded block in field order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PackedLayout:
    """``groups``: ``(W_g, fields)`` widest first; ``widths``: every field's own width ``D_f``
    (at most its group's); ``dim``: the width ``D`` of the zero-padded block."""

    groups: tuple[tuple[int, tuple[int, ...]], ...]
    widths: tuple[int, ...]
    dim: int

    @classmethod
    def exact(cls, widths: Sequence[int], dim: int) -> PackedLayout:
        """One group per distinct width, widest first, its fields in field order."""
        ws = [int(w) for w in widths]
        groups = tuple((w, tuple(f for f, v in enumerate(ws) if v == w)) for w in sorted(set(ws), reverse=True))
        return cls(groups, tuple(ws), int(dim))

    @classmethod
    def of_groups(cls, groups: Sequence[tuple[int, Sequence[int]]], widths: Sequence[int], dim: int) -> PackedLayout:
        return cls(tuple((int(w), tuple(int(f) for f in fs)) for w, fs in groups), tuple(int(w) for w in widths), int(dim))

    def columns(self) -> list[int]:
        """Per packed column, its column ``f x D + c`` in the flattened ``(n, D)`` block, or ``-1``
        for a column past the field's width (a merged group's padding: always zero)."""
        dim = self.dim
        return [f * dim + c if c < self.widths[f] else -1 for w, fields in self.groups for f in fields for c in range(w)]

    @property
    def is_exact(self) -> bool:
        """Whether no packed column is padding (every field as wide as its group)."""
        return all(self.widths[f] == w for w, fields in self.groups for f in fields)


class PackedEmbeddings:
    """One batch's embeddings in a :class:`PackedLayout`: ``blocks[g]`` is ``(B, n_g, W_g)``;
    ``inverse`` the field permutation from packed order back to field order (``None``: none)."""

    def __init__(self, blocks: Sequence[Tensor], layout: PackedLayout, inverse: Tensor | None) -> None:
        if len(blocks) != len(layout.groups):
            raise ValueError(f"{len(blocks)} blocks for a layout of {len(layout.groups)} groups")
        self.blocks = list(blocks)
        self.layout = layout
        self.inverse = inverse

    @cached_property
    def flat(self) -> Tensor:
        """``(B, P)``: the packed columns (the blocks flattened, end to end)."""
        parts = [b.flatten(1) for b in self.blocks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def padded(self) -> Tensor:
        """``(B, n, D)`` in field order, every field zero-padded to ``D``: what a head over the
        unpacked embeddings reads."""
        dim = self.layout.dim
        parts = [F.pad(b, (0, dim - b.shape[-1])) if b.shape[-1] < dim else b for b in self.blocks]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return out if self.inverse is None else out.index_select(1, self.inverse)
