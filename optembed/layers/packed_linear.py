"""A linear layer that reads only the columns of its input that can be nonzero.

A model over embeddings whose field ``f`` is zero beyond its width ``D_f`` (compact or quantized
tables, zero-padded to ``D``) feeds ``n x D`` inputs to its MLP, of which only ``sum(D_f)`` carry
values. :class:`PackedLinear` keeps the weight columns of those inputs alone: it gathers them from
the input and multiplies by a ``(out, len(kept))`` weight, the same output as the full layer
(whose other columns only ever meet zeros) at the cost of the kept columns. A state written by
the full layer (``(out, in)`` weight) loads by taking its kept columns.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class PackedLinear(nn.Linear):
    """``Linear(in_dim, out_dim)`` restricted to the input columns ``kept`` (sorted, unique)."""

    kept: Tensor

    def __init__(self, in_dim: int, out_dim: int, kept: Tensor) -> None:
        super().__init__(int(kept.numel()), out_dim)
        self.full_in_features = in_dim
        # derived from the embedder's widths, which the model file records: not stored twice
        self.register_buffer("kept", kept.long(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.index_select(-1, self.kept), self.weight, self.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 2 and weight.shape[1] == self.full_in_features != self.in_features:
            state_dict[prefix + "weight"] = weight.index_select(1, self.kept.to(weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
