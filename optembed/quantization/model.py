"""A compact model whose large per-field tables are product-quantized (codes + codebooks).

Every field keeps the compact model's id remap (original id -> compact row), stored as a
keep-bitmap plus rank counts (:class:`RankRemap`, about 1.13 bits per original id instead of
an int32), and not stored at all when nothing was pruned (an Original model: the identity).
A coded field stores one code per row and group (uint8 for codebooks of at most 256 entries,
else uint16) and one small codebook per group, sized for that field (see
:mod:`optembed.quantization.plan`); a row-wise int8 field (:class:`RowInt8Field`) stores uint8
codes with one float32 scale and bias per row; the other fields keep their float table.
A lookup decodes on the fly (gather the codes of the batch's rows, gather their codebook
entries and concatenate the groups, or dequantize the gathered int8 rows): no full table is
ever rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import Embedder
from optembed.errors import ArtifactError
from optembed.models.compact import CompactModel, head_state, load_head
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import load_tensor_file, rebuild
from optembed.quantization.int8_field import RowInt8Field
from optembed.quantization.packed import PackedTables, state_key
from optembed.quantization.rank_remap import RankRemap

FORMAT = "optembed-quantized"
# Inference batches up to this many rows read the packed tables (:mod:`optembed.quantization.packed`):
# 3.5x faster than the per-field loop at batch 1 on a CPU, even at 256 rows, slower from 512 on
# (benchmarks/quantized_lookup.py), where the loop's per-field cost is spread over the batch.
PACKED_MAX_ROWS = 256
VERSION = 3  # 2: id remaps as keep bits + rank counts (version 1 files, int32 remaps, still load); 3: int8 fields
# Files without an int8 field are written as version 2, which readers before version 3 also read.
BYTE_KINDS = ("codes", "codebooks", "scales", "float_tables")


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class DenseField(nn.Module):
    """A field kept as a float table ``(rows, width)``."""

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


class CodedField(nn.Module):
    """A product-quantized field: ``codes`` ``(rows, groups)`` and ``codebooks``
    ``(groups, K, sub_dim)``; a row is its groups' entries concatenated, cut to ``width``."""

    codes: Tensor

    def __init__(self, codes: Tensor, codebooks: Tensor, width: int) -> None:
        super().__init__()
        if codes.dtype not in (torch.uint8, torch.uint16):
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
        codes = self.codes[ids].long()  # (B, groups)
        groups = torch.arange(self.groups, device=codes.device)
        parts = self.codebooks[groups, codes]  # (B, groups, sub_dim)
        return parts.reshape(ids.shape[0], -1)[:, : self._width]

    def byte_counts(self) -> dict[str, int]:
        return {"codes": _nbytes(self.codes), "codebooks": _nbytes(self.codebooks), "scales": 0, "float_tables": 0}


FieldTable = DenseField | CodedField | RowInt8Field


