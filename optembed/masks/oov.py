"""Every field's OOV row stays: pruned ids are read as it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def field_offsets(cardinalities: Sequence[int]) -> Tensor:
    """The first row of every field in a table of fields of ``cardinalities`` (its OOV row)."""
    cards = torch.as_tensor([int(c) for c in cardinalities], dtype=torch.long)
    return torch.cumsum(cards, 0) - cards


def with_oov_rows(mask: Tensor, offsets: Tensor | Sequence[int]) -> Tensor:
    """A boolean copy of the row mask ``mask`` (``(|f|,)``) with every field's OOV row (at
    ``offsets``) set."""
    out = mask.detach().clone().to(torch.bool)
    out[torch.as_tensor(offsets, dtype=torch.long, device=out.device)] = True
    return out
