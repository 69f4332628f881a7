"""The deployable compact model: a backbone over a :class:`CompactEmbedder` (one dense table
per field, only its kept rows and its width), exported from a model trained under fixed masks.

Per-feature terms of the head (DeepFM's linear weights) are compacted with the same rows.
The file keeps the per-field tables, remaps and the head's state (``head_state``); files
written before embedders existed also hold the table's offsets and thresholds there, which
loading ignores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from optembed.embedders.base import Embedder
from optembed.embedders.compact import CompactEmbedder
from optembed.errors import ArtifactError
from optembed.layers.embedding import FieldEmbedding
from optembed.models.base import CTRModel
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import load_tensor_file, rebuild

FORMAT = "optembed-compact"
VERSION = 1
LEGACY_TABLE_KEYS = ("embedding.", "pruner.")  # the emptied full table of older files' head state


class CompactModel(nn.Module):
    """A backbone over a :class:`CompactEmbedder`, with the field names; the embedder's
    tables, remaps and sizes are reachable from here."""

    def __init__(self, backbone: CTRModel, field_names: Sequence[str]) -> None:
        super().__init__()
        if not isinstance(backbone.embedder, CompactEmbedder):
            raise ValueError("a compact model needs a backbone over a CompactEmbedder")
        self.backbone = backbone
        self.field_names = list(field_names)

    @property
    def embedder(self) -> CompactEmbedder:
        return self.backbone.embedder  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def flat(self) -> Tensor:
        """The tables' entries laid end to end (a view of the embedder's buffer, zero tail excluded)."""
        return self.embedder.entries

    @property
    def widths(self) -> list[int]:
        return self.embedder.widths

    @property
    def kept(self) -> list[int]:
        return self.embedder.kept

    def table(self, f: int) -> Tensor:
        return self.embedder.table(f)

    def field_remap(self, f: int) -> Tensor:
        return self.embedder.field_remap(f)

    def compact_ids(self, x: Tensor) -> Tensor:
        return self.embedder.ids(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def embedding_params(self) -> int:
        return self.embedder.kept_params()

    def size_report(self) -> dict[str, Any]:
        return self.backbone.size_report()

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held in memory: embedding tables (with the lookup's ``D`` zeros at the buffer's
        end), id remaps, everything else (the network)."""
        mem = self.embedder.memory_bytes()
        tables = self.embedder.flat.numel() * self.embedder.flat.element_size()
        total = sum(p.numel() * p.element_size() for p in self.parameters())
        total += sum(b.numel() * b.element_size() for b in self.buffers())
        return {"tables": tables, "remaps": mem["remaps"], "network": total - tables - mem["remaps"], "total": total}


def head_state(model: CTRModel) -> dict[str, Tensor]:
    """The state of ``model`` without its embedder's (the backbone head's own)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("embedder.")}


def over_embedder(model: CTRModel, embedder: Embedder, kept_ids: list[Tensor] | None) -> CTRModel:
    """A copy of ``model``'s head over ``embedder``; per-feature tables keep the rows ``kept_ids``."""
    backbone = build_model(embedder.cardinalities, model.cfg, "none", embedder=embedder)
    own = {n for n, m in model.named_modules() if isinstance(m, FieldEmbedding)}
    state: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        if name.startswith("embedder.") or name.startswith(LEGACY_TABLE_KEYS):
            continue
        module_name = name.rsplit(".", 1)[0]
        if module_name in own and kept_ids is not None:
            module = model.get_submodule(module_name)
            if name.endswith(".weight"):
                rows = torch.cat([int(module.offsets[f]) + ids.to(module.offsets.device) for f, ids in enumerate(kept_ids)])
                value = module.weight[rows]
            else:
                value = backbone.get_submodule(module_name).offsets
        state[name] = value.detach().cpu()
    load_head(backbone, state)
    return backbone


def load_head(backbone: CTRModel, state: dict[str, Tensor]) -> None:
    """Load a head state (older files' table entries ignored) into ``backbone``, strictly otherwise."""
    state = {k: v for k, v in state.items() if not k.startswith(LEGACY_TABLE_KEYS)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("embedder.")]
    if missing or unexpected:
        raise ArtifactError(f"head state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


@torch.no_grad()
def compact_model(model: CTRModel, field_names: Sequence[str]) -> CompactModel:
    """Physically slice ``model`` (a table embedder under fixed masks) into a :class:`CompactModel`."""
    embedder, kept_ids = model.embedder.export()
    backbone = over_embedder(model, embedder, kept_ids)
    return CompactModel(backbone, field_names).eval()


@torch.no_grad()
def export_compact(model: CTRModel, keep: Tensor, widths: Tensor, field_names: Sequence[str]) -> CompactModel:
    """Physically slice ``model`` (trained under ``keep``/``widths``) into a :class:`CompactModel`."""
    model.set_fixed_masks(keep, widths)
    return compact_model(model, field_names)


def save_compact(path: Path, compact: CompactModel, extra: dict[str, Any] | None = None) -> None:
    state = head_state(compact.backbone)
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
        cfg = ModelConfig.from_dict(payload["model_config"])
        embedder = CompactEmbedder(payload["tables"], payload["remaps"], cfg.embed_dim)
        backbone = build_model(embedder.cardinalities, cfg, "none", embedder=embedder)
        load_head(backbone, dict(payload["head_state"]))
        return CompactModel(backbone, payload["field_names"]).to(device).eval()

    return rebuild(path, "compact model file", build), payload
