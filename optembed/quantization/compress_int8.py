"""Quantize a compact model's tables row-wise int8 (:mod:`optembed.quantization.int8`).

Every field whose int8 form is smaller than its float table (width 3 or more: ``D + 8 < 4 D``
bytes per row) becomes a :class:`RowInt8Field`; a field of width 0, 1 or 2 keeps its float table.
Per-feature head terms (DeepFM's per-id linear weights, one column) stay float32 in the network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from optembed.models.base import CTRModel
from optembed.progress import NULL, Reporter
from optembed.quantization.int8 import int8_bytes, int8_is_smaller
from optembed.quantization.fields import DenseField, FieldTable, RowInt8Field
from optembed.quantization.model import quantized_model


def int8_reason(width: int) -> str:
    """Why a field of ``width`` columns stays float ("" when it is stored int8)."""
    return "" if int8_is_smaller(width) else f"width {width}: int8 rows ({width} + 8 bytes) would not be smaller"


def int8_codable(compact: CTRModel) -> bool:
    """Whether any field of ``compact`` would be stored int8."""
    return any(not int8_reason(width) for width in compact.embedder.field_widths())


def quantize_compact_int8(
    compact: CTRModel, field_names: Sequence[str] | None = None, reporter: Reporter = NULL
) -> tuple[CTRModel, list[dict[str, Any]]]:
    """The model with every field of width >= 3 stored row-wise int8, the others float, and one
    statistics row per field (rows, width, stored or not and why, bytes before/after, the largest
    and mean squared reconstruction error). Raises :class:`ValueError` naming the field and row
    when a table holds a non-finite value or a row whose range exceeds the largest float32."""
    fields: list[FieldTable] = []
    stats: list[dict[str, Any]] = []
    field_names = list(field_names) if field_names is not None else [f"f{i}" for i in range(compact.n_fields)]
    task = reporter.task("quantizing (int8)", total=len(field_names), unit="field")
    for f, name in enumerate(field_names):
        table = compact.embedder.table(f).detach().float().cpu()  # type: ignore[operator]
        rows, width = table.shape
        float_bytes = table.numel() * 4
        row: dict[str, Any] = {"field": name, "rows": rows, "width": width, "float_bytes": float_bytes}
        reason = int8_reason(width)
        if reason:
            fields.append(DenseField(table))
            row.update(coded=False, reason=reason, bytes=float_bytes, max_abs_error=0.0, mse=0.0, seconds=0.0)
        else:
            started = time.perf_counter()
            try:
                field = RowInt8Field.from_table(table)
            except ValueError as exc:
                raise ValueError(f"field {name}: {exc}") from None
            err = (field(slice(None)) - table) if rows else table
            nbytes = sum(field.byte_counts().values())
            assert nbytes == int8_bytes(rows, width), (name, nbytes)
            fields.append(field)
            row.update(coded=True, reason="", bytes=nbytes, max_abs_error=float(err.abs().max()) if err.numel() else 0.0,
                       mse=float(err.pow(2).mean()) if err.numel() else 0.0,
                       seconds=round(time.perf_counter() - started, 3))
        stats.append(row)
        task.advance(1)
    task.close()
    return quantized_model(compact, fields), stats
