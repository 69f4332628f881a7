"""PEP: plug-in embedding pruning with learnable thresholds (Liu et al., ICLR 2021).

Search: every lookup reads the soft-thresholded table ``sign(E) * relu(|E| - sigmoid(s))``, with
``s`` learnable at a granularity of ``global`` (one value), ``dim`` (one per column), ``field``
(one per field) or ``field-dim`` (one per field and column), initialised very negative
(``threshold_init``, default -15) so nothing is pruned at first. ``s`` is trained with the
network (Adam, its weight decay included), and the element sparsity grows during training; the
search is done once it reaches ``target_sparsity``. The mask found (``|E| > sigmoid(s)``) is then
retrained from the initial weights (lottery ticket): a :class:`PEPEmbedder` with a fixed ``mask``
reads ``E * mask``.

From ``threshold_init`` -15 the thresholds need thousands of optimizer steps before they prune
anything, so a short search ends below its target. :meth:`PEPEmbedder.mask_at` then scales every
learned threshold by one common factor ``c`` (found by bisection) so that ``|E| > c * sigmoid(s)``
prunes exactly the target share: the cells keep their learned ratios (all equal when the
thresholds have not moved: plain magnitude pruning), and the user gets the sparsity asked for.

Sparsity is PEP's: the fraction of table elements pruned. The result is element-sparse, so its
real storage needs indices: :meth:`PEPEmbedder.memory_bytes` counts a CSR layout - 4 bytes per
kept value, a column index per kept value (1 byte for ``D <= 256``, else 2) and a 4-byte row
pointer per row (plus one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import FLOAT_BYTES, Embedder, SearchOutcome
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding

GRANULARITIES = ("global", "dim", "field", "field-dim")
CHUNK_ROWS = 1 << 18


def soft_threshold(e: Tensor, g: Tensor) -> Tensor:
    """``sign(e) * relu(|e| - g)``."""
    return torch.sign(e) * F.relu(e.abs() - g)


def csr_bytes(nnz: int, rows: int, dim: int) -> int:
    """Bytes of a CSR matrix: float32 values, column indices, int32 row pointers."""
    return nnz * (FLOAT_BYTES + (1 if dim <= 256 else 2)) + (rows + 1) * 4


class PEPEmbedder(Embedder):
    """One table with a soft threshold per granularity cell (search), or a fixed element mask."""

    kind = "pep"
    mask: Tensor | None

    def __init__(
        self, cardinalities: Sequence[int], dim: int, granularity: str = "field-dim", threshold_init: float = -15.0,
        target_sparsity: float = 0.5, masked: bool = False, init_std: float = 0.01,
    ) -> None:
        super().__init__(cardinalities, dim)
        if granularity not in GRANULARITIES:
            raise ConfigError(f"unknown PEP granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
        if not 0.0 < target_sparsity < 1.0:
            raise ConfigError(f"PEP's target sparsity must be in (0, 1), got {target_sparsity}")
        self.granularity, self.threshold_init, self.target_sparsity = granularity, float(threshold_init), float(target_sparsity)
        self.embedding = FieldEmbedding(cardinalities, dim, init_std=init_std)
        rows = self.n_fields if granularity in ("field", "field-dim") else 1
        cols = dim if granularity in ("dim", "field-dim") else 1
        self.s = nn.Parameter(torch.full((rows, cols), self.threshold_init))
        self.register_buffer("mask", torch.ones(self.num_rows, dim, dtype=torch.bool) if masked else None)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "granularity": self.granularity, "threshold_init": self.threshold_init,
            "target_sparsity": self.target_sparsity, "masked": self.mask is not None,
        }

    # -- lookup ----------------------------------------------------------------------------
    def field_thresholds(self) -> Tensor:
        """``sigmoid(s)`` broadcast to ``(n, D)``."""
        return torch.sigmoid(self.s).expand(self.n_fields, self.dim)

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        e = self.embedding(ids)
        if self.mask is not None:
            return e * self.mask[self.embedding.global_ids(ids)].to(e.dtype)
        return soft_threshold(e, self.field_thresholds().to(e.dtype))

    # -- the mask --------------------------------------------------------------------------
    @torch.no_grad()
    def current_mask(self) -> Tensor:
        """The kept elements ``BoolTensor(|f|, D)``: the fixed mask, or ``|E| > sigmoid(s)``."""
        if self.mask is not None:
            return self.mask
        return self._above(self.field_thresholds().detach().to(self.embedding.weight.dtype))

    @torch.no_grad()
    def _above(self, g: Tensor) -> Tensor:
        """``|E| > g[field]`` for every element, ``g`` ``(n, D)``, computed in row chunks."""
        weight = self.embedding.weight
        field = self.embedding.field_of_row
        out = torch.empty(weight.shape, dtype=torch.bool, device=weight.device)
        for start in range(0, weight.shape[0], CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            out[start:stop] = weight[start:stop].abs() > g[field[start:stop]]
        return out

    def _scaled_thresholds(self, scale: float) -> Tensor:
        """``scale * sigmoid(s)`` as ``(n, D)`` in the table's dtype (one rounding for counting and masking)."""
        return (self.field_thresholds().detach().double() * scale).to(self.embedding.weight.dtype)

    @torch.no_grad()
    def pruned_below(self, scale: float) -> int:
        """How many elements ``|E| <= scale * sigmoid(s)`` would prune (counted in row chunks)."""
        weight = self.embedding.weight
        g = self._scaled_thresholds(scale)
        field = self.embedding.field_of_row
        pruned = 0
        for start in range(0, weight.shape[0], CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            pruned += int((weight[start:stop].abs() <= g[field[start:stop]]).sum())
        return pruned

    @torch.no_grad()
    def mask_at(self, sparsity: float, iterations: int = 50) -> tuple[Tensor, float]:
        """The mask ``|E| > c * sigmoid(s)`` whose sparsity is the smallest one at least ``sparsity``
        (ties at the cut may prune a little more), and ``c``. Bisection on ``log c``."""
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"PEP's sparsity must be in [0, 1), got {sparsity}")
        total = self.num_rows * self.dim
        want = math.ceil(sparsity * total)
        g = self.field_thresholds().detach().double()
        weight = self.embedding.weight.detach()
        top = float(weight.abs().max()) / float(g.min()) * 2.0 + 1e-30  # a scale that prunes everything
        if want == 0:
            scale = 0.0  # only exact zeros
        else:
            lo, hi = top * math.exp(-80.0), top  # invariant: pruned(lo) < want <= pruned(hi)
            if self.pruned_below(lo) >= want:
                hi = lo
            else:
                for _ in range(iterations):
                    mid = math.sqrt(lo * hi)
                    if self.pruned_below(mid) >= want:
                        hi = mid
                    else:
                        lo = mid
            scale = hi
        return self._above(self._scaled_thresholds(scale)), scale

    def set_mask(self, mask: Tensor) -> None:
        """Fix the element mask (retraining the ticket): thresholds are no longer used."""
        if mask.shape != (self.num_rows, self.dim):
            raise ConfigError(f"A PEP mask needs shape {(self.num_rows, self.dim)}, got {tuple(mask.shape)}")
        self.mask = mask.to(self.embedding.weight.device, torch.bool).clone()

    def excluded_params(self) -> list[nn.Parameter]:
        return [self.s] if self.mask is not None else []

    def sparsity(self) -> float:
        return 1.0 - self.kept_params() / (self.num_rows * self.dim)

    def search_done(self) -> bool:
        return self.mask is None and self.sparsity() >= self.target_sparsity

    found_options = ("masked",)

    def searching(self) -> str | None:
        return f"pep: pruning until sparsity {self.target_sparsity}" if self.mask is None else None

    def search_outcome(self, field_names: Sequence[str], epochs: int) -> SearchOutcome:
        """The mask the thresholds learned; a search that ends below the target scales them by
        one factor to meet it. Re-trained from the initial weights (the lottery ticket)."""
        learned = self.sparsity()
        metrics: dict[str, Any] = {"search_sparsity": learned, "target_reached": learned >= self.target_sparsity,
                                   "threshold_scale": 1.0}
        message = ""
        if metrics["target_reached"]:
            mask = self.current_mask()
        else:
            mask, scale = self.mask_at(self.target_sparsity)
            metrics["threshold_scale"] = scale
            message = (
                f"pep: the learned thresholds pruned {learned:.4f} in {epochs} epoch(s), short of the target {self.target_sparsity:g}; "
                f"scaled by {scale:.4g} to meet it (a higher --threshold-init or more epochs lets them learn it)"
            )
        return SearchOutcome({"masked": True}, metrics, message=message, rewind=True, state={"mask": mask.clone()})

    def stats(self) -> dict[str, float]:
        return {"sparsity": self.sparsity()}

    # -- size ------------------------------------------------------------------------------
    def kept_params(self) -> int:
        return int(self.current_mask().sum())

    def memory_bytes(self) -> dict[str, int]:
        return {"embedding": csr_bytes(self.kept_params(), self.num_rows, self.dim), "remaps": 0}

    def field_rows(self) -> list[int]:
        """Rows of each field with at least one kept element."""
        alive = self.current_mask().any(dim=1)
        field = self.embedding.field_of_row.to(alive.device)
        return torch.bincount(field[alive], minlength=self.n_fields).tolist()
