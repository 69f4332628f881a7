"""A quantized embedding: per-field tables, some product-quantized (codes + codebooks) or
row-wise int8, behind one id map.

Every field keeps the compact model's id remap (original id -> compact row), stored as a
keep-bitmap plus rank counts (:class:`RankRemap`, about 1.13 bits per original id instead of
an int32), and not stored at all when nothing was pruned (an Original model: the identity).
A coded field stores one code per row and group (uint8 for codebooks of at most 256 entries,
else uint16) and one small codebook per group, sized for that field (see
:mod:`optembed.quantization.plan`); a row-wise int8 field stores uint8 codes with one float32
scale and bias per row; the other fields keep their float table (:mod:`optembed.quantization.fields`).
A lookup decodes on the fly (gather the codes of the batch's rows, gather their codebook
entries and concatenate the groups, or dequantize the gathered int8 rows): no full table is
ever rebuilt. A quantized model is a backbone over this embedder (:func:`quantized_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import Embedder, param_bytes
from optembed.errors import ArtifactError
from optembed.models.base import CTRModel
from optembed.models.heads import head_state, load_head
from optembed.models.registry import build_model
from optembed.quantization.fields import FieldTable, field_from_spec
from optembed.quantization.packed import PackedTables, state_key
from optembed.quantization.rank_remap import RankRemap

# Inference batches up to this many rows read the packed tables (:mod:`optembed.quantization.packed`):
# 3.5x faster than the per-field loop at batch 1 on a CPU, even at 256 rows, slower from 512 on
# (benchmarks/quantized_lookup.py), where the loop's per-field cost is spread over the batch.
PACKED_MAX_ROWS = 256
BYTE_KINDS = ("codes", "codebooks", "scales", "float_tables")


class QuantizedEmbedder(Embedder):
    """Per-field tables (:mod:`optembed.quantization.fields`) behind one id map (original id ->
    row; ``None``: the identity); each field's ``width`` columns are zero-padded to ``dim``."""

    kind = "quantized"

    def __init__(
        self, fields: Sequence[FieldTable], id_map: RankRemap | None, cardinalities: Sequence[int], dim: int
    ) -> None:
        super().__init__(cardinalities, dim)
        self.fields = nn.ModuleList(fields)
        self.id_map = id_map

    def spec(self) -> dict[str, Any]:
        id_map = None
        if self.id_map is not None:
            id_map = {"words": self.id_map.words.numel(), "blocks": self.id_map.block_ranks.numel()}
        return {"kind": self.kind, "fields": [f.spec() for f in self.fields], "id_map": id_map}

    @classmethod
    def from_spec(cls, cardinalities: Sequence[int], dim: int, init_std: float, options: dict[str, Any]) -> QuantizedEmbedder:
        """Empty fields and id map of the spec's shapes (a model file's state then fills them)."""
        specs, id_map = options.get("fields"), options.get("id_map")
        if not isinstance(specs, list) or len(specs) != len(cardinalities):
            raise ArtifactError(f"a quantized embedding needs one field description per field ({len(cardinalities)})")
        remap = None
        if id_map is not None:
            n = len(cardinalities)
            remap = RankRemap(torch.zeros(int(id_map["words"]), dtype=torch.int32),
                              torch.zeros(int(id_map["blocks"]), dtype=torch.int32),
                              torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
        return cls([field_from_spec(s) for s in specs], remap, cardinalities, dim)

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        return tuple(f.rows for f in self.fields)

    def ids(self, x: Tensor) -> Tensor:
        return x.long() if self.id_map is None else self.id_map(x)

    def field_remap(self, f: int) -> Tensor:
        """Original id -> row of field ``f`` (the identity when nothing was pruned)."""
        if self.id_map is None:
            return torch.arange(self.cardinalities[f])
        return self.id_map.field_rows(f, self.cardinalities[f])

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        if not torch.is_grad_enabled() and ids.shape[0] <= PACKED_MAX_ROWS and self.packable:
            return self.packed().lookup(ids)  # small inference batches: one gather, not one per field
        return self.lookup_per_field(ids)

    @property
    def packable(self) -> bool:
        """Whether the packed layout serves small batches: not with int8 fields, whose codes the
        layout would have to copy (a second copy of the largest part of such a model)."""
        return all(f.kind != "int8" for f in self.fields)

    def lookup_per_field(self, ids: Tensor) -> Tensor:
        """Each field's table on its rows, zero-padded to ``dim``: what fine-tuning differentiates
        through and what the exported graph runs."""
        parts = [F.pad(table(ids[:, f]), (0, self.dim - table.width)) for f, table in enumerate(self.fields)]
        return torch.stack(parts, dim=1)

    def serving_lookup(self) -> nn.Module:
        from optembed.quantization.serving import QuantizedLookup

        return QuantizedLookup(self)

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

    @property
    def coded(self) -> list[bool]:
        """Per field: stored as codes (product-quantized or int8), not as a float table."""
        return [f.coded for f in self.fields]

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

    def zero_padded_widths(self) -> list[int] | None:
        return self.field_widths()

    def field_widths(self) -> list[int]:
        return [f.width for f in self.fields]

    def field_rows(self) -> list[int]:
        return [f.rows for f in self.fields]


def quantized_embedder(
    fields: Sequence[FieldTable], remaps: Sequence[Tensor] | RankRemap | None, dim: int,
    cardinalities: Sequence[int] | None = None,
) -> QuantizedEmbedder:
    """``remaps``: per-field rank-form remaps (original id -> row), a ready :class:`RankRemap`
    (then ``cardinalities`` are needed), or ``None`` for the identity (``cardinalities`` = rows)."""
    if remaps is None or isinstance(remaps, RankRemap):
        cards = list(cardinalities) if cardinalities is not None else [f.rows for f in fields]
        return QuantizedEmbedder(fields, remaps, cards, dim)
    cards = [r.numel() for r in remaps]
    # Nothing pruned (an Original model): every remap is the identity and none is stored.
    identity = all(torch.equal(r.long(), torch.arange(r.numel())) for r in remaps)
    return QuantizedEmbedder(fields, None if identity else RankRemap.from_remaps(remaps), cards, dim)


def quantized_model(compact: CTRModel, fields: Sequence[FieldTable]) -> CTRModel:
    """``compact``'s network and id remaps over the given field tables (its head copied)."""
    source = compact.embedder
    remaps = [source.field_remap(f).detach().cpu() for f in range(source.n_fields)]  # type: ignore[operator]
    embedder = quantized_embedder(fields, remaps, compact.cfg.embed_dim)
    model = build_model(embedder.cardinalities, compact.cfg, "none", embedder=embedder)
    load_head(model, head_state(compact))
    return model


def memory_bytes(model: CTRModel) -> dict[str, int]:
    """Exact bytes a model over a :class:`QuantizedEmbedder` holds: codes, codebooks, int8 scales
    and biases, float tables, the id remap (keep bits, rank counts, field offsets; 0 for an Original
    model), the network, and totals."""
    embedder: QuantizedEmbedder = model.embedder  # type: ignore[assignment]
    out = embedder.byte_counts()
    out["embedding"] = sum(out[k] for k in BYTE_KINDS)
    out["remaps"] = 0 if embedder.id_map is None else embedder.id_map.nbytes()
    total = param_bytes(model)
    out["network"] = total - out["embedding"] - out["remaps"]
    out["total"] = total
    return out
