"""Per-field quantizer sizing: groups from the field's width, codebook size from its rows.

A codebook costs ``groups x K x sub_dim x 4`` bytes whatever the field's size, while its codes
cost ``rows x groups x code_size``. A fixed ``K`` lets codebooks dominate mid-size fields, so
each field gets the largest ``K`` that is a power of two (or the configured ``codebook`` itself),
at most ``codebook`` and at most the field's rows, whose codebooks cost at most
``codebook_share`` of the codes' bytes. A field for which even ``K = 2`` is too dear stays float.
The code dtype follows the field's own ``K`` (uint8 up to 256 entries, else uint16) unless
``code_dtype`` forces one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optembed.quantization.config import QuantizerConfig

FLOAT_BYTES = 4


@dataclass(frozen=True)
class FieldPlan:
    rows: int
    width: int
    groups: int
    sub_dim: int  # columns per group (the width is zero-padded to groups x sub_dim)
    codebook: int  # K for this field; 0 when the field stays float
    code_dtype: str  # uint8 | uint16 ("" when the field stays float)

    @property
    def code_size(self) -> int:
        return {"uint8": 1, "uint16": 2}.get(self.code_dtype, 0)

    @property
    def code_bytes(self) -> int:
        return self.rows * self.groups * self.code_size

    @property
    def codebook_bytes(self) -> int:
        return self.groups * self.codebook * self.sub_dim * FLOAT_BYTES

    @property
    def coded_bytes(self) -> int:
        return self.code_bytes + self.codebook_bytes

    @property
    def float_bytes(self) -> int:
        return self.rows * self.width * FLOAT_BYTES


def field_groups(width: int, cfg: QuantizerConfig) -> int:
    """Groups of a field of ``width`` columns: ``ceil(width / sub_dim)`` or ``groups``, at most ``width``."""
    groups = math.ceil(width / cfg.sub_dim) if cfg.sub_dim is not None else cfg.groups
    return max(1, min(groups, width))


def _candidates(cfg: QuantizerConfig, rows: int) -> list[int]:
    """Codebook sizes to try, largest first: ``codebook`` then the powers of two below it, >= 2."""
    top = min(cfg.codebook, rows)
    sizes = [top] if top >= 2 else []
    k = 1 << (max(top, 1).bit_length() - 1)
    if k == top:
        k //= 2
    while k >= 2:
        sizes.append(k)
        k //= 2
    return sizes


def plan_field(rows: int, width: int, cfg: QuantizerConfig) -> FieldPlan:
    """The quantizer of one field (see the module docstring); ``codebook == 0`` means float."""
    groups = field_groups(width, cfg)
    sub_dim = math.ceil(width / groups)
    for k in _candidates(cfg, rows):
        plan = FieldPlan(rows, width, groups, sub_dim, k, cfg.code_dtype_for(k))
        if plan.codebook_bytes <= cfg.codebook_share * plan.code_bytes:
            return plan
    return FieldPlan(rows, width, groups, sub_dim, 0, "")
