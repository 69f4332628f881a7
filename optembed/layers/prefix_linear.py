"""A linear layer over prefix-masked field embeddings, for many width candidates at once.

For a candidate ``c`` with one width ``w_cf`` per field, the layer's output on a row is
``sum_f W_f[:, :w_cf] @ e_f[:w_cf]`` (``W_f`` the weight columns that see field ``f``). Stacking
the candidates multiplies every candidate's masked input by the whole weight. Here each field's
columns are cut into blocks of ``block`` columns instead. Per batch, the product of every block
with its weight columns is computed once for all candidates (one pass over the weight): a
``(blocks, B, H)`` table. A candidate's whole blocks are then a 0/1 selection of table slabs,
and the selections of all candidates are one matrix product ``(C, blocks) @ (blocks, B * H)``.
Only the columns between a width and its nearest block boundary (at most ``block // 2`` per
field) are multiplied per candidate, with the weight columns they need gathered (and, where
the boundary lies above the width, negated) once per candidate set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PreparedWidths:
    """Index tensors of one candidate set, reused for every batch."""

    select_t: Tensor  # (n * n_blocks, C): 1 for each whole block inside the candidate's widths
    rem_cols: Tensor  # (C, R): flattened column of each leftover column, n * dim where padded
    rem_weight: Tensor  # (C, R, H): +-weight columns of ``rem_cols`` (zero where padded)


class PrefixLinear:
    """``weight`` ``(H, n * dim)`` (no bias): the columns of a linear layer that see the
    flattened ``(n, dim)`` embeddings. Call :meth:`prepare` once per candidate set and then the
    object on each batch; the result is ``(C * B, H)`` in candidate-major order, held in a work
    buffer that the next call overwrites.
    """

    def __init__(self, weight: Tensor, n_fields: int, dim: int, block: int) -> None:
        if weight.dim() != 2 or weight.shape[1] != n_fields * dim:
            raise ValueError(f"weight must be (H, {n_fields * dim}), got {tuple(weight.shape)}")
        if block < 1:
            raise ValueError("block must be positive")
        self.n_fields, self.dim, self.block = n_fields, dim, min(block, dim)
        self.n_blocks = self.blocks_per_field(dim, block)
        self.pad = self.n_blocks * self.block - dim
        out = weight.shape[0]
        w = weight.detach().float().reshape(out, n_fields, dim)
        if self.pad:
            w = F.pad(w, (0, self.pad))
        # (n * n_blocks, block, H): the weight of every block, ready for one batched product
        self.block_weight = w.reshape(out, n_fields * self.n_blocks, self.block).permute(1, 2, 0).contiguous()
        zero = torch.zeros(1, out, dtype=w.dtype, device=w.device)
        self.weight_t = torch.cat([weight.detach().float().t(), zero])  # (n * dim + 1, H)
        self._buffers: dict[str, Tensor] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A work buffer kept between calls: large fresh allocations cost a page fault per page."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(shape, dtype=torch.float32, device=like.device)
        return buf

    @staticmethod
    def blocks_per_field(dim: int, block: int) -> int:
        return -(-dim // min(block, dim))

    @classmethod
    def table_bytes_per_row(cls, n_fields: int, dim: int, block: int, out_features: int) -> int:
        """Bytes of the per-batch block table for each row of the batch."""
        return 4 * n_fields * cls.blocks_per_field(dim, block) * out_features

    @property
    def out_features(self) -> int:
        return self.weight_t.shape[1]

    def prepare(self, widths: Tensor) -> PreparedWidths:
        """``widths`` ``(C, n)`` in ``1..dim`` -> the index tensors :meth:`__call__` needs.

        A width ends inside a block; the nearer block boundary is used, so at most
        ``block // 2`` columns per field are left over: the ones after the boundary below are
        added, the ones before the boundary above (whose whole block is selected) subtracted.
        """
        n, dim, block = self.n_fields, self.dim, self.block
        widths = widths.to(self.weight_t.device, torch.long)
        full = widths // block  # whole blocks below the width
        left = widths - full * block
        up = left > block // 2  # round up to the next boundary
        full = full + up.long()
        start = torch.where(up, widths, full * block)  # first leftover column
        count = torch.where(up, torch.clamp(full * block, max=dim) - widths, left)
        sign = torch.where(up, -1.0, 1.0)
        k = torch.arange(self.n_blocks, device=widths.device)
        select_t = (k < full.unsqueeze(-1)).flatten(1).float().t().contiguous()  # (n * n_blocks, C)
        fields = torch.arange(n, device=widths.device).view(1, n, 1)
        j = torch.arange(block // 2 + 1, device=widths.device)
        pad = n * dim
        valid = j < count.unsqueeze(-1)  # (C, n, j)
        cols = torch.where(valid, fields * dim + start.unsqueeze(-1) + j, torch.full_like(valid, pad, dtype=torch.long))
        signs = sign.unsqueeze(-1).expand_as(cols)
        order = cols.flatten(1).argsort(dim=1, stable=True)  # real columns first, padding last
        width = int(count.sum(dim=1).max()) if widths.numel() else 0
        order = order[:, :width]
        cols = cols.flatten(1).gather(1, order).contiguous()
        signs = signs.flatten(1).gather(1, order)
        return PreparedWidths(select_t, cols, self.weight_t[cols] * signs.unsqueeze(-1))

    def __call__(self, emb: Tensor, prep: PreparedWidths) -> Tensor:
        """``(B, n, dim)`` embeddings -> ``(C * B, H)`` float32 outputs of every prepared candidate
        (computed in float32 even under autocast: the sums of many blocks need the precision)."""
        with torch.autocast(emb.device.type, enabled=False):
            return self._forward(emb, prep)

    def _forward(self, emb: Tensor, prep: PreparedWidths) -> Tensor:
        batch = emb.shape[0]
        n_cand = prep.select_t.shape[1]
        out_features = self.out_features
        emb = emb.float()
        padded = F.pad(emb, (0, self.pad)) if self.pad else emb
        parts = padded.reshape(batch, -1, self.block).transpose(0, 1)  # (n * n_blocks, B, block)
        table = self._buffer("table", (parts.shape[0], batch, out_features), emb)
        torch.bmm(parts, self.block_weight, out=table)
        # (B * H, blocks) @ (blocks, C): the layout a product with few candidates runs fastest in
        chosen = self._buffer("chosen", (batch * out_features, n_cand), emb)
        torch.mm(table.view(table.shape[0], -1).t(), prep.select_t, out=chosen)
        out = self._buffer("out", (n_cand, batch, out_features), emb)
        whole = chosen.t().view(n_cand, batch, out_features)
        if prep.rem_cols.shape[1]:
            flat = F.pad(emb.reshape(batch, -1), (0, 1))  # a zero column for the padding index
            left = flat[:, prep.rem_cols].transpose(0, 1)  # (C, B, R)
            torch.bmm(left, prep.rem_weight, out=out)
            out += whole
        else:
            out.copy_(whole)
        return out.view(n_cand * batch, out_features)
