"""Row gathers from several tables that lie end to end in one flat buffer, with one gradient buffer.

A compact embedder's tables of one width each are slices of its one parameter ``flat``. Gathering
from each slice with autograd's own operators gives, per slice, a backward pass that fills a
zero tensor as large as the whole buffer and adds it into the gradient: one full-size fill, copy
and add per width. :func:`group_gather` does the gathers as one operation whose backward takes
each table's dense embedding gradient and lays them end to end (one copy of the buffer): about
the cost of one dense table's embedding backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Geometry = tuple[tuple[int, int, int], ...]  # per table: first entry in the buffer, rows, width


def _table(flat: Tensor, first: int, rows: int, width: int) -> Tensor:
    return flat[first : first + rows * width].view(rows, width)


class _GroupGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, geometry: Geometry, flat: Tensor, *indices: Tensor) -> tuple[Tensor, ...]:  # noqa: ANN401
        ctx.geometry = geometry
        ctx.numel = flat.numel()
        ctx.save_for_backward(*indices)
        return tuple(F.embedding(index, _table(flat, *g)) for g, index in zip(geometry, indices, strict=True))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # noqa: ANN401
        indices = ctx.saved_tensors
        parts: list[tuple[int, Tensor]] = []
        for (first, rows, width), index, g in zip(ctx.geometry, indices, grads, strict=True):
            if g is not None:  # the dense embedding backward of one table (rows, width)
                part = torch.ops.aten.embedding_dense_backward(g.reshape(-1, width), index.reshape(-1), rows, -1, False)
                parts.append((first, part.reshape(-1)))
        if not parts:
            return (None, None, *([None] * len(indices)))
        parts.sort(key=lambda p: p[0])
        pieces: list[Tensor] = []
        at = 0
        for first, part in parts:  # the tables end to end, zeros between and after them
            if first > at:
                pieces.append(part.new_zeros(first - at))
            pieces.append(part)
            at = first + part.numel()
        if at < ctx.numel:
            pieces.append(parts[0][1].new_zeros(ctx.numel - at))
        return (None, torch.cat(pieces), *([None] * len(indices)))


def group_gather(flat: Tensor, geometry: Sequence[tuple[int, int, int]], indices: Sequence[Tensor]) -> list[Tensor]:
    """Per table ``(first, rows, width)`` of ``flat``, its rows at ``indices[t]`` (any shape ``S``)
    -> ``S + (width,)``; the gradient reaches ``flat`` as one buffer."""
    if not torch.is_grad_enabled() or not flat.requires_grad:
        return [F.embedding(index, _table(flat, *g)) for g, index in zip(geometry, indices, strict=True)]
    return list(_GroupGather.apply(tuple(geometry), flat, *indices))
