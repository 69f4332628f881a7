"""The deployable compact embedding: one dense table per field, only its kept rows and width.

Field ``f`` keeps the rows of its kept ids (its OOV id 0 always among them) and only the first
``D_f`` columns. An id remap per field sends every original id to its compact row; pruned ids
go to the field's OOV row, exactly as during re-training, so predictions are identical. Each
field's ``D_f`` columns are zero-padded to ``D`` on the fly (the padded columns were masked to
zero during training, so this is exact and costs no stored parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import Embedder

SMALL_BATCH = 64  # below this many rows one element-wise gather beats per-group row gathers


class CompactEmbedder(Embedder):
    """Per-field dense tables packed into one flat buffer, read one width group at a time.

    Fields of equal width ``w`` are stacked into one ``(rows, w)`` group table and the groups are
    laid end to end in ``flat``; field ``f``'s table (``kept_f`` rows x ``D_f`` columns,
    row-major) starts at ``field_start[f]``. Ids go through one concatenated remap (original
    id -> compact row). A lookup gathers whole rows per group (one gather per distinct width,
    not per field) and writes them, zero-padded to ``D``, into the backbone's input.
    """

    kind = "compact"
    field_start: Tensor
    field_width: Tensor
    remap: Tensor
    remap_offsets: Tensor

    def __init__(self, tables: Sequence[Tensor], remaps: Sequence[Tensor], dim: int) -> None:
        super().__init__([r.numel() for r in remaps], dim)
        self._kept = [int(t.shape[0]) for t in tables]
        widths = [int(t.shape[1]) for t in tables]
        order = sorted(range(len(tables)), key=lambda f: (widths[f], f))  # fields grouped by width
        starts = [0] * len(tables)
        self._groups: list[tuple[int, int, int]] = []  # (width, flat start, rows) per width group
        group_fields: list[list[int]] = []
        row_offset = [0] * len(tables)
        position = 0
        for f in order:
            if not self._groups or self._groups[-1][0] != widths[f]:
                self._groups.append((widths[f], position, 0))
                group_fields.append([])
            width, start, rows = self._groups[-1]
            starts[f], row_offset[f] = position, rows
            self._groups[-1] = (width, start, rows + self._kept[f])
            group_fields[-1].append(f)
            position += self._kept[f] * widths[f]
        self.flat = nn.Parameter(torch.cat([tables[f].detach().reshape(-1) for f in order]).clone())
        self.register_buffer("field_start", torch.tensor(starts, dtype=torch.long))
        self.register_buffer("field_width", torch.tensor(widths, dtype=torch.long))
        self.register_buffer("row_offset", torch.tensor(row_offset, dtype=torch.long), persistent=False)
        for g, fields in enumerate(group_fields):
            self.register_buffer(f"group_fields_{g}", torch.tensor(fields, dtype=torch.long), persistent=False)
        cols = torch.arange(self.dim)
        inside = cols < torch.tensor(widths, dtype=torch.long).unsqueeze(1)  # (n, D): the stored columns
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("inside", inside, persistent=False)
        self.register_buffer("inside_f", inside.to(self.flat.dtype), persistent=False)
        cards = torch.tensor([r.numel() for r in remaps], dtype=torch.long)
        self.register_buffer("remap", torch.cat([r.to(torch.int32) for r in remaps]))
        self.register_buffer("remap_offsets", torch.cumsum(cards, 0) - cards)

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        return tuple(self._kept)

    @property
    def widths(self) -> list[int]:
        return self.field_width.tolist()

    @property
    def kept(self) -> list[int]:
        return list(self._kept)

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
        return self._gather_elements(ids) if ids.shape[0] < SMALL_BATCH else self._gather_rows(ids)

    def _gather_rows(self, xc: Tensor) -> Tensor:
        """Whole-row gathers, one per width group: fast for large batches."""
        rows = xc + self.row_offset  # row within the field's width group
        emb = self.flat.new_zeros(xc.shape[0], len(self._kept), self.dim)
        for g, (width, start, n_rows) in enumerate(self._groups):
            fields = getattr(self, f"group_fields_{g}")
            table = self.flat[start : start + n_rows * width].view(n_rows, width)
            emb[:, fields, :width] = F.embedding(rows[:, fields], table)
        return emb

    def _gather_elements(self, xc: Tensor) -> Tensor:
        """One element-wise gather over all fields: fewest operations, for small batches."""
        index = (self.field_start + xc * self.field_width).unsqueeze(-1) + self.cols  # (B, n, D)
        return self.flat[torch.where(self.inside, index, 0)] * self.inside_f

    def kept_params(self) -> int:
        return self.flat.numel()

    def memory_bytes(self) -> dict[str, int]:
        return {
            "embedding": self.flat.numel() * self.flat.element_size(),
            "remaps": self.remap.numel() * self.remap.element_size(),
        }

    def field_widths(self) -> list[int]:
        return self.widths

    def field_rows(self) -> list[int]:
        return self.kept
