"""The deployable compact model: a backbone over a :class:`CompactEmbedder` (one dense table
per field, only its kept rows and its width), sliced from a model trained under fixed masks.

Per-feature terms of the head (DeepFM's linear weights) are compacted with the same rows
(:func:`optembed.models.heads.over_embedder`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from optembed.models.apply import apply_search
from optembed.models.base import CTRModel
from optembed.models.heads import over_embedder


@torch.no_grad()
def compact_model(model: CTRModel) -> CTRModel:
    """Physically slice ``model`` (a table embedder under fixed masks) into a model over a
    :class:`~optembed.embedders.compact.CompactEmbedder`, in evaluation mode."""
    embedder, kept_ids = model.embedder.export()
    return over_embedder(model, embedder, kept_ids).eval()


@torch.no_grad()
def export_compact(model: CTRModel, keep: Tensor, widths: Tensor) -> CTRModel:
    """Physically slice ``model`` (trained under ``keep``/``widths``) into a compact model."""
    apply_search(model, keep, widths)
    return compact_model(model)
