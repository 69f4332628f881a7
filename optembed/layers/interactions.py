"""Feature-interaction operators: FM second-order term, cross network, pairwise inner products."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fm_second_order(emb: Tensor) -> Tensor:
    """``sum_{i<j} <e_i, e_j>`` for ``emb`` of shape ``(B, n, D)`` -> ``(B,)``.

    Uses the identity ``sum_{i<j} <e_i, e_j> = 0.5 * (|sum_i e_i|^2 - sum_i |e_i|^2)``.
    """
    square_of_sum = emb.sum(dim=1).pow(2)
    sum_of_squares = emb.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=-1)


def fm_second_order_packed(blocks: Sequence[Tensor], flat: Tensor) -> Tensor:
    """:func:`fm_second_order` of fields zero-padded to a common width, from the unpadded
    ``(B, n_g, W_g)`` blocks of fields of one width and ``flat``, the ``(B, P)`` blocks flattened
    end to end -> ``(B,)``.

    Column ``k`` of ``sum_f e_f`` sums the fields wider than ``k`` only: every block's sum over its
    fields, ``(B, W_g)``, added into the first ``W_g`` columns (narrowest first, each partial sum
    padded to the next width: nothing is as wide as the padded block but one ``(B, max W_g)``
    sum); ``sum_f |e_f|^2`` is the sum of the squares of all packed entries.
    """
    sums = sorted((b.sum(dim=1) for b in blocks), key=lambda s: s.shape[-1])
    total = sums[0]
    for s in sums[1:]:
        grow = s.shape[-1] - total.shape[-1]
        total = s + (F.pad(total, (0, grow)) if grow else total)
    return 0.5 * (total.pow(2).sum(dim=-1) - flat.pow(2).sum(dim=-1))


def fm_second_order_masked(emb: Tensor, masks: Tensor) -> Tensor:
    """:func:`fm_second_order` of ``emb * masks[c]`` for every 0/1 mask ``c``: ``(B, n, D)``
    embeddings and ``(C, n, D)`` masks -> ``(C, B)``, without building the ``C`` masked copies.
    """
    per_dim = masks.permute(2, 0, 1)  # (D, C, n): one product per embedding column
    emb = emb.permute(2, 1, 0)  # (D, n, B)
    sums = torch.bmm(per_dim, emb)  # (D, C, B): the masked sum over fields
    squares = torch.bmm(per_dim, emb * emb)  # a 0/1 mask equals its square
    return 0.5 * (sums * sums - squares).sum(dim=0)


class PairwiseInnerProduct(nn.Module):
    """All ``n (n - 1) / 2`` inner products ``<e_i, e_j>``, ``i < j``, in row-major order."""

    rows: Tensor
    cols: Tensor

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        idx = torch.triu_indices(n_fields, n_fields, offset=1)
        self.register_buffer("rows", idx[0], persistent=False)
        self.register_buffer("cols", idx[1], persistent=False)

    @property
    def output_dim(self) -> int:
        return int(self.rows.numel())

    def forward(self, emb: Tensor) -> Tensor:
        """``(B, n, D)`` -> ``(B, n (n - 1) / 2)``."""
        gram = torch.bmm(emb, emb.transpose(1, 2))
        return gram[:, self.rows, self.cols]


class CrossNetwork(nn.Module):
    """DCN cross layers: ``x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l`` on ``(B, in_dim)``."""

    def __init__(self, in_dim: int, n_layers: int) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(in_dim)) for _ in range(n_layers)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(in_dim)) for _ in range(n_layers)])
        bound = in_dim ** -0.5
        for w in self.weights:
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x
