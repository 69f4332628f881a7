"""The serving network: preprocess ids in, logit and probability out, with one code path.

:class:`ServingNet` wraps a deployable model (a :class:`CompactModel` or a
:class:`QuantizedModel`) for export. Its forward has no branch on the batch size and no
in-place writes, so ``torch.export`` can trace it with a symbolic batch dimension and the ONNX
exporter can translate every operator:

- compact tables: the id remap gather, then one element-wise gather over the flat buffer
  (each field's ``D_f`` stored columns, zeros beyond them);
- product-quantized tables: the id map (the keep bits and rank counts, decoded with
  divisions and bitwise ANDs instead of shifts, which ONNX lacks for signed integers), then per
  field the code gather, the codebook gather and the concatenation, zero-padded to ``D``;
- row-wise int8 tables: per field the gather of the uint8 code rows and of their scale and
  bias, dequantized in the graph (Cast + Mul + Add), zero-padded to ``D``.

The backbone head is the model's own module, so the graph computes what the in-package model
computes; the parameters are shared, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.compact import CompactEmbedder
from optembed.errors import ArtifactError
from optembed.models.compact import CompactModel
from optembed.quantization.int8 import dequantize
from optembed.quantization.int8_field import RowInt8Field
from optembed.quantization.model import CodedField, QuantizedEmbedder, QuantizedModel
from optembed.quantization.rank_remap import BLOCK_WORDS, WORD_BITS, RankRemap

INPUT_NAME = "ids"
OUTPUT_NAMES = ("logit", "probability")
_LOW32 = 0xFFFFFFFF


def popcount32_div(x: Tensor) -> Tensor:
    """Set bits of non-negative int64 values below ``2**32``, with divisions instead of shifts (integer floor
    divisions, ``//``: ONNX runs them on integers, while ``torch.div(..., rounding_mode=...)`` goes
    through float32 and loses the low bits)."""
    x = x - ((x // 2) & 0x55555555)
    x = (x & 0x33333333) + ((x // 4) & 0x33333333)
    x = (x + x // 16) & 0x0F0F0F0F
    return ((x * 0x01010101) & _LOW32) // (1 << 24)


class RankLookup(nn.Module):
    """:class:`RankRemap`'s lookup (original id -> compact row) in exportable operators; it reads
    the remap's own buffers, so the graph stores the same keep bits and rank counts."""

    pow2: Tensor

    def __init__(self, remap: RankRemap) -> None:
        super().__init__()
        self.remap = remap
        self.register_buffer("pow2", torch.tensor([1 << b for b in range(WORD_BITS)], dtype=torch.long), persistent=False)
        self.register_buffer("word_slots", torch.arange(BLOCK_WORDS), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        r = self.remap
        gid = x.long() + r.offsets
        word = gid // WORD_BITS
        below = self.pow2[gid - word * WORD_BITS]  # 2 ** (bit within the word)
        block = word // BLOCK_WORDS
        pos = word - block * BLOCK_WORDS
        block_words = r.words.view(-1, BLOCK_WORDS)[block].long() & _LOW32  # (..., 8)
        own = block_words.gather(-1, pos.unsqueeze(-1)).squeeze(-1)
        earlier = self.word_slots < pos.unsqueeze(-1)
        rank = r.block_ranks[block].long() + (popcount32_div(block_words) * earlier).sum(-1)
        rank = rank + popcount32_div(own & (below - 1))
        kept = (own & below) != 0
        return torch.where(kept, rank - r.field_base, torch.zeros_like(rank))


class CompactLookup(nn.Module):
    """Ids -> (compact rows, ``(B, n, D)`` embeddings) of a :class:`CompactEmbedder`."""

    def __init__(self, embedder: CompactEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.embedder
        rows = e.remap[x.long() + e.remap_offsets].long()
        return rows, e.gather_elements(rows)


class QuantizedLookup(nn.Module):
    """Ids -> (rows, ``(B, n, D)`` embeddings) of a :class:`QuantizedEmbedder`: per field the codes'
    codebook entries (or the dequantized int8 rows, or the float table's rows), concatenated and
    zero-padded to ``D``."""

    def __init__(self, embedder: QuantizedEmbedder) -> None:
        super().__init__()
        self.embedder = embedder
        self.rank = RankLookup(embedder.id_map) if embedder.id_map is not None else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.embedder
        rows = self.rank(x) if self.rank is not None else x.long()
        parts = []
        for f, table in enumerate(e.fields):
            ids = rows[:, f]
            if isinstance(table, CodedField):
                groups, entries, sub = table.codebooks.shape
                codes = table.codes[ids].long()  # (B, groups)
                codes = codes + torch.arange(groups, device=codes.device) * entries  # rows of the stacked codebooks
                vec = F.embedding(codes, table.codebooks.reshape(groups * entries, sub)).flatten(1)[:, : table.width]
            elif isinstance(table, RowInt8Field):
                vec = dequantize(table.codes[ids], table.scale[ids], table.bias[ids])
            else:
                vec = F.embedding(ids, table.table)
            parts.append(F.pad(vec, (0, e.dim - table.width)))
        return rows, torch.stack(parts, dim=1)


class ServingNet(nn.Module):
    """``(B, n)`` int64 preprocess ids -> ``(logit, probability)``, each ``(B,)`` float32."""

    def __init__(self, model: CompactModel | QuantizedModel) -> None:
        super().__init__()
        self.backbone = model.backbone
        embedder = model.backbone.embedder
        if isinstance(embedder, CompactEmbedder):
            self.lookup: nn.Module = CompactLookup(embedder)
        elif isinstance(embedder, QuantizedEmbedder):
            self.lookup = QuantizedLookup(embedder)
        else:
            raise ArtifactError(f"cannot export a model over a {embedder.kind!r} embedding; export a retrain or compress artifact")
        self.field_names = list(model.field_names)
        self.n_fields = len(self.field_names)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        rows, emb = self.lookup(ids)
        logit = self.backbone.head(emb, rows)
        return logit, torch.sigmoid(logit)
