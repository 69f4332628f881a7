"""The per-field tables of a quantized embedding: float, product-quantized, row-wise int8.

Every field table maps the field's rows ``(B,)`` to ``(B, width)`` embeddings with exportable
operators (gathers, a cast, a multiply-add), so the one lookup serves fine-tuning, evaluation and
the exported graph. Each describes its shapes in :meth:`spec` (saved in model files) and
:func:`field_from_spec` rebuilds an empty one of those shapes for the file's state to fill.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.errors import ArtifactError
from optembed.quantization.int8 import SCALE_DTYPE, dequantize, quantize_rows

CODE_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16}


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class FieldTable(nn.Module):
    """One field's stored rows: ``forward(rows) -> (B, width)``."""

    kind: ClassVar[str] = ""
    coded: ClassVar[bool] = False  # stored as codes, not as a float table

    @property
    def rows(self) -> int:
        raise NotImplementedError

    @property
    def width(self) -> int:
        raise NotImplementedError

    def byte_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "width": self.width}


class DenseField(FieldTable):
    """A field kept as a float table ``(rows, width)``."""

    kind = "dense"

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.detach().float().clone())

    @property
    def rows(self) -> int:
        return int(self.table.shape[0])

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.table)

    def byte_counts(self) -> dict[str, int]:
        return {"codes": 0, "codebooks": 0, "scales": 0, "float_tables": _nbytes(self.table)}


class CodedField(FieldTable):
    """A product-quantized field: ``codes`` ``(rows, groups)`` and ``codebooks``
    ``(groups, K, sub_dim)``; a row is its groups' entries concatenated, cut to ``width``."""

    kind = "coded"
    coded = True
    codes: Tensor

    def __init__(self, codes: Tensor, codebooks: Tensor, width: int) -> None:
        super().__init__()
        if codes.dtype not in CODE_DTYPES.values():
            raise ValueError(f"codes must be uint8 or uint16, got {codes.dtype}")
        self.register_buffer("codes", codes.clone())
        self.codebooks = nn.Parameter(codebooks.detach().float().clone())
        self._width = int(width)

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def width(self) -> int:
        return self._width

    @property
    def groups(self) -> int:
        return int(self.codebooks.shape[0])

    def forward(self, ids: Tensor) -> Tensor:
        groups, entries, sub = self.codebooks.shape
        codes = self.codes[ids].long() + torch.arange(groups, device=ids.device) * entries  # rows of the stacked books
        return F.embedding(codes, self.codebooks.reshape(groups * entries, sub)).flatten(1)[:, : self._width]

    def byte_counts(self) -> dict[str, int]:
        return {"codes": _nbytes(self.codes), "codebooks": _nbytes(self.codebooks), "scales": 0, "float_tables": 0}

    def spec(self) -> dict[str, Any]:
        groups, entries, sub = self.codebooks.shape
        dtype = next(k for k, v in CODE_DTYPES.items() if v == self.codes.dtype)
        return {**super().spec(), "groups": int(groups), "codebook": int(entries), "sub_dim": int(sub), "code_dtype": dtype}


class RowInt8Field(FieldTable):
    """Row-wise int8 (:mod:`optembed.quantization.int8`): ``codes`` ``(rows, width)`` uint8 with
    per-row float32 ``scale`` and ``bias`` ``(rows,)``. All buffers: nothing in them trains
    (fine-tuning moves only the network around them); a lookup dequantizes the batch's rows only."""

    kind = "int8"
    coded = True
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


def field_from_spec(spec: dict[str, Any]) -> FieldTable:
    """An empty field table of ``spec``'s kind and shapes (a model file's state fills it)."""
    try:
        kind, rows, width = spec["kind"], int(spec["rows"]), int(spec["width"])
        if kind == DenseField.kind:
            return DenseField(torch.zeros(rows, width))
        if kind == CodedField.kind:
            codes = torch.zeros(rows, int(spec["groups"]), dtype=CODE_DTYPES[spec["code_dtype"]])
            return CodedField(codes, torch.zeros(int(spec["groups"]), int(spec["codebook"]), int(spec["sub_dim"])), width)
        if kind == RowInt8Field.kind:
            zeros = torch.zeros(rows, dtype=SCALE_DTYPE)
            return RowInt8Field(torch.zeros(rows, width, dtype=torch.uint8), zeros, zeros.clone())
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"bad quantized field description {spec!r}: {exc}") from None
    raise ArtifactError(f"unknown quantized field kind {spec.get('kind')!r}")
