"""A quantized embedding's lookup in exportable operators (``torch.export``, ONNX).

The id map (the keep bits and rank counts, decoded with divisions and bitwise ANDs instead of
shifts, which ONNX lacks for signed integers), then the embedder's own per-field lookup: per
field the code gather, the codebook gather and the concatenation (or the int8 rows' Cast + Mul
+ Add, or the float rows), zero-padded to ``D``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.quantization.model import QuantizedEmbedder
from optembed.quantization.rank_remap import BLOCK_WORDS, WORD_BITS, RankRemap

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


class QuantizedLookup(nn.Module):
    """Ids -> (rows, ``(B, n, D)`` embeddings) of a :class:`QuantizedEmbedder`."""

    def __init__(self, embedder: QuantizedEmbedder) -> None:
        super().__init__()
        self.embedder = embedder
        self.rank = RankLookup(embedder.id_map) if embedder.id_map is not None else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        rows = self.rank(x) if self.rank is not None else x.long()
        return rows, self.embedder.lookup_per_field(rows)
