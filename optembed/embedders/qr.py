"""QR: compositional embeddings by the quotient-remainder trick (Shi et al., KDD 2020).

A field of ``|S|`` values with ``c`` collisions has a quotient table of ``ceil(|S| / c)`` rows,
read at ``x // c``, and a remainder table of ``c`` rows, read at ``x mod c``; the two rows are
combined element-wise by product (``mult``, the paper's default), by sum (``add``) or by
concatenation (``concat``: the quotient row holds the first ``ceil(D / 2)`` columns, the
remainder row the rest). No two ids of a field share both rows, so every id keeps a distinct
embedding. A field with at most ``min_rows`` values (or at most ``c``) stays a whole table.

With the product the remainder table starts around 1 (``N(1, init_std^2)``), so the combined
rows start like the whole table's. Sparsity is ``1 - stored parameters / (|f| x D)``: ``c = 2``
gives about 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optembed.embedders.base import Embedder
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding

OPERATIONS = ("mult", "add", "concat")
DEFAULT_MIN_ROWS = 100


class QREmbedder(Embedder):
    """Whole tables for small fields; quotient and remainder tables for the others."""

    kind = "qr"
    split: Tensor
    whole_fields: Tensor
    split_fields: Tensor
    order: Tensor

    def __init__(
        self, cardinalities: Sequence[int], dim: int, collisions: int = 2, operation: str = "mult",
        min_rows: int = DEFAULT_MIN_ROWS, init_std: float = 0.01,
    ) -> None:
        super().__init__(cardinalities, dim)
        if collisions < 2:
            raise ConfigError(f"QR needs at least 2 collisions, got {collisions}")
        if operation not in OPERATIONS:
            raise ConfigError(f"unknown QR operation {operation!r}; choose one of {', '.join(OPERATIONS)}")
        if operation == "concat" and dim < 2:
            raise ConfigError("QR's concatenation needs an embedding width of at least 2")
        if min_rows < 0:
            raise ConfigError(f"QR's min_rows must be at least 0, got {min_rows}")
        self.collisions, self.operation, self.min_rows = int(collisions), operation, int(min_rows)
        split = [c > max(self.min_rows, self.collisions) for c in self.cardinalities]
        whole = [f for f, s in enumerate(split) if not s]
        parts = [f for f, s in enumerate(split) if s]
        self.register_buffer("whole_fields", torch.tensor(whole, dtype=torch.long), persistent=False)
        self.register_buffer("split_fields", torch.tensor(parts, dtype=torch.long), persistent=False)
        order = torch.argsort(torch.tensor(whole + parts))  # concatenated (whole, split) -> field order
        self.register_buffer("order", order, persistent=False)
        q_dim = dim if operation != "concat" else math.ceil(dim / 2)
        self.q_dim, self.r_dim = q_dim, (dim if operation != "concat" else dim - q_dim)
        self.whole = FieldEmbedding([self.cardinalities[f] for f in whole], dim, init_std) if whole else None
        self.quotient = (
            FieldEmbedding([math.ceil(self.cardinalities[f] / self.collisions) for f in parts], q_dim, init_std)
            if parts else None
        )
        mean = 1.0 if operation == "mult" else 0.0
        self.remainder = (
            FieldEmbedding([self.collisions] * len(parts), self.r_dim, init_std, init_mean=mean) if parts else None
        )

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "collisions": self.collisions, "operation": self.operation, "min_rows": self.min_rows}

    @property
    def split_mask(self) -> list[bool]:
        parts = set(self.split_fields.tolist())
        return [f in parts for f in range(self.n_fields)]

    def combine(self, q: Tensor, r: Tensor) -> Tensor:
        if self.operation == "mult":
            return q * r
        if self.operation == "add":
            return q + r
        return torch.cat([q, r], dim=-1)

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        pieces = []
        if self.whole is not None:
            pieces.append(self.whole(ids[:, self.whole_fields]))
        if self.quotient is not None and self.remainder is not None:
            x = ids[:, self.split_fields]
            pieces.append(self.combine(self.quotient(x // self.collisions), self.remainder(x % self.collisions)))
        return torch.cat(pieces, dim=1)[:, self.order]

    def kept_params(self) -> int:
        return sum(t.weight.numel() for t in self.tables())

    def field_rows(self) -> list[int]:
        """Stored rows per field: whole, or quotient plus remainder rows."""
        parts = self.split_mask
        return [
            math.ceil(c / self.collisions) + self.collisions if s else c
            for c, s in zip(self.cardinalities, parts, strict=True)
        ]
