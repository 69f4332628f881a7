"""A field stored row-wise int8 (:mod:`optembed.quantization.int8`) inside a quantized embedder.

The codes, scales and biases are buffers: nothing in them trains (fine-tuning, when asked for,
moves only the network around them). A lookup gathers the batch's code rows and their scale and
bias and dequantizes those rows only; no float copy of the table is ever made.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.quantization.int8 import SCALE_DTYPE, dequantize, quantize_rows


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class RowInt8Field(nn.Module):
    """``codes`` ``(rows, width)`` uint8 with per-row float32 ``scale`` and ``bias`` ``(rows,)``."""

    codes: Tensor
    scale: Tensor
    bias: Tensor

    def __init__(self, codes: Tensor, scale: Tensor, bias: Tensor) -> None:
        super().__init__()
        if codes.dtype != torch.uint8 or codes.dim() != 2:
            raise ValueError(f"int8 codes must be a 2-D uint8 tensor, got {codes.dtype} {tuple(codes.shape)}")
        for name, t in (("scale", scale), ("bias", bias)):
            if t.dtype != SCALE_DTYPE or tuple(t.shape) != (codes.shape[0],):
                raise ValueError(f"int8 {name} must be float32 of shape ({codes.shape[0]},), got {t.dtype} {tuple(t.shape)}")
        self.register_buffer("codes", codes.detach().clone())
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    @classmethod
    def from_table(cls, table: Tensor) -> RowInt8Field:
        q = quantize_rows(table.detach().float().cpu())
        return cls(q.codes, q.scale, q.bias)

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def width(self) -> int:
        return int(self.codes.shape[1])

    def forward(self, ids: Tensor) -> Tensor:
        return dequantize(self.codes[ids], self.scale[ids], self.bias[ids])

    def byte_counts(self) -> dict[str, int]:
        return {"codes": _nbytes(self.codes), "codebooks": 0, "scales": _nbytes(self.scale) + _nbytes(self.bias),
                "float_tables": 0}
