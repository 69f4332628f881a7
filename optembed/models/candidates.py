"""A set of width candidates scored together on one batch, with its per-layer preparations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.layers.mlp import MLP
from optembed.layers.prefix_linear import PrefixLinear, PreparedWidths
from optembed.masks.dim_mask import apply_candidates, prefix_mask


class CandidateBatch:
    """``widths`` ``(C, n)``: ``C`` candidates, one prefix width per field.

    :meth:`stacked` gives every candidate's masked embeddings; :meth:`first_layer` gives a
    linear layer's output on them. With ``block`` set, that output is computed by
    :class:`PrefixLinear` (whole blocks of ``block`` columns shared by all candidates), which
    is exact up to rounding and needs far fewer multiply-adds than the stacked input; the layer's
    weights are read once per candidate set, so they must not change while it is in use.
    """

    def __init__(self, widths: Tensor, block: int | None = None) -> None:
        self.widths = widths
        self.block = block
        self._layers: dict[int, tuple[PrefixLinear, PreparedWidths]] = {}

    @property
    def size(self) -> int:
        return int(self.widths.shape[0])

    def masks(self, emb: Tensor) -> Tensor:
        """The candidates' 0/1 prefix masks ``(C, n, D)`` in ``emb``'s dtype."""
        return prefix_mask(self.widths, emb.shape[-1], emb.dtype)

    def stacked(self, emb: Tensor) -> Tensor:
        """``(B, n, D)`` -> ``(C * B, n, D)``, candidate-major."""
        return apply_candidates(emb, self.widths, flatten=True)

    def first_layer(self, linear: nn.Linear, emb: Tensor, extra: Tensor | None = None) -> Tensor:
        """``linear`` applied to ``[stacked(emb).flatten(1), extra]`` -> ``(C * B, out)``.

        ``extra`` ``(C * B, k)`` holds any inputs after the embeddings (e.g. IPNN's products).
        """
        n, dim = emb.shape[1], emb.shape[2]
        if self.block is None:
            return linear(self._stacked_input(emb, extra))
        key = id(linear)
        if key not in self._layers:
            prefix = PrefixLinear(linear.weight[:, : n * dim], n, dim, self.block)
            self._layers[key] = (prefix, prefix.prepare(self.widths))
        prefix, prep = self._layers[key]
        out = prefix(emb, prep)  # a work buffer of ``prefix``: updated in place
        if linear.bias is not None:
            out += linear.bias.float()
        if extra is not None:
            out = out.addmm(extra.float(), linear.weight[:, n * dim :].float().t())
        return out

    def through_mlp(self, mlp: MLP, emb: Tensor, extra: Tensor | None = None) -> Tensor:
        """``mlp`` on ``[stacked(emb).flatten(1), extra]`` -> ``(C * B, mlp.output_dim)``."""
        first = mlp.first
        if first is None:
            return self._stacked_input(emb, extra)
        return mlp.after_first(self.first_layer(first, emb, extra))

    def _stacked_input(self, emb: Tensor, extra: Tensor | None) -> Tensor:
        """``[stacked(emb).flatten(1), extra]``: every candidate's masked input, as a stacked layer sees it."""
        flat = self.stacked(emb).flatten(1)
        return flat if extra is None else torch.cat([flat, extra], dim=1)
