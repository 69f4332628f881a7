"""Model files of the older formats, read as today's model files.

Before one format served every kind, the compact model of ``retrain`` was an ``optembed-compact``
file (per-field tables, int32 remaps, the head's state) and the quantized model of ``compress``
an ``optembed-quantized`` file (per-field codes, codebooks, int8 rows or float tables; the id
remaps as int32 in version 1, as keep bits and rank counts from version 2). :func:`convert`
rebuilds their embedder from those tensors and returns the payload a model file of today holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from optembed.embedders.base import Embedder
from optembed.embedders.compact import CompactEmbedder
from optembed.errors import ArtifactError
from optembed.models.heads import LEGACY_TABLE_KEYS
from optembed.safe_load import expect_dict

COMPACT, QUANTIZED = "optembed-compact", "optembed-quantized"
LEGACY_FORMATS = (COMPACT, QUANTIZED)


def _compact(payload: dict[str, Any], dim: int) -> Embedder:
    if payload.get("version") != 1:
        raise ArtifactError(f"compact model version {payload.get('version')}, expected 1")
    return CompactEmbedder(payload["tables"], payload["remaps"], dim)


def _quantized(payload: dict[str, Any], dim: int) -> Embedder:
    from optembed.quantization.fields import CodedField, DenseField, FieldTable, RowInt8Field
    from optembed.quantization.model import quantized_embedder
    from optembed.quantization.rank_remap import RankRemap

    version = payload.get("version")
    if version not in (1, 2, 3):
        raise ArtifactError(f"quantized model version {version}, expected 1 to 3")
    fields: list[FieldTable] = []
    for spec in payload["fields"]:
        kind = spec["kind"]
        if kind == "coded":
            fields.append(CodedField(spec["codes"], spec["codebooks"], spec["width"]))
        elif kind == "int8":
            fields.append(RowInt8Field(spec["codes"], spec["scale"], spec["bias"]))
        elif kind == "dense":
            fields.append(DenseField(spec["table"]))
        else:
            raise ArtifactError(f"unknown quantized field kind {kind!r}")
    if version == 1:  # int32 remaps, None for the identity
        remaps: list[Tensor] = payload["remaps"] or [torch.arange(c) for c in payload["cardinalities"]]
        return quantized_embedder(fields, remaps, dim)
    id_map = None if payload["id_map"] is None else RankRemap(**payload["id_map"])
    return quantized_embedder(fields, id_map, dim, payload["cardinalities"])


def convert(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """The model-file payload of an older compact or quantized file ``payload``."""
    from optembed.models.checkpoint import FORMAT, VERSION

    kind = "compact model file" if payload["format"] == COMPACT else "quantized model file"
    expect_dict(payload, path, kind, ("model_config", "field_names", "head_state"))
    dim = int(payload["model_config"].get("embed_dim", 0))
    try:
        embedder = (_compact if payload["format"] == COMPACT else _quantized)(payload, dim)
    except ArtifactError as exc:
        raise ArtifactError(f"{path} has a {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is a damaged {kind}: {exc}") from None
    state = {k: v for k, v in dict(payload["head_state"]).items() if not k.startswith(LEGACY_TABLE_KEYS)}
    state.update({f"embedder.{k}": v for k, v in embedder.state_dict().items()})
    return {
        "format": FORMAT, "version": VERSION, "model_config": payload["model_config"], "embedder": embedder.spec(),
        "mode": "none", "cardinalities": list(embedder.cardinalities), "field_names": list(payload["field_names"]),
        "state_dict": state, "extra": payload.get("extra") or {},
    }
