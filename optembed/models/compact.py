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

FORMAT = "optembed-compact"
VERSION = 1


class CompactModel(nn.Module):
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
        self.tables = nn.ParameterList([nn.Parameter(t.detach().clone()) for t in tables])
        for f, remap in enumerate(remaps):
            self.register_buffer(f"remap_{f}", remap.to(torch.int32).clone())
        self.field_names = list(field_names)
        self.dim = backbone.embed_dim

    @property
    def widths(self) -> list[int]:
        return [int(t.shape[1]) for t in self.tables]

    @property
    def kept(self) -> list[int]:
        return [int(t.shape[0]) for t in self.tables]

    def compact_ids(self, x: Tensor) -> Tensor:
        cols = [getattr(self, f"remap_{f}")[x[:, f].long()] for f in range(len(self.tables))]
        return torch.stack(cols, dim=1).long()

    def forward(self, x: Tensor) -> Tensor:
        xc = self.compact_ids(x)
        parts = [
            F.pad(F.embedding(xc[:, f], table), (0, self.dim - table.shape[1]))
            for f, table in enumerate(self.tables)
        ]
        return self.backbone.head(torch.stack(parts, dim=1), xc)

    def embedding_params(self) -> int:
        return sum(t.numel() for t in self.tables)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held in memory: embedding tables, id remaps, everything else (the network)."""
        tables = sum(t.numel() * t.element_size() for t in self.tables)
        remaps = sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n.startswith("remap_"))
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
            "tables": [t.detach().cpu() for t in compact.tables],
            "remaps": [getattr(compact, f"remap_{f}").cpu() for f in range(len(compact.tables))],
            "head_state": state,
            "extra": extra or {},
        },
        path,
    )


def load_compact(path: Path, device: torch.device | str = "cpu") -> tuple[CompactModel, dict[str, Any]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"compact model file missing: {path}") from None
    except Exception as exc:
        raise ArtifactError(f"cannot read compact model {path}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed compact model")
    if payload.get("version") != VERSION:
        raise ArtifactError(f"{path} has compact model version {payload.get('version')}, expected {VERSION}")
    cfg = ModelConfig.from_dict(payload["model_config"])
    backbone = build_model(payload["kept"], cfg, "none")
    state = dict(payload["head_state"])
    state["embedding.weight"] = backbone.embedding.weight
    backbone.load_state_dict(state)
    model = CompactModel(backbone, payload["tables"], payload["remaps"], payload["field_names"])
    return model.to(device).eval(), payload
