"""A product quantizer over rows of one width: ``groups`` sub-vectors, one codebook each.

A row of width ``dim`` is zero-padded to ``groups * sub_dim`` (``sub_dim = ceil(dim / groups)``),
split into ``groups`` sub-vectors, and each sub-vector is replaced by its nearest codebook entry.
Padding (rather than refusing widths that ``groups`` does not divide) lets OptEmbed's mixed
widths all be quantized; the padded columns are zero in every row, and decoding drops them.
A width below ``groups`` uses ``dim`` groups of one column.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def code_dtype(codebook: int) -> torch.dtype:
    """The smallest unsigned dtype holding codes ``0..codebook-1``."""
    return torch.uint8 if codebook <= 256 else torch.uint16


class ProductQuantizer(nn.Module):
    def __init__(self, dim: int, groups: int, codebook: int) -> None:
        super().__init__()
        self.dim = dim
        self.groups = max(1, min(groups, dim))
        self.sub_dim = math.ceil(dim / self.groups)
        self.codebook = codebook
        self.codebooks = nn.Parameter(torch.zeros(self.groups, codebook, self.sub_dim))

    @property
    def padded(self) -> int:
        return self.groups * self.sub_dim

    def split(self, x: Tensor) -> Tensor:
        """``(N, dim)`` -> ``(N, groups, sub_dim)`` with zero padding."""
        if self.padded > self.dim:
            x = torch.nn.functional.pad(x, (0, self.padded - self.dim))
        return x.reshape(x.shape[0], self.groups, self.sub_dim)

    def init_from(self, rows: Tensor, generator: torch.Generator | None = None) -> None:
        """Start every codebook from distinct random rows' sub-vectors (repeats if too few rows)."""
        parts = self.split(rows.detach())
        n = parts.shape[0]
        pick = torch.randperm(n, generator=generator)[: self.codebook] if n >= self.codebook else torch.randint(
            0, n, (self.codebook,), generator=generator
        )
        with torch.no_grad():
            self.codebooks.copy_(parts[pick].transpose(0, 1))

    def distances(self, x: Tensor) -> Tensor:
        """Squared distances ``(N, groups, codebook)`` of each sub-vector to each entry."""
        parts = self.split(x)
        cross = torch.einsum("ngd,gkd->ngk", parts, self.codebooks)
        return (parts * parts).sum(-1, keepdim=True) - 2 * cross + (self.codebooks**2).sum(-1).unsqueeze(0)

    @torch.no_grad()
    def encode(self, x: Tensor, chunk: int = 16384) -> Tensor:
        """Nearest-entry codes ``(N, groups)`` as ``int64``.

        A row's own squared norm does not change which entry is nearest, so each chunk of rows
        scores ``|c|^2 - 2 x.c`` with one batched product per chunk, laid out ``(groups, rows,
        codebook)``; chunks keep that score tensor small.
        """
        books = self.codebooks.detach()
        norms = (books * books).sum(-1).unsqueeze(1)  # (groups, 1, codebook)
        books_t = books.transpose(1, 2)  # (groups, sub_dim, codebook)
        codes = torch.empty(x.shape[0], self.groups, dtype=torch.long, device=x.device)
        for i in range(0, x.shape[0], chunk):
            parts = self.split(x[i : i + chunk].detach()).transpose(0, 1)  # (groups, rows, sub_dim)
            scores = torch.baddbmm(norms, parts.to(books.dtype), books_t, alpha=-2)
            codes[i : i + chunk] = scores.min(dim=-1).indices.t()  # min's indices: ~2x argmin's speed on CPU
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``(N, groups)`` (any integer dtype) -> rows ``(N, dim)``."""
        idx = codes.long()
        groups = torch.arange(self.groups, device=idx.device)
        parts = self.codebooks[groups, idx]  # (N, groups, sub_dim)
        return parts.reshape(idx.shape[0], self.padded)[:, : self.dim]

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes, q)``: nearest codes and the quantized rows, with a straight-through path.

        ``q`` equals the decoded rows in value; gradients reach the codebooks through the
        gather and the input ``x`` through the straight-through estimator.
        """
        codes = self.encode(x)
        q = self.decode(codes)
        return codes, q + (x - x.detach())

    def code_bytes(self, rows: int) -> int:
        return rows * self.groups * torch.empty(0, dtype=code_dtype(self.codebook)).element_size()

    def codebook_bytes(self) -> int:
        return self.codebooks.numel() * self.codebooks.element_size()
