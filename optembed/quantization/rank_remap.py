"""A pruned model's id remap as a keep-bitmap plus rank counts: about 1.13 bits per id, not 32.

In a compact model, field ``f``'s original id ``i`` goes to row ``rank(i)`` = the number of kept
ids of the field below ``i`` when ``i`` is kept, and to row 0 (the OOV row; id 0 is always kept)
when it is pruned. That map is fully described by which ids are kept, so instead of one int32
per id this stores, over all fields' ids laid end to end (global id = offset of the field + id):

- ``words``: the keep bits, 32 ids per int32 word (bit ``b`` of word ``w`` = global id ``32w + b``);
- ``block_ranks``: int32, the number of kept ids before each block of 8 words (256 ids);
- ``field_base``: int64 per field, the number of kept ids before the field's first id.

A lookup is a few vectorised gathers: the 8 words of the id's block, a popcount of the words
before the id's word and of the id's word below its bit, plus the block's rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

WORD_BITS = 32
BLOCK_WORDS = 8
BLOCK_IDS = WORD_BITS * BLOCK_WORDS
_LOW32 = 0xFFFFFFFF


def popcount32(x: Tensor) -> Tensor:
    """Set bits of each value of an int64 tensor holding 32-bit words (values in ``[0, 2**32)``)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) & _LOW32) >> 24


def keep_mask(remap: Tensor) -> Tensor:
    """The kept ids of one field's rank-form remap; ``ValueError`` if the remap is not of that form."""
    remap = remap.long().cpu()
    keep = remap != 0
    keep[:1] = True
    rows = torch.cumsum(keep.long(), 0) - 1
    if remap.numel() and (int(remap[0]) != 0 or not torch.equal(remap[keep], rows[keep])):
        raise ValueError("the remap does not send kept ids to consecutive rows in id order")
    return keep


class RankRemap(nn.Module):
    """Original ids ``(B, fields)`` -> compact rows, from keep bits (see the module docstring)."""

    words: Tensor
    block_ranks: Tensor
    field_base: Tensor
    offsets: Tensor

    def __init__(self, words: Tensor, block_ranks: Tensor, field_base: Tensor, offsets: Tensor) -> None:
        super().__init__()
        self.register_buffer("words", words.to(torch.int32))
        self.register_buffer("block_ranks", block_ranks.to(torch.int32))
        self.register_buffer("field_base", field_base.to(torch.long))
        self.register_buffer("offsets", offsets.to(torch.long))

    @classmethod
    def from_keep(cls, keeps: Sequence[Tensor]) -> RankRemap:
        """From each field's boolean keep mask (id 0 must be kept)."""
        cards = torch.tensor([k.numel() for k in keeps], dtype=torch.long)
        offsets = torch.cumsum(cards, 0) - cards
        keep = torch.cat([k.bool().cpu() for k in keeps])
        padded = -(-keep.numel() // BLOCK_IDS) * BLOCK_IDS
        bits = torch.zeros(padded, dtype=torch.long)
        bits[: keep.numel()] = keep.long()
        words = (bits.view(-1, WORD_BITS) << torch.arange(WORD_BITS)).sum(1)  # in [0, 2**32)
        counts = popcount32(words).view(-1, BLOCK_WORDS).sum(1)
        block_ranks = torch.cumsum(counts, 0) - counts
        before = torch.cumsum(keep.long(), 0) - keep.long()  # kept ids before each global id
        field_base = before[offsets] if keep.numel() else offsets
        signed = torch.where(words >= 2**31, words - 2**32, words)  # the same 32 bits as int32
        return cls(signed, block_ranks, field_base, offsets)

    @classmethod
    def from_remaps(cls, remaps: Sequence[Tensor]) -> RankRemap:
        """From rank-form remaps (original id -> compact row), as a compact model holds them."""
        return cls.from_keep([keep_mask(r) for r in remaps])

    def forward(self, x: Tensor) -> Tensor:
        return self._rows(x.long() + self.offsets, self.field_base)

    def _rows(self, gid: Tensor, base: Tensor) -> Tensor:
        """Rows of global ids ``gid`` (any shape), ``base`` = kept ids before each one's field."""
        word = gid >> 5
        bit = gid & (WORD_BITS - 1)
        block = word >> 3
        block_words = self.words.view(-1, BLOCK_WORDS)[block].long() & _LOW32  # (..., 8)
        pos = (word & (BLOCK_WORDS - 1)).unsqueeze(-1)
        own = block_words.gather(-1, pos).squeeze(-1)
        before = torch.arange(BLOCK_WORDS, device=gid.device) < pos
        rank = self.block_ranks[block].long() + (popcount32(block_words) * before).sum(-1)
        rank = rank + popcount32(own & ((1 << bit) - 1))
        kept = ((own >> bit) & 1).bool()
        return torch.where(kept, rank - base, torch.zeros_like(rank))

    def field_rows(self, f: int, card: int, chunk: int = 1 << 16) -> Tensor:
        """Field ``f``'s whole remap (``card`` ids) as int64 rows."""
        start, base = self.offsets[f], self.field_base[f]
        ids = torch.arange(card, device=self.offsets.device)
        return torch.cat([self._rows(start + ids[i : i + chunk], base) for i in range(0, card, chunk)])

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def state(self) -> dict[str, Tensor]:
        return {name: b.detach().cpu().clone() for name, b in self.named_buffers()}
