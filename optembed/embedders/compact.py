"""The deployable compact embedding: one dense table per field, only its kept rows and width.

Field ``f`` keeps the rows of its kept ids (its OOV id 0 always among them) and only the first
``D_f`` columns. An id remap per field sends every original id to its compact row; pruned ids
go to the field's OOV row, exactly as during re-training, so predictions are identical. Each
field's ``D_f`` columns are zero-padded to ``D`` on the fly (the padded columns were masked to
zero during training, so this is exact and costs no stored parameters).

The embedder trains as it serves: ``flat`` is its one parameter (an optimizer's state and steps
cover the kept entries only), and its tables are laid out by width, widest first, so the fields
of one width form one contiguous ``(rows, width)`` table (:meth:`CompactEmbedder.width_tables`).
A lookup gathers rows from those tables, one gather per distinct width, and pads them to ``D``:
its gradient lands on the kept entries alone. :meth:`CompactEmbedder.packed_lookup` stops before
the padding: the blocks of one width, which the heads read as they are
(:class:`~optembed.embedders.packed.PackedEmbeddings`), so nothing is padded to ``D`` on the way
to an MLP's first layer or DeepFM's FM term. A file whose tables lie in another order (written
before this layout) is read with the general window lookup (:meth:`CompactEmbedder.window_lookup`),
which gives the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import Embedder
from optembed.embedders.group_gather import group_gather
from optembed.embedders.packed import PackedEmbeddings, PackedLayout
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
        # the tables end to end by width (widest first, then field order), then D zeros: the last
        # row's window stays inside the buffer
        order = sorted(range(len(tables)), key=lambda f: (-widths[f], f))
        parts = [tables[f].detach().reshape(-1).float() for f in order] + [torch.zeros(self.dim)]
        self.flat = nn.Parameter(torch.cat(parts).clone())
        placed = sizes[order]
        start = torch.empty_like(sizes)
        start[order] = torch.cumsum(placed, 0) - placed
        self.register_buffer("field_start", start)
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
        groups = self._width_groups()
        if groups is None:
            return self.window_lookup(ids)
        parts = []
        for (first, rows, width), (fields, row_offset) in zip(groups.tables, groups.index, strict=True):
            table = self.flat[first : first + rows * width].view(rows, width)
            part = F.embedding(ids.index_select(1, fields) + row_offset, table)
            parts.append(F.pad(part, (0, self.dim - width)) if width < self.dim else part)
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return out if groups.identity else out.index_select(1, groups.inverse)

    def packed_layout(self) -> PackedLayout:
        return PackedLayout.exact(self.widths, self.dim)

    def packed_lookup(self, ids: Tensor) -> PackedEmbeddings | None:
        groups = self._width_groups()
        packed = None if groups is None else groups.packed(self._layout())
        if groups is None or packed is None:
            return None  # a file of the older field order: the padded lookup
        table_order, inverse = packed
        indices = []
        for t in table_order:
            fields, row_offset = groups.index[t]
            indices.append((ids if fields.numel() == ids.shape[1] else ids.index_select(1, fields)) + row_offset)
        blocks = group_gather(self.flat, [groups.tables[t] for t in table_order], indices)
        return PackedEmbeddings(blocks, self._layout(), inverse)

    def _layout(self) -> PackedLayout:
        cached = self.__dict__.get("_layout_cache")
        if cached is None:
            cached = self.__dict__["_layout_cache"] = self.packed_layout()
        return cached

    def window_lookup(self, ids: Tensor) -> Tensor:
        """The lookup for any table layout: the buffer viewed as overlapping ``D``-wide windows,
        one row gather for all fields, the columns beyond each width zeroed (its gradient is a
        dense one over the windows: for serving, not for training)."""
        windows = self.flat.as_strided((self.flat.numel() - self.dim + 1, self.dim), (1, 1))
        return F.embedding(self.field_start + ids * self.field_width, windows) * self.inside_f

    def width_tables(self) -> list[tuple[int, list[int]]] | None:
        """``(width, fields)`` of each contiguous table of one width, in buffer order (``None``
        when the layout is not by width: a file of the older field order)."""
        groups = self._width_groups()
        return None if groups is None else [(w, f.tolist()) for (_, _, w), (f, _) in zip(groups.tables, groups.index)]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.pop("_groups_cache", None)  # the loaded starts may lay the tables out otherwise
        self.__dict__.pop("_layout_cache", None)
        super()._load_from_state_dict(*args, **kwargs)

    def _width_groups(self) -> _Groups | None:
        key = (self.field_start.device, self.field_start.data_ptr(), self.field_width.data_ptr())
        cached = self.__dict__.get("_groups_cache")
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # built by an evaluation, the indices serve training too
                cached = (key, _Groups.of(self.field_start, self.field_width, self._kept))
            self.__dict__["_groups_cache"] = cached
        return cached[1]

    def table_params(self) -> list[nn.Parameter]:
        return [self.flat]

    def zero_padded_widths(self) -> list[int] | None:
        return self.widths

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


class _Groups:
    """The by-width layout of a compact embedder's buffer: per table of one width its first
    entry, rows and width, the fields it holds (a ``long`` index on the ids' device) with their
    row offsets inside it, and the field permutation from table order back to field order."""

    def __init__(
        self, tables: list[tuple[int, int, int]], index: list[tuple[Tensor, Tensor]], inverse: Tensor,
        members: list[list[int]],
    ) -> None:
        self.tables, self.index, self.inverse, self.members = tables, index, inverse, members
        self.identity = bool((inverse == torch.arange(inverse.numel(), device=inverse.device)).all())
        self._packed: dict[PackedLayout, tuple[list[int], Tensor | None] | None] = {}

    def packed(self, layout: PackedLayout) -> tuple[list[int], Tensor | None] | None:
        """The tables in ``layout``'s group order and the field permutation from that order back
        to field order (``None`` when it is the identity); ``None`` when the tables do not hold
        the layout's groups (a table's fields out of field order: the older layout). Worked out
        once per layout: every lookup asks."""
        if layout not in self._packed:
            self._packed[layout] = self._packed_order(layout)
        return self._packed[layout]

    def _packed_order(self, layout: PackedLayout) -> tuple[list[int], Tensor | None] | None:
        by_width = {width: t for t, (_, _, width) in enumerate(self.tables)}
        order = [by_width.get(width, -1) for width, _ in layout.groups]
        if -1 in order or len(order) != len(self.tables):
            return None
        if any(tuple(self.members[t]) != fields for t, (_, fields) in zip(order, layout.groups, strict=True)):
            return None
        perm = torch.argsort(torch.tensor([f for _, fields in layout.groups for f in fields], dtype=torch.long))
        same = bool((perm == torch.arange(perm.numel())).all())
        return order, None if same else perm.to(self.inverse.device)

    @classmethod
    def of(cls, field_start: Tensor, field_width: Tensor, kept: Sequence[int]) -> _Groups | None:
        starts, widths = field_start.tolist(), field_width.tolist()
        order = sorted(range(len(starts)), key=lambda f: starts[f])
        tables: list[tuple[int, int, int]] = []
        members: list[list[int]] = []
        offsets: list[list[int]] = []
        expected = 0
        for f in order:
            if starts[f] != expected:
                return None  # gaps or overlaps: not a layout this class describes
            expected += kept[f] * widths[f]
            if tables and tables[-1][2] == widths[f]:
                first, rows, width = tables[-1]
                tables[-1] = (first, rows + kept[f], width)
                offsets[-1].append(rows)
                members[-1].append(f)
            else:
                if any(w == widths[f] for _, _, w in tables):
                    return None  # one width in two places: the older field-order layout
                tables.append((starts[f], kept[f], widths[f]))
                offsets.append([0])
                members.append([f])
        device = field_start.device
        index = [
            (torch.tensor(m, dtype=torch.long, device=device), torch.tensor(o, dtype=torch.long, device=device))
            for m, o in zip(members, offsets, strict=True)
        ]
        in_table_order = [f for m in members for f in m]
        inverse = torch.empty(len(in_table_order), dtype=torch.long)
        inverse[torch.tensor(in_table_order, dtype=torch.long)] = torch.arange(len(in_table_order))
        return cls(tables, index, inverse.to(device), members)
