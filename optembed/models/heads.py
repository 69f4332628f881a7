"""A backbone head moved onto another embedder: its state without the embedder's, and back.

Per-feature terms of the head (DeepFM's linear weights) index the embedder's ids, so a head moved
onto an embedder that keeps fewer rows (the compact tables) keeps the same rows of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optembed.embedders.base import Embedder
from optembed.errors import ArtifactError
from optembed.layers.embedding import FieldEmbedding
from optembed.models.base import CTRModel
from optembed.models.registry import build_model

LEGACY_TABLE_KEYS = ("embedding.", "pruner.")  # the emptied full table of older compact files' head state


def head_state(model: CTRModel) -> dict[str, Tensor]:
    """The state of ``model`` without its embedder's (the backbone head's own)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("embedder.") and not k.startswith(LEGACY_TABLE_KEYS)}


def load_head(backbone: CTRModel, state: dict[str, Tensor]) -> None:
    """Load a head state (older files' table entries ignored) into ``backbone``, strictly otherwise."""
    state = {k: v for k, v in state.items() if not k.startswith(LEGACY_TABLE_KEYS)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("embedder.")]
    if missing or unexpected:
        raise ArtifactError(f"head state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


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
