"""Applying a search result to a model: the one place where a row mask and widths meet a model.

The search scores candidates, the re-training starts from them and ``evaluate``'s "(no
retrain)" row reports them; all three go through :func:`apply_search`, so the model evaluated
is the model the search scored:

- every field's OOV row is kept (pruned ids are read as it, :func:`optembed.masks.oov.with_oov_rows`);
- with ``counts``, every field's OOV row first becomes the count-weighted mean of the rows it
  now stands for, in the embedding table and in the head's per-id tables
  (:mod:`optembed.masks.fold`);
- the row mask is frozen (a supernet's learnable thresholds no longer apply), pruned ids
  are remapped to their field's OOV id; ``widths`` (one per field) fix the prefix widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from optembed.masks.fold import fold_pruned_rows
from optembed.masks.oov import with_oov_rows
from optembed.models.base import CTRModel


@torch.no_grad()
def apply_search(
    model: CTRModel, keep: Tensor | None, widths: Tensor | Sequence[int] | None, counts: Tensor | None = None
) -> Tensor:
    """Put ``model`` (over OptEmbed's table) under the row mask ``keep`` (``None``: every row)
    and the per-field ``widths`` (``None``: the widths stay free, as a scorer passes them);
    ``counts`` (``(|f|,)``, the training counts) fold the pruned rows into their field's OOV row
    first. Returns the mask applied (OOV rows kept)."""
    table = model.table_embedder()
    device = table.embedding.weight.device
    full = torch.ones(table.num_rows, dtype=torch.bool, device=device)
    keep = with_oov_rows(full if keep is None else keep.to(device), table.embedding.offsets)
    if counts is not None and not bool(keep.all()):
        fold_pruned_rows([table.embedding, *model.additive_id_tables()], keep, counts.to(device))
    if table.prune_rows:  # a supernet: its learnable thresholds no longer apply
        table.set_row_mask(keep)
    table.set_fixed_masks(keep, None if widths is None else torch.as_tensor(widths, dtype=torch.long))
    return keep
