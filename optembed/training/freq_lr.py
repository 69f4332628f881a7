"""Frequency-adaptive learning rate of embedding rows: rows of frequent ids learn slower.

Multi-epoch training of CTR models overfits after the first epoch, mostly through the
embedding rows; a per-row learning rate that decreases with the id's training count slows
the rows of frequent ids (which get many updates per epoch) and leaves rare ids at the full
rate. For an id seen ``n_v`` times, ``lr_v = lr * scale(n_v)`` with:

- ``clip``:   ``scale = (c0 / max(c0, n_v)) ** p`` - full rate up to ``c0`` occurrences, then
  decreasing as ``n_v ** -p``;
- ``smooth``: ``scale = (1 + n_v / c0) ** -p``.

The counts are those of the preprocess artifact's vocabularies (``vocab/<field>.parquet``:
one count per id, the OOV and missing rows included), in the shared table's row order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optembed.errors import ConfigError


def row_scale(counts: Tensor, form: str, c0: float, power: float) -> Tensor:
    """Per-row learning-rate factors in ``(0, 1]`` from per-row id counts."""
    n = counts.to(torch.float64).clamp(min=0)
    if form == "clip":
        scale = (c0 / torch.clamp(n, min=c0)) ** power
    elif form == "smooth":
        scale = (1.0 + n / c0) ** -power
    else:
        raise ConfigError(f"unknown --freq-lr '{form}'; choose clip or smooth")
    return scale.to(torch.float32)


def remapped_counts(counts: Tensor, id_remap: Tensor, offsets: Tensor, field_of_row: Tensor) -> Tensor:
    """Counts of the rows actually read when pruned ids are read as their field's OOV row.

    ``id_remap`` maps every table row to the per-field id it is read as (see
    ``TableEmbedder.set_fixed_masks``); a pruned id's occurrences land on its field's OOV row.
    """
    target = offsets[field_of_row] + id_remap
    out = torch.zeros_like(counts)
    out.index_add_(0, target, counts)
    return out
