"""The deployable compact model: one dense table per field, only its kept rows and its width.

Export from a model trained under fixed masks (:meth:`CTRModel.set_fixed_masks`): field ``f``
keeps the rows of its kept ids (its OOV id 0 always among them) and only the first ``D_f``
columns. An id remap per field sends every original id to its compact row; pruned ids go to
the field's OOV row, exactly as during re-training, so predictions are identical.

The backbone needs ``(B, n, D)`` input: each field's ``D_f`` columns are zero-padded to ``D``
on the fly (the padded columns were masked to zero during training, so this is exact and
costs no stored parameters). Per-feature terms (DeepFM's linear weights) are compacted with
the same remap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.errors import ArtifactError
from optembed.layers.embedding import FieldEmbedding
from optembed.models.base import CTRModel
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import load_tensor_file, rebuild

FORMAT = "optembed-compact"
SMALL_BATCH = 64  # below this many rows one element-wise gather beats per-group row gathers
VERSION = 1


class CompactModel(nn.Module):
    """Per-field dense tables packed into one flat buffer, read one width group at a time.

    Fields of equal width ``w`` are stacked into one ``(rows, w)`` group table and the groups are
    laid end to end in ``flat``; field ``f``'s table (``kept_f`` rows x ``D_f`` columns,
    row-major) starts at ``field_start[f]``. Ids go through one concatenated remap (original
    id -> compact row). A lookup gathers whole rows per group (one gather per distinct width,
    not per field) and writes them, zero-padded to ``D``, into the backbone's input.
    """

    field_start: Tensor
    field_width: Tensor
    remap: Tensor
    remap_offsets: Tensor

    def __init__(
        self,
        backbone: CTRModel,
        tables: Sequence[Tensor],
        remaps: Sequence[Tensor],
        field_names: Sequence[str],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        # The backbone's own full table is never used: keep an empty placeholder.
        backbone.embedding.weight = nn.Parameter(torch.empty(0, backbone.embed_dim), requires_grad=False)
        self.dim = backbone.embed_dim
        self.field_names = list(field_names)
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

    def compact_ids(self, x: Tensor) -> Tensor:
        return self.remap[x.long() + self.remap_offsets].long()

    def forward(self, x: Tensor) -> Tensor:
        xc = self.compact_ids(x)
        emb = self._gather_elements(xc) if x.shape[0] < SMALL_BATCH else self._gather_rows(xc)
        return self.backbone.head(emb, xc)

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

    def embedding_params(self) -> int:
        return self.flat.numel()

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held in memory: embedding tables, id remaps, everything else (the network)."""
        tables = self.flat.numel() * self.flat.element_size()
        remaps = self.remap.numel() * self.remap.element_size()
        total = sum(p.numel() * p.element_size() for p in self.parameters())
        total += sum(b.numel() * b.element_size() for b in self.buffers())
        return {"tables": tables, "remaps": remaps, "network": total - tables - remaps, "total": total}


@torch.no_grad()
def export_compact(model: CTRModel, keep: Tensor, widths: Tensor, field_names: Sequence[str]) -> CompactModel:
    """Physically slice ``model`` (trained under ``keep``/``widths``) into a :class:`CompactModel`."""
    emb = model.embedding
    keep = keep.to(emb.weight.device, torch.bool).clone()
    keep[emb.offsets] = True  # the OOV row of every field stays
    tables, remaps, kept_ids = [], [], []
    for f, card in enumerate(emb.cardinalities):
        start = int(emb.offsets[f])
        ids = torch.nonzero(keep[start : start + card]).squeeze(1)  # sorted, ids[0] == 0 (OOV)
        remap = torch.zeros(card, dtype=torch.long, device=ids.device)
        remap[ids] = torch.arange(ids.numel(), device=ids.device)
        tables.append(emb.weight[start + ids, : int(widths[f])].cpu())
        remaps.append(remap.cpu())
        kept_ids.append(ids)
    backbone = build_model([t.shape[0] for t in tables], model.cfg, "none")
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith("embedding."):
            continue
        state[name] = value
    for name, module in model.named_modules():
        if isinstance(module, FieldEmbedding) and module is not emb:
            rows = torch.cat([int(module.offsets[f]) + ids for f, ids in enumerate(kept_ids)])
            state[f"{name}.weight"] = module.weight[rows]
            state[f"{name}.offsets"] = backbone.get_submodule(name).offsets
    state["embedding.offsets"] = backbone.embedding.offsets
    state["embedding.weight"] = backbone.embedding.weight
    backbone.load_state_dict({k: v.cpu() for k, v in state.items()})
    compact = CompactModel(backbone, tables, remaps, field_names)
    return compact.eval()


def save_compact(path: Path, compact: CompactModel, extra: dict[str, Any] | None = None) -> None:
    state = {k: v for k, v in compact.backbone.state_dict().items() if k != "embedding.weight"}
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model_config": compact.backbone.cfg.to_dict(),
            "field_names": compact.field_names,
            "widths": compact.widths,
            "kept": compact.kept,
            "tables": [compact.table(f).detach().cpu().clone() for f in range(len(compact.kept))],
            "remaps": [compact.field_remap(f).cpu().clone() for f in range(len(compact.kept))],
            "head_state": state,
            "extra": extra or {},
        },
        path,
    )


def load_compact(path: Path, device: torch.device | str = "cpu") -> tuple[CompactModel, dict[str, Any]]:
    payload = load_tensor_file(path, "compact model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed compact model")
    if payload.get("version") != VERSION:
        raise ArtifactError(f"{path} has compact model version {payload.get('version')}, expected {VERSION}")

    def build() -> CompactModel:
        backbone = build_model(payload["kept"], ModelConfig.from_dict(payload["model_config"]), "none")
        state = dict(payload["head_state"])
        state["embedding.weight"] = backbone.embedding.weight
        backbone.load_state_dict(state)
        model = CompactModel(backbone, payload["tables"], payload["remaps"], payload["field_names"])
        return model.to(device).eval()

    return rebuild(path, "compact model file", build), payload
