"""Row (feature) pruning: a learnable per-field threshold on the norm of each embedding row."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.errors import ConfigError
from optembed.masks.step import long_tail_step

NORMS = ("l1", "l2")
TABLE_CHUNK_ROWS = 1 << 20


def row_norms(rows: Tensor, norm: str) -> Tensor:
    """L1 or L2 norm over the last dimension (the full embedding width)."""
    if norm == "l1":
        return rows.abs().sum(dim=-1)
    return torch.linalg.vector_norm(rows, ord=2, dim=-1)


class RowPruner(nn.Module):
    """The row mask ``m_e[v] = S(norm(E[v]) - t[field(v)])`` with thresholds ``t`` (init 0).

    ``S`` is the unit step with the long-tail gradient (:func:`long_tail_step`), so both the
    thresholds and the embedding rows receive gradients through the mask.
    """

    def __init__(self, n_fields: int, norm: str = "l1") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"Unknown row norm {norm!r}; choose one of {', '.join(NORMS)}.")
        if n_fields < 1:
            raise ConfigError(f"The row pruner needs at least one field, got {n_fields}.")
        self.norm = norm
        self.threshold = nn.Parameter(torch.zeros(n_fields))

    def forward(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Mask looked-up rows ``(B, n, D)`` (full width ``D``, field ``f`` in column ``f``).

        Returns ``(rows * m[..., None], m)`` with ``m`` of shape ``(B, n)``, values in {0, 1}.
        """
        m = long_tail_step(row_norms(rows, self.norm) - self.threshold.to(rows.dtype))
        return rows * m.unsqueeze(-1), m

    def regularizer(self) -> Tensor:
        """``sum_i exp(-t_i)``; the training loss adds ``alpha`` times this."""
        return torch.exp(-self.threshold).sum()

    @torch.no_grad()
    def table_mask(self, weight: Tensor, field_of_row: Tensor) -> Tensor:
        """The mask of every row of the table ``(|f|, D)`` as a ``BoolTensor(|f|)``.

        Same rule as :meth:`forward` (``norm > threshold``), computed in chunks of rows.
        """
        out = torch.empty(weight.shape[0], dtype=torch.bool, device=weight.device)
        t = self.threshold.detach().to(device=weight.device, dtype=weight.dtype)
        for start in range(0, weight.shape[0], TABLE_CHUNK_ROWS):
            stop = start + TABLE_CHUNK_ROWS
            norms = row_norms(weight[start:stop], self.norm)
            out[start:stop] = norms - t[field_of_row[start:stop]] > 0
        return out

    @torch.no_grad()
    def kept_per_field(self, weight: Tensor, field_of_row: Tensor) -> Tensor:
        """Number of rows kept by :meth:`table_mask` in each field, ``LongTensor(n_fields)``."""
        keep = self.table_mask(weight, field_of_row)
        return torch.bincount(field_of_row[keep], minlength=self.threshold.numel())
