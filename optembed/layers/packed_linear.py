"""A linear layer that reads only the columns of its input that can be nonzero.

A model over embeddings whose field ``f`` is zero beyond its width ``D_f`` (compact or quantized
tables, zero-padded to ``D``) feeds ``n x D`` inputs to its MLP, of which only ``sum(D_f)`` carry
values. :class:`PackedLinear` keeps the weight columns of those inputs alone, in the order
``kept`` lists them: given the packed inputs themselves (:meth:`PackedLinear.forward_packed`,
the columns in that order: :class:`~optembed.embedders.packed.PackedEmbeddings`) it is one matrix
product; given the ``n x D`` inputs (:meth:`PackedLinear.forward`) it gathers the kept columns
first. Either way the output is the full layer's, whose other columns only ever meet zeros.

The state keeps the columns in ascending order whatever ``kept``'s order (the layout model files
always had), so a file reads into a layer of any column order: the weight is permuted once when
it is loaded, never per batch (``state_dict(keep_vars=True)``, which hands out the parameter
itself, gives it in memory order). An optimizer's state follows the parameter, in memory order. A
state written by the full layer (``(out, in)`` weight) loads by taking its kept columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PackedLinear(nn.Linear):
    """``Linear(in_dim, out_dim)`` restricted to the input columns ``kept`` (unique, in the order
    of the packed inputs)."""

    kept: Tensor
    file_order: Tensor

    def __init__(self, in_dim: int, out_dim: int, kept: Tensor) -> None:
        super().__init__(int(kept.numel()), out_dim)
        self.full_in_features = in_dim
        kept = kept.long()
        # derived from the embedder's widths, which the model file records: not stored twice
        self.register_buffer("kept", kept, persistent=False)
        self.register_buffer("file_order", torch.argsort(kept), persistent=False)  # weight columns, ascending
        self.in_order = bool((kept[1:] > kept[:-1]).all())

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim)`` inputs (zero outside ``kept``)."""
        return F.linear(x.index_select(-1, self.kept), self.weight, self.bias)

    def forward_packed(self, x: Tensor) -> Tensor:
        """``(..., len(kept))`` inputs: the columns ``kept``, in its order."""
        return F.linear(x, self.weight, self.bias)

    def relayout(self, columns: Sequence[int]) -> nn.Linear:
        """A plain linear layer (a copy) over packed inputs whose columns are ``columns``: per
        input column, the ``in_dim`` column it holds, or ``-1`` for one that is always zero (its
        weight column is zero)."""
        position = {int(c): i for i, c in enumerate(self.kept.tolist())}
        missing = [c for c in columns if c >= 0 and c not in position]
        if missing:
            raise ValueError(f"columns {missing[:5]} are not among the layer's kept inputs")
        index = torch.tensor([position.get(int(c), len(position)) for c in columns], dtype=torch.long)
        with torch.no_grad():
            weight = self.weight.detach()
            padded = torch.cat([weight, weight.new_zeros(weight.shape[0], 1)], dim=1)
            out = nn.Linear(len(index), self.out_features, bias=self.bias is not None).to(weight.device, weight.dtype)
            out.weight.copy_(padded.index_select(1, index.to(weight.device)))
            if self.bias is not None:
                out.bias.copy_(self.bias.detach())
        return out.train(self.training)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self.in_order and not keep_vars:
            destination[prefix + "weight"] = self.weight.detach().index_select(1, self.file_order)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 2:
            if weight.shape[1] == self.full_in_features != self.in_features:
                state_dict[prefix + "weight"] = weight.index_select(1, self.kept.to(weight.device))
            elif weight.shape[1] == self.in_features and not self.in_order:
                rank = torch.argsort(self.file_order)  # where each kept column sits in ascending order
                state_dict[prefix + "weight"] = weight.index_select(1, rank.to(weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