class QuantizedEmbedder(Embedder):
    """Per-field :class:`DenseField`/:class:`CodedField`/:class:`RowInt8Field` tables behind one id
    map (original id -> row; ``None``: the identity); each field's ``width`` columns are
    zero-padded to ``dim``."""

    kind = "quantized"

    def __init__(
        self, fields: Sequence[FieldTable], id_map: RankRemap | None, cardinalities: Sequence[int], dim: int
    ) -> None:
        super().__init__(cardinalities, dim)
        self.fields = nn.ModuleList(fields)
        self.id_map = id_map

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        return tuple(f.rows for f in self.fields)

    def ids(self, x: Tensor) -> Tensor:
        return x.long() if self.id_map is None else self.id_map(x)

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        if not torch.is_grad_enabled() and ids.shape[0] <= PACKED_MAX_ROWS and self.packable:
            return self.packed().lookup(ids)  # small inference batches: one gather, not one per field
        return self.lookup_per_field(ids)

    @property
    def packable(self) -> bool:
        """Whether the packed layout serves small batches: not with int8 fields, whose codes the
        layout would have to copy (a second copy of the largest part of such a model)."""
        return not any(isinstance(f, RowInt8Field) for f in self.fields)

    def lookup_per_field(self, ids: Tensor) -> Tensor:
        """One module call per field: what training (fine-tuning) differentiates through."""
        emb = torch.zeros(ids.shape[0], len(self.fields), self.dim, device=ids.device)
        for f, table in enumerate(self.fields):
            emb[:, f, : table.width] = table(ids[:, f])
        return emb

    def packed(self) -> PackedTables:
        """The fields' tables laid out for :meth:`PackedTables.lookup`, rebuilt after any change."""
        key = state_key(self.fields)
        cached = self.__dict__.get("_packed")
        if cached is None or cached[0] != key:
            device = next(iter((*self.fields.parameters(), *self.fields.buffers()))).device
            cached = (key, PackedTables(list(self.fields), self.dim, device))
            self.__dict__["_packed"] = cached
        return cached[1]

    def byte_counts(self) -> dict[str, int]:
        out = dict.fromkeys(BYTE_KINDS, 0)
        for f in self.fields:
            for key, value in f.byte_counts().items():
                out[key] += value
        return out

    def kept_params(self) -> int:
        """Kept rows x widths (the rows and widths quantized; sparsity as OptEmbed's)."""
        return sum(f.rows * f.width for f in self.fields)

    def stored_params(self) -> int:
        """Float parameters: codebooks and uncompressed tables (an int8 field's scales and biases
        are buffers, counted in bytes only)."""
        return sum(p.numel() for f in self.fields for p in f.parameters())

    def memory_bytes(self) -> dict[str, int]:
        counts = self.byte_counts()
        remaps = 0 if self.id_map is None else self.id_map.nbytes()
        return {"embedding": sum(counts.values()), "remaps": remaps}

    def field_widths(self) -> list[int]:
        return [f.width for f in self.fields]

    def field_rows(self) -> list[int]:
        return [f.rows for f in self.fields]


class QuantizedModel(nn.Module):
    """A backbone over a :class:`QuantizedEmbedder`, with the field names."""

    def __init__(
        self, cfg: ModelConfig, head: dict[str, Tensor], fields: Sequence[FieldTable],
        remaps: Sequence[Tensor] | RankRemap | None, field_names: Sequence[str],
        cardinalities: Sequence[int] | None = None,
    ) -> None:
        """``head``: the backbone head's state; ``remaps``: per-field rank-form remaps (original
        id -> row), a ready :class:`RankRemap` (then ``cardinalities`` are needed), or ``None`` for
        the identity (``cardinalities`` = rows)."""
        super().__init__()
        if remaps is None or isinstance(remaps, RankRemap):
            cards = list(cardinalities) if cardinalities is not None else [f.rows for f in fields]
            id_map = remaps
        else:
            cards = [r.numel() for r in remaps]
            # Nothing pruned (an Original model): every remap is the identity and none is stored.
            identity = all(torch.equal(r.long(), torch.arange(r.numel())) for r in remaps)
            id_map = None if identity else RankRemap.from_remaps(remaps)
        embedder = QuantizedEmbedder(fields, id_map, cards, cfg.embed_dim)
        self.backbone = build_model(cards, cfg, "none", embedder=embedder)
        load_head(self.backbone, head)
        self.field_names = list(field_names)

    @property
    def embedder(self) -> QuantizedEmbedder:
        return self.backbone.embedder  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def fields(self) -> nn.ModuleList:
        return self.embedder.fields

    @property
    def id_map(self) -> RankRemap | None:
        return self.embedder.id_map

    @property
    def cardinalities(self) -> list[int]:
        return list(self.embedder.cardinalities)

    @property
    def widths(self) -> list[int]:
        return self.embedder.field_widths()

    @property
    def kept(self) -> list[int]:
        return self.embedder.field_rows()

    @property
    def coded(self) -> list[bool]:
        """Per field: stored as codes (product-quantized or int8), not as a float table."""
        return [isinstance(f, (CodedField, RowInt8Field)) for f in self.fields]

    def field_remap(self, f: int) -> Tensor:
        """Original id -> row of field ``f`` (the identity when nothing was pruned)."""
        if self.id_map is None:
            return torch.arange(self.cardinalities[f])
        return self.id_map.field_rows(f, self.cardinalities[f])

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def embedding_params(self) -> int:
        """Float parameters of the embedding: codebooks and uncompressed tables."""
        return self.embedder.stored_params()

    def size_report(self) -> dict[str, Any]:
        return self.backbone.size_report()

    def memory_bytes(self) -> dict[str, int]:
        """Exact bytes held: codes, codebooks, int8 scales and biases, float tables, the id remap
        (keep bits, rank counts, field offsets; 0 for an Original model), the network, and totals."""
        out = self.embedder.byte_counts()
        out["embedding"] = sum(out[k] for k in BYTE_KINDS)
        out["remaps"] = 0 if self.id_map is None else self.id_map.nbytes()
        total = sum(_nbytes(p) for p in self.parameters()) + sum(_nbytes(b) for b in self.buffers())
        out["network"] = total - out["embedding"] - out["remaps"]
        out["total"] = total
        return out


