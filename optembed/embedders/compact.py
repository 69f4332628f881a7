"""The deployable compact embedding: one dense table per field, only its kept rows and width.

Field ``f`` keeps the rows of its kept ids (its OOV id 0 always among them) and only the first
``D_f`` columns. An id remap per field sends every original id to its compact row; pruned ids
go to the field's OOV row, exactly as during re-training, so predictions are identical. Each
field's ``D_f`` columns are zero-padded to ``D`` on the fly (the padded columns were masked to
zero during training, so this is exact and costs no stored parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import Embedder
from optembed.errors import ConfigError

class CompactEmbedder(Embedder):
    """Per-field dense tables packed into one flat buffer, read with one gather for all fields.

    Field ``f``'s table (``kept_f`` rows x ``D_f`` columns, row-major) starts at
    ``field_start[f]`` of ``flat``, followed by ``D`` zeros at the buffer's end. A lookup views
    the buffer as overlapping ``D``-wide windows (one per element: a strided view, no copy), so
    row ``r`` of field ``f`` is the window at ``field_start[f] + r * D_f``: its ``D_f`` stored
    columns, then whatever follows. One row gather over all fields reads every window, and a
    0/1 column mask zeroes the columns beyond each field's width - the cost of the dense
    table's lookup, with no per-field or per-width loop. Ids go through one concatenated
    remap (original id -> compact row).
    """

    kind = "compact"
    field_start: Tensor
    field_width: Tensor
    remap: Tensor
    remap_offsets: Tensor
    inside_f: Tensor

    def __init__(self, tables: Sequence[Tensor], remaps: Sequence[Tensor], dim: int) -> None:
        super().__init__([r.numel() for r in remaps], dim)
        self._kept = [int(t.shape[0]) for t in tables]
        widths = [int(t.shape[1]) for t in tables]
        sizes = torch.tensor([k * w for k, w in zip(self._kept, widths)], dtype=torch.long)
        self._entries = int(sizes.sum())
        # the tables end to end, then D zeros: the last row's window stays inside the buffer
        parts = [t.detach().reshape(-1).float() for t in tables] + [torch.zeros(self.dim)]
        self.flat = nn.Parameter(torch.cat(parts).clone())
        self.register_buffer("field_start", torch.cumsum(sizes, 0) - sizes)
        self.register_buffer("field_width", torch.tensor(widths, dtype=torch.long))
        inside = torch.arange(self.dim) < torch.tensor(widths, dtype=torch.long).unsqueeze(1)  # (n, D)
        self.register_buffer("inside_f", inside.to(self.flat.dtype), persistent=False)
        cards = torch.tensor([r.numel() for r in remaps], dtype=torch.long)
        self.register_buffer("remap", torch.cat([r.to(torch.int32) for r in remaps]))
        self.register_buffer("remap_offsets", torch.cumsum(cards, 0) - cards)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "kept": self.kept, "widths": self.widths}

    @classmethod
    def from_spec(cls, cardinalities: Sequence[int], dim: int, init_std: float, options: dict[str, Any]) -> CompactEmbedder:
        """Zero tables and remaps of the spec's shapes (a model file's state then fills them)."""
        kept, widths = options["kept"], options["widths"]
        if len(kept) != len(cardinalities) or len(widths) != len(cardinalities):
            raise ConfigError(f"a compact embedding needs kept rows and widths for its {len(cardinalities)} fields")
        tables = [torch.zeros(int(k), int(w)) for k, w in zip(kept, widths, strict=True)]
        return cls(tables, [torch.zeros(int(c), dtype=torch.int32) for c in cardinalities], dim)

    def serving_lookup(self) -> nn.Module:
        from optembed.embedders.compact_lookup import CompactLookup

        return CompactLookup(self)

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        return tuple(self._kept)

    @property
    def widths(self) -> list[int]:
        return self.field_width.tolist()

    @property
    def kept(self) -> list[int]:
        return list(self._kept)

    @property
    def entries(self) -> Tensor:
        """The tables' entries (``flat`` without its zero tail), a view."""
        return self.flat[: self._entries]

    def table(self, f: int) -> Tensor:
        """Field ``f``'s table as a ``(kept_f, D_f)`` view of the flat buffer."""
        start, width = int(self.field_start[f]), int(self.field_width[f])
        return self.flat[start : start + self._kept[f] * width].view(self._kept[f], width)

    def field_remap(self, f: int) -> Tensor:
        start = int(self.remap_offsets[f])
        card = (int(self.remap_offsets[f + 1]) if f + 1 < len(self._kept) else self.remap.numel()) - start
        return self.remap[start : start + card]

    def ids(self, x: Tensor) -> Tensor:
        return self.remap[x.long() + self.remap_offsets].long()

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        windows = self.flat.as_strided((self.flat.numel() - self.dim + 1, self.dim), (1, 1))
        return F.embedding(self.field_start + ids * self.field_width, windows) * self.inside_f

    def kept_params(self) -> int:
        return self._entries

    def memory_bytes(self) -> dict[str, int]:
        return {
            "embedding": self._entries * self.flat.element_size(),
            "remaps": self.remap.numel() * self.remap.element_size(),
        }

    def field_widths(self) -> list[int]:
        return self.widths

    def field_rows(self) -> list[int]:
        return self.kept
