"""Row-wise 8-bit quantization of an embedding table: uint8 codes, one float32 scale and bias per row.

Row ``r`` of a float table ``x`` (width ``D``) is stored as min/max affine codes::

    bias[r]  = min_j x[r, j]
    scale[r] = (max_j x[r, j] - bias[r]) / 255, rounded up to a float32 (so 255 steps cover the row)
    q[r, j]  = round((x[r, j] - bias[r]) / scale[r]), in 0..255   (0 for a constant row: scale 0)

and reads back as ``q * scale + bias`` (float32). This is the layout of FBGEMM's 8-bit row-wise
tables (uint8 codes, float32 scale and bias per row): a row costs ``D + 8`` bytes instead of ``4 D``.

Guarantees (tested against a per-element brute force): every element is within ``scale / 2`` of
its value (up to float32 rounding of the read-back); only a constant row has scale 0, and it
reads back exactly (a row whose range is below float32's smallest step still gets the smallest
positive scale); a row whose values lie on the 256-point grid ``min + k (max - min) / 255`` reads
back exactly when the grid is exact in float32. Every read-back is finite: a row near float32's
largest values gets its scale lowered by a few units in the last place until ``255 * scale +
bias`` does not overflow, and a row whose range ``max - min`` exceeds the largest float32 (it
could not be read back as ``q * scale + bias``) is refused. A zero-width table has empty codes
and zero scales and biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS = 255  # the largest code: 256 levels per row
SCALE_DTYPE = torch.float32
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
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
        lo32 = part.amin(dim=1).to(SCALE_DTYPE)
        lo = lo32.double()
        span = part.amax(dim=1) - lo
        too_wide = span > FLOAT32_MAX
        if bool(too_wide.any()):
            r = int(too_wide.nonzero()[0])
            raise ValueError(f"row {start + r} spans {float(span[r]):.4g} (max - min), more than the largest float32 "
                             f"({FLOAT32_MAX:.4g}); its int8 codes could not be read back")
        s32 = row_scales(span, lo32)
        s = s32.double()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.round((part - lo.unsqueeze(1)) / safe.unsqueeze(1)).clamp_(0, LEVELS)
        q = torch.where(s.unsqueeze(1) > 0, q, torch.zeros_like(q))
        codes[start : start + CHUNK_ROWS] = q.to(torch.uint8)
        scale[start : start + CHUNK_ROWS] = s32
        bias[start : start + CHUNK_ROWS] = lo32
    return RowInt8(codes, scale, bias)


def row_scales(span: Tensor, bias: Tensor) -> Tensor:
    """Float32 scales of rows with ``span`` = max - min (float64, at most the largest float32) and
    float32 ``bias``: the smallest float32 ``s`` with ``255 s >= span`` (0 only for span 0), each
    lowered by units in the last place while ``255 s + bias`` overflows in float32."""
    s32 = (span / LEVELS).to(SCALE_DTYPE)
    short = s32.double() * LEVELS < span  # rounded down: the grid would stop below the row's max
    s32 = torch.where(short, torch.nextafter(s32, torch.full_like(s32, math.inf)), s32)
    top = torch.full_like(s32, float(LEVELS)) * s32 + bias  # the largest code's read-back, as dequantize computes it
    over = ~torch.isfinite(top)
    while bool(over.any()):  # a few steps at most: 255 ulps of the scale move the top by at least one ulp
        s32 = torch.where(over, torch.nextafter(s32, torch.zeros_like(s32)), s32)
        top = torch.full_like(s32, float(LEVELS)) * s32 + bias
        over = ~torch.isfinite(top)
    return s32


def dequantize(codes: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``codes`` ``(..., D)`` with their rows' ``scale`` and ``bias`` ``(...)`` -> float32 ``(..., D)``:
    ``codes * scale + bias`` (a cast, a multiply and an add; exportable as such)."""
    return codes.to(SCALE_DTYPE) * scale.unsqueeze(-1) + bias.unsqueeze(-1)
