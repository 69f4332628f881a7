"""The serving network: preprocess ids in, logit and probability out (one per task), with one code path.

:class:`ServingNet` wraps a deployable model for export: the embedder's own exportable lookup
(:meth:`~optembed.embedders.base.Embedder.serving_lookup`: the compact tables' remap and
row gathers of width-grouped tables, or the quantized tables' id map and per-field decode), then the backbone's
head. Its forward has no branch on the batch size and no in-place writes, so ``torch.export``
can trace it with a symbolic batch dimension and the ONNX exporter can translate every operator.
The head is the model's own module, so the graph computes what the in-package model computes;
the head's parameters are shared, not copied (a compact lookup copies its tables into width
groups when the net is built). A lookup with a packed layout (the compact tables') hands the
head its group blocks unpadded (:meth:`~optembed.models.base.CTRModel.head_packed`), and the
head's first layers are then laid out for the lookup's groups
(:meth:`~optembed.models.base.CTRModel.for_layout`: those weights are copies).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from optembed.models.base import CTRModel

INPUT_NAME = "ids"
OUTPUT_NAMES = ("logit", "probability")


class ServingNet(nn.Module):
    """``(B, n)`` int64 preprocess ids -> ``(logit, probability)``, each ``(B,)`` float32
    (``(B, T)`` for a model of ``T`` tasks, the primary task's column first)."""

    def __init__(self, model: CTRModel, field_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.lookup = model.embedder.serving_lookup()
        layout = getattr(self.lookup, "layout", None)
        self.packs = layout is not None
        self.backbone = model if layout is None else model.for_layout(layout)
        self.field_names = list(field_names) if field_names is not None else [f"f{i}" for i in range(model.n_fields)]
        self.n_fields = len(self.field_names)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        if self.packs:
            rows, packed = self.lookup.packed(ids)
            logit = self.backbone.head_packed(packed, rows)
        else:
            rows, emb = self.lookup(ids)
            logit = self.backbone.head(emb, rows)
        return logit, torch.sigmoid(logit)
