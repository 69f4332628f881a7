"""Field-wise dimension masks: keep the first ``width`` columns of each field's embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_widths(
    batch: int,
    n_fields: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    full_share: float = 0.0,
) -> Tensor:
    """Widths drawn uniformly from ``1..dim`` per sample and field: ``LongTensor(batch, n)``.

    ``full_share``: the expected share of samples whose every field gets the full width instead.
    A ``generator`` must live on ``device``.
    """
    widths = torch.randint(1, dim + 1, (batch, n_fields), generator=generator, device=device)
    if full_share > 0:
        full = torch.rand((batch, 1), generator=generator, device=device) < full_share
        widths = torch.where(full, torch.full_like(widths, dim), widths)
    return widths


def prefix_table(dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(dim + 1, dim)``: row ``w`` holds ``w`` ones then zeros (the prefix mask of width ``w``)."""
    cols = torch.arange(dim, device=device)
    return (cols < torch.arange(dim + 1, device=device).unsqueeze(-1)).to(dtype)


def prefix_mask(widths: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(..., n)`` widths -> ``(..., n, dim)`` mask, 1 where column index < width (a gather from
    the ``(dim + 1, dim)`` table of prefixes: cheaper than comparing and converting per element)."""
    return F.embedding(widths, prefix_table(dim, dtype, widths.device))


def apply_widths(emb: Tensor, widths: Tensor) -> Tensor:
    """Mask ``(B, n, D)`` embeddings with widths ``(n,)`` (shared) or ``(B, n)`` (per sample)."""
    return emb * prefix_mask(widths, emb.shape[-1], emb.dtype)


def apply_candidates(emb: Tensor, candidates: Tensor, flatten: bool = True) -> Tensor:
    """Apply ``C`` candidate width vectors ``(C, n)`` to ``(B, n, D)`` embeddings at once.

    Returns ``(C, B, n, D)``, or with ``flatten`` ``(C * B, n, D)`` in candidate-major
    order (rows ``c * B .. c * B + B - 1`` belong to candidate ``c``; pair them with
    ``x.repeat(C, 1)``).
    """
    masks = prefix_mask(candidates, emb.shape[-1], emb.dtype)  # (C, n, D)
    out = emb.unsqueeze(0) * masks.unsqueeze(1)
    return out.flatten(0, 1) if flatten else out
