"""One embedding table shared by all fields, addressed by per-field ids plus field offsets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.errors import ConfigError

DEFAULT_INIT_STD = 0.01


class FieldEmbedding(nn.Module):
    """Embeddings of ``n_fields`` categorical fields stored in a single ``(|f|, dim)`` table.

    Field ``f`` owns rows ``offsets[f] .. offsets[f] + cardinalities[f] - 1``; an input
    ``x`` of shape ``(B, n_fields)`` holds per-field ids and is looked up at ``x + offsets``.

    Initialisation: every entry is drawn from ``N(init_mean, init_std^2)`` (default ``N(0, 0.01^2)``;
    a table combined by product, like QR's remainder table, starts around 1), so the
    L1 norm of a row starts around ``0.8 * init_std * dim`` - positive, hence above the
    row-pruning thresholds, which start at 0.

    ``sparse`` makes the table's gradient a sparse tensor (only the looked-up rows), for
    sparse optimizers; it is a plain attribute and may be switched after construction (the
    trainer sets it from ``--embedding-optimizer``).
    """

    offsets: Tensor

    def __init__(
        self,
        cardinalities: Sequence[int],
        dim: int,
        init_std: float = DEFAULT_INIT_STD,
        sparse: bool = False,
        init_mean: float = 0.0,
    ) -> None:
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if not cards:
            raise ConfigError("At least one field is needed to build an embedding table.")
        if min(cards) < 1:
            raise ConfigError(f"Every field needs a cardinality of at least 1, got {cards}.")
        if dim < 1:
            raise ConfigError(f"The embedding dimension must be at least 1, got {dim}.")
        if init_std <= 0:
            raise ConfigError(f"The embedding init std must be positive, got {init_std}.")
        self.cardinalities: tuple[int, ...] = tuple(cards)
        self.dim = int(dim)
        self.init_std = float(init_std)
        self.init_mean = float(init_mean)
        self.sparse = sparse
        self.weight = nn.Parameter(torch.empty(sum(cards), dim))
        counts = torch.tensor(cards, dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(counts, 0) - counts)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every entry again from ``N(init_mean, init_std^2)`` (``generator`` on the table's device)."""
        nn.init.normal_(self.weight, mean=self.init_mean, std=self.init_std, generator=generator)

    @property
    def n_fields(self) -> int:
        return len(self.cardinalities)

    @property
    def field_of_row(self) -> Tensor:
        """The field of every table row, ``LongTensor(|f|)`` (computed on demand, never stored)."""
        counts = torch.tensor(self.cardinalities, dtype=torch.long, device=self.offsets.device)
        return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)

    @property
    def num_rows(self) -> int:
        return int(self.weight.shape[0])

    def global_ids(self, x: Tensor) -> Tensor:
        """Per-field ids ``(..., n_fields)`` -> rows of the shared table."""
        return x + self.offsets

    def forward(self, x: Tensor) -> Tensor:
        """``(B, n_fields)`` ids -> ``(B, n_fields, dim)`` embeddings."""
        return F.embedding(self.global_ids(x), self.weight, sparse=self.sparse)
