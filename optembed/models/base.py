"""The CTR model base: a shared embedding table, the row mask, the width mask, a head."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding
from optembed.masks.dim_mask import apply_widths
from optembed.masks.row_mask import RowPruner
from optembed.models.candidates import CandidateBatch
from optembed.models.config import ModelConfig

# mode -> (prune_rows, sample_dims)
MODE_FLAGS: dict[str, tuple[bool, bool]] = {
    "optembed": (True, True),
    "prune-only": (True, False),  # OptEmbed-E
    "dims-only": (False, True),  # OptEmbed-D
    "none": (False, False),  # the original model
}
MODES = tuple(MODE_FLAGS)


def mode_flags(mode: str) -> tuple[bool, bool]:
    """``mode`` -> ``(prune_rows, sample_dims)``."""
    if mode not in MODE_FLAGS:
        raise ConfigError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    return MODE_FLAGS[mode]


class CTRModel(nn.Module, ABC):
    """Embedding lookup -> (row mask) -> (prefix width mask) -> backbone head -> logits.

    ``pruner`` always exists so checkpoints are uniform; it is applied only when
    ``prune_rows``. ``sample_dims`` tells the trainer to pass sampled widths to
    :meth:`forward`; the model itself applies whatever widths it is given.
    ``row_mask`` (``None`` unless set with :meth:`set_row_mask`) is a fixed boolean mask
    over the table's rows that, once set, replaces the learnable row mask (re-training under
    a frozen ``m_e*``); it is not saved in the state dict.
    """

    row_mask: Tensor | None
    id_remap: Tensor | None
    fixed_widths: Tensor | None

    def __init__(
        self, cardinalities: Sequence[int], cfg: ModelConfig, prune_rows: bool, sample_dims: bool
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.prune_rows = prune_rows
        self.sample_dims = sample_dims
        self.embedding = FieldEmbedding(cardinalities, cfg.embed_dim, init_std=cfg.init_std)
        self.pruner = RowPruner(self.embedding.n_fields, cfg.norm)
        self.register_buffer("row_mask", None, persistent=False)
        self.register_buffer("id_remap", None, persistent=False)
        self.register_buffer("fixed_widths", None, persistent=False)
        self.build_head()

    @property
    def n_fields(self) -> int:
        return self.embedding.n_fields

    @property
    def embed_dim(self) -> int:
        return self.embedding.dim

    @abstractmethod
    def build_head(self) -> None:
        """Create the backbone's modules (called at the end of ``__init__``)."""

    @abstractmethod
    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        """``(B', n, D)`` embeddings and ``(B', n)`` ids (same batch) -> logits ``(B',)``."""

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        """Logits ``(C, B)`` of every candidate of ``cands`` on ``(B, n, D)`` embeddings.

        This default stacks the masked embeddings and runs :meth:`head` once; backbones
        override it to share work between candidates (see :class:`CandidateBatch`).
        """
        return self.head(cands.stacked(emb), x.repeat(cands.size, 1)).view(cands.size, x.shape[0])

    def set_row_mask(self, mask: Tensor | None) -> None:
        """Freeze the row mask to ``mask`` (``BoolTensor(|f|)``), or go back with ``None``."""
        if mask is not None and mask.shape != (self.embedding.num_rows,):
            raise ConfigError(
                f"A row mask needs {self.embedding.num_rows} entries, got {tuple(mask.shape)}."
            )
        self.row_mask = None if mask is None else mask.to(self.embedding.weight.device, bool)

    def set_fixed_masks(self, keep: Tensor | None, widths: Tensor | None) -> None:
        """Re-training under fixed masks: pruned rows (``keep`` False) are read as their field's
        OOV id 0 (by the embedding and by any per-feature term alike), and every field uses its
        fixed prefix width (``widths``, ``(n,)``). ``None`` removes either mask.
        """
        device = self.embedding.weight.device
        if keep is None:
            self.id_remap = None
        else:
            if keep.shape != (self.embedding.num_rows,):
                raise ConfigError(f"A row mask needs {self.embedding.num_rows} entries, got {tuple(keep.shape)}.")
            local = torch.arange(self.embedding.num_rows, device=device) - self.embedding.offsets[self.embedding.field_of_row]
            self.id_remap = torch.where(keep.to(device, torch.bool), local, torch.zeros_like(local))
        if widths is None:
            self.fixed_widths = None
        else:
            if widths.shape != (self.n_fields,) or int(widths.min()) < 1 or int(widths.max()) > self.embed_dim:
                raise ConfigError(f"Fixed widths must be {self.n_fields} values in 1..{self.embed_dim}.")
            self.fixed_widths = widths.to(device, torch.long)

    def remap(self, x: Tensor) -> Tensor:
        """Per-field ids with pruned ids replaced by the field's OOV id (identity without a mask)."""
        if self.id_remap is None:
            return x
        return self.id_remap[self.embedding.global_ids(x)]

    def embed(self, x: Tensor) -> Tensor:
        """``(B, n)`` ids -> ``(B, n, D)`` embeddings, row-masked when ``prune_rows``."""
        emb = self.embedding(x)
        if self.row_mask is not None:
            keep = self.row_mask[self.embedding.global_ids(x)]
            return emb * keep.unsqueeze(-1).to(emb.dtype)
        if self.prune_rows:
            emb, _ = self.pruner(emb)
        return emb

    def forward(self, x: Tensor, widths: Tensor | None = None) -> Tensor:
        """Logits ``(B,)``; ``widths`` of shape ``(B, n)`` or ``(n,)`` keep prefix columns."""
        x = self.remap(x)
        emb = self.embed(x)
        if widths is None:
            widths = self.fixed_widths
        if widths is not None:
            emb = apply_widths(emb, widths)
        return self.head(emb, x)

    def forward_candidates(self, x: Tensor, candidates: Tensor, block: int | None = None) -> Tensor:
        """Logits ``(C, B)`` of ``C`` candidate width vectors ``(C, n)``, one embedding lookup;
        ``block`` as in :class:`CandidateBatch`."""
        x = self.remap(x)
        return self.head_candidates(self.embed(x), x, CandidateBatch(candidates, block))
