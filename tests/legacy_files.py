"""Model files in the formats optembed wrote before one format served every kind (the old
writers, kept here so that the readers of those files stay tested)."""

from __future__ import annotations

from typing import Any

import torch

from optembed.models.base import CTRModel
from optembed.models.heads import head_state


def legacy_compact_payload(model: CTRModel, field_names: list[str]) -> dict[str, Any]:
    """An ``optembed-compact`` version 1 file of a model over a compact embedder."""
    e = model.embedder
    n = e.n_fields
    return {
        "format": "optembed-compact", "version": 1, "model_config": model.cfg.to_dict(), "field_names": list(field_names),
        "widths": e.field_widths(), "kept": e.field_rows(),
        "tables": [e.table(f).detach().clone() for f in range(n)],  # type: ignore[operator]
        "remaps": [e.field_remap(f).clone() for f in range(n)],  # type: ignore[operator]
        "head_state": head_state(model), "extra": {},
    }


def legacy_quantized_payload(model: CTRModel, field_names: list[str], version: int) -> dict[str, Any]:
    """An ``optembed-quantized`` file of ``version`` 1 (int32 remaps), 2 or 3 (keep bits and rank
    counts; 3 when a field is int8) of a model over a quantized embedder."""
    e = model.embedder
    fields: list[dict[str, Any]] = []
    for f in e.fields:  # type: ignore[attr-defined]
        if f.kind == "coded":
            fields.append({"kind": "coded", "codes": f.codes, "codebooks": f.codebooks.detach(), "width": f.width})
        elif f.kind == "int8":
            fields.append({"kind": "int8", "codes": f.codes, "scale": f.scale, "bias": f.bias})
        else:
            fields.append({"kind": "dense", "table": f.table.detach()})
    payload: dict[str, Any] = {
        "format": "optembed-quantized", "version": version, "model_config": model.cfg.to_dict(),
        "field_names": list(field_names), "kept": e.field_rows(), "fields": fields,
        "cardinalities": list(e.cardinalities), "head_state": head_state(model), "extra": {},
    }
    if version == 1:
        identity = e.id_map is None  # type: ignore[attr-defined]
        payload["remaps"] = None if identity else [e.field_remap(f).to(torch.int32) for f in range(e.n_fields)]  # type: ignore[operator]
    else:
        payload["id_map"] = None if e.id_map is None else e.id_map.state()  # type: ignore[attr-defined]
    return payload
