"""Row-wise 8-bit quantization of an embedding table: uint8 codes, one float32 scale and bias per row.

Row ``r`` of a float table ``x`` (width ``D``) is stored as min/max affine codes::

    bias[r]  = min_j x[r, j]
    scale[r] = (max_j x[r, j] - bias[r]) / 255
    q[r, j]  = round((x[r, j] - bias[r]) / scale[r]), in 0..255   (0 for a constant row: scale 0)

and reads back as ``q * scale + bias``. This is the layout of FBGEMM's 8-bit row-wise tables
(uint8 codes, float32 scale and bias per row): a row costs ``D + 8`` bytes instead of ``4 D``.

Guarantees (tested against a per-element brute force): every element is within ``scale / 2`` of
its value (up to float32 rounding of the read-back); a constant row reads back exactly; a row
whose values lie on the 256-point grid ``min + k (max - min) / 255`` (for example any subset of
256 evenly spaced values that contains both ends) reads back exactly when the grid is exact in
float32. A zero-width table has empty codes and zero scales and biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS = 255  # the largest code: 256 levels per row
SCALE_DTYPE = torch.float32
ROW_OVERHEAD_BYTES = 2 * 4  # one float32 scale and one float32 bias per row
CHUNK_ROWS = 1 << 16  # rows quantized at once (float64 work space: CHUNK_ROWS x D x 8 bytes)


@dataclass(frozen=True)
class RowInt8:
    """A row-wise quantized table: ``codes`` ``(rows, D)`` uint8, ``scale`` and ``bias`` ``(rows,)`` float32."""

    codes: Tensor
    scale: Tensor
    bias: Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.bias))

    def dequantize(self) -> Tensor:
        """The whole float table (tests and error statistics; lookups dequantize gathered rows)."""
        return dequantize(self.codes, self.scale, self.bias)


def int8_bytes(rows: int, width: int) -> int:
    """Bytes of a ``rows`` x ``width`` table stored row-wise int8: codes + scale + bias."""
    return rows * (width + ROW_OVERHEAD_BYTES)


def int8_is_smaller(width: int) -> bool:
    """Whether a row of ``width`` float32 values takes fewer bytes as int8 (``D + 8 < 4 D``: ``D >= 3``)."""
    return width + ROW_OVERHEAD_BYTES < 4 * width


def quantize_rows(table: Tensor) -> RowInt8:
    """Quantize every row of a 2-D float table (see the module docstring). The codes are computed
    in float64 from the float32 scale that is stored, so they are the nearest grid points of
    what is read back. Raises :class:`ValueError` for a table that is not 2-D or holds a
    non-finite value."""
    if table.dim() != 2:
        raise ValueError(f"a table to quantize must be 2-D, got shape {tuple(table.shape)}")
    x = table.detach()
    rows, width = x.shape
    codes = torch.zeros(rows, width, dtype=torch.uint8, device=x.device)
    scale = torch.zeros(rows, dtype=SCALE_DTYPE, device=x.device)
    bias = torch.zeros(rows, dtype=SCALE_DTYPE, device=x.device)
    if rows == 0 or width == 0:
        return RowInt8(codes, scale, bias)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the table holds a non-finite value (NaN or infinity)")
    for start in range(0, rows, CHUNK_ROWS):
        part = x[start : start + CHUNK_ROWS].double()
        lo, hi = part.amin(dim=1), part.amax(dim=1)
        lo32 = lo.to(SCALE_DTYPE)
        s32 = ((hi - lo32.double()) / LEVELS).to(SCALE_DTYPE)
        s = s32.double()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.round((part - lo32.double().unsqueeze(1)) / safe.unsqueeze(1)).clamp_(0, LEVELS)
        q = torch.where(s.unsqueeze(1) > 0, q, torch.zeros_like(q))
        codes[start : start + CHUNK_ROWS] = q.to(torch.uint8)
        scale[start : start + CHUNK_ROWS] = s32
        bias[start : start + CHUNK_ROWS] = lo32
    return RowInt8(codes, scale, bias)


def dequantize(codes: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``codes`` ``(..., D)`` with their rows' ``scale`` and ``bias`` ``(...)`` -> float32 ``(..., D)``:
    ``codes * scale + bias`` (a cast, a multiply and an add; exportable as such)."""
    return codes.to(SCALE_DTYPE) * scale.unsqueeze(-1) + bias.unsqueeze(-1)