def from_compact(compact: CompactModel, fields: Sequence[FieldTable]) -> QuantizedModel:
    """A :class:`QuantizedModel` with ``compact``'s network, id remaps and the given field tables."""
    remaps = [compact.field_remap(f).detach().cpu() for f in range(len(compact.kept))]
    return QuantizedModel(compact.backbone.cfg, head_state(compact.backbone), list(fields), remaps, compact.field_names)


def save_quantized(path: Path, model: QuantizedModel, extra: dict[str, Any] | None = None) -> None:
    fields: list[dict[str, Any]] = []
    for f in model.fields:
        if isinstance(f, CodedField):
            fields.append({"kind": "coded", "codes": f.codes.cpu(), "codebooks": f.codebooks.detach().cpu(), "width": f.width})
        elif isinstance(f, RowInt8Field):
            fields.append({"kind": "int8", "codes": f.codes.cpu(), "scale": f.scale.cpu(), "bias": f.bias.cpu()})
        else:
            fields.append({"kind": "dense", "table": f.table.detach().cpu()})
    version = VERSION if any(f["kind"] == "int8" for f in fields) else 2
    state = {k: v.cpu() for k, v in head_state(model.backbone).items()}
    torch.save(
        {
            "format": FORMAT,
            "version": version,
            "model_config": model.backbone.cfg.to_dict(),
            "field_names": model.field_names,
            "kept": model.kept,
            "fields": fields,
            "cardinalities": model.cardinalities,
            "id_map": None if model.id_map is None else model.id_map.state(),
            "head_state": state,
            "extra": extra or {},
        },
        path,
    )


def load_quantized(path: Path, device: torch.device | str = "cpu") -> tuple[QuantizedModel, dict[str, Any]]:
    payload = load_tensor_file(path, "quantized model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed quantized model")
    if payload.get("version") not in (1, 2, VERSION):
        raise ArtifactError(f"{path} has quantized model version {payload.get('version')}, expected {VERSION}")

    def build() -> QuantizedModel:
        cfg = ModelConfig.from_dict(payload["model_config"])
        head = dict(payload["head_state"])
        fields = [_field(f) for f in payload["fields"]]
        if payload["version"] == 1:  # int32 remaps, None for the identity
            remaps = payload["remaps"] or [torch.arange(c) for c in payload["cardinalities"]]
            model = QuantizedModel(cfg, head, fields, remaps, payload["field_names"])
        else:
            id_map = None if payload["id_map"] is None else RankRemap(**payload["id_map"])
            model = QuantizedModel(cfg, head, fields, id_map, payload["field_names"], payload["cardinalities"])
        return model.to(device).eval()

    return rebuild(path, "quantized model file", build), payload


def _field(spec: dict[str, Any]) -> FieldTable:
    """One field of a saved model from its entry (``kind`` and tensors)."""
    kind = spec["kind"]
    if kind == "coded":
        return CodedField(spec["codes"], spec["codebooks"], spec["width"])
    if kind == "int8":
        return RowInt8Field(spec["codes"], spec["scale"], spec["bias"])
    if kind == "dense":
        return DenseField(spec["table"])
    raise ValueError(f"unknown field kind {kind!r}")
