"""The full table, and OptEmbed's table under a row mask and field-wise prefix widths.

One :class:`TableEmbedder` serves the Original model (no mask), the supernet (a learnable row
mask with per-field thresholds and/or sampled widths) and re-training under fixed masks
(:meth:`TableEmbedder.set_fixed_masks`); its export is the per-field compact tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from optembed.embedders.base import FLOAT_BYTES, Embedder
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding
from optembed.masks.dim_mask import apply_widths
from optembed.masks.fused import masked_rows
from optembed.masks.oov import with_oov_rows
from optembed.masks.row_mask import RowPruner

@dataclass(frozen=True)
class SupernetMode:
    """What OptEmbed's table learns as a supernet: ``prune_rows`` (learnable row thresholds) and/or
    ``sample_dims`` (random per-field widths). ``name`` is how configs, manifests and model files
    spell it; :meth:`parse` reads it back (once, where it is read)."""

    name: str
    prune_rows: bool
    sample_dims: bool

    @classmethod
    def parse(cls, name: str) -> SupernetMode:
        """The mode spelt ``name``; a :class:`ConfigError` naming the choices for any other."""
        for mode in SUPERNET_MODES:
            if mode.name == name:
                return mode
        raise ConfigError(f"Unknown mode {name!r}; choose one of {', '.join(MODES)}.")

    @property
    def searchable(self) -> bool:
        """Whether a search has anything to choose on a supernet of this mode (row thresholds or widths)."""
        return self.prune_rows or self.sample_dims

    def __str__(self) -> str:
        return self.name


SUPERNET_MODES: tuple[SupernetMode, ...] = (
    SupernetMode("optembed", prune_rows=True, sample_dims=True),
    SupernetMode("prune-only", prune_rows=True, sample_dims=False),  # OptEmbed-E
    SupernetMode("dims-only", prune_rows=False, sample_dims=True),  # OptEmbed-D
    SupernetMode("none", prune_rows=False, sample_dims=False),  # the original model
)
MODES: tuple[str, ...] = tuple(m.name for m in SUPERNET_MODES)


class TableEmbedder(Embedder):
    """Embedding lookup -> (row mask) -> (prefix width mask).

    ``pruner`` always exists so checkpoints are uniform; it is applied only when
    ``prune_rows``. ``sample_dims`` tells the trainer to pass sampled widths; the lookup applies
    whatever widths it is given. ``row_mask`` (``None`` unless set with :meth:`set_row_mask`) is
    a fixed boolean mask over the table's rows that, once set, replaces the learnable row mask
    (re-training under a frozen ``m_e*``); it is not saved in the state dict.
    """

    kind = "table"
    flat_keys = True
    row_mask: Tensor | None
    id_remap: Tensor | None
    fixed_widths: Tensor | None

    @classmethod
    def of_mode(cls, cardinalities: Sequence[int], dim: int, init_std: float, norm: str, mode: SupernetMode) -> TableEmbedder:
        """The full table that learns what the supernet ``mode`` learns."""
        return cls(cardinalities, dim, init_std, norm, mode.prune_rows, mode.sample_dims)

    def __init__(
        self, cardinalities: Sequence[int], dim: int, init_std: float, norm: str = "l1",
        prune_rows: bool = False, sample_dims: bool = False,
    ) -> None:
        super().__init__(cardinalities, dim)
        self.prune_rows = prune_rows
        self.sample_dims = sample_dims
        self.embedding = FieldEmbedding(cardinalities, dim, init_std=init_std)
        self.pruner = RowPruner(self.embedding.n_fields, norm)
        self.register_buffer("row_mask", None, persistent=False)
        self.register_buffer("id_remap", None, persistent=False)
        self.register_buffer("fixed_widths", None, persistent=False)

    # -- masks -----------------------------------------------------------------------------
    def set_row_mask(self, mask: Tensor | None) -> None:
        """Freeze the row mask to ``mask`` (``BoolTensor(|f|)``), or go back with ``None``."""
        if mask is not None and mask.shape != (self.embedding.num_rows,):
            raise ConfigError(f"A row mask needs {self.embedding.num_rows} entries, got {tuple(mask.shape)}.")
        self.row_mask = None if mask is None else mask.to(self.embedding.weight.device, bool)

    def set_fixed_masks(self, keep: Tensor | None, widths: Tensor | None) -> None:
        """Re-training under fixed masks: pruned rows (``keep`` False) are read as their field's
        OOV id 0 (by the embedding and by any per-feature term alike), and every field uses its
        fixed prefix width (``widths``, ``(n,)``). ``None`` removes either mask.
        """
        emb = self.embedding
        device = emb.weight.device
        if keep is None:
            self.id_remap = None
        else:
            if keep.shape != (emb.num_rows,):
                raise ConfigError(f"A row mask needs {emb.num_rows} entries, got {tuple(keep.shape)}.")
            local = torch.arange(emb.num_rows, device=device) - emb.offsets[emb.field_of_row]
            self.id_remap = torch.where(keep.to(device, torch.bool), local, torch.zeros_like(local))
        if widths is None:
            self.fixed_widths = None
        else:
            if widths.shape != (self.n_fields,) or int(widths.min()) < 1 or int(widths.max()) > self.dim:
                raise ConfigError(f"Fixed widths must be {self.n_fields} values in 1..{self.dim}.")
            self.fixed_widths = widths.to(device, torch.long)

    # -- lookup ----------------------------------------------------------------------------
    def ids(self, x: Tensor) -> Tensor:
        """Per-field ids with pruned ids replaced by the field's OOV id (identity without a mask)."""
        if self.id_remap is None:
            return x
        return self.id_remap[self.embedding.global_ids(x)]

    def rows(self, ids: Tensor) -> Tensor:
        """``(B, n)`` ids -> ``(B, n, D)`` rows, row-masked when ``prune_rows`` (full width)."""
        emb = self.embedding(ids)
        if self.row_mask is not None:
            keep = self.row_mask[self.embedding.global_ids(ids)]
            return emb * keep.unsqueeze(-1).to(emb.dtype)
        if self.prune_rows:
            emb, _ = self.pruner(emb)
        return emb

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        if widths is None:
            widths = self.fixed_widths
        if self.prune_rows and self.row_mask is None:  # the supernet: both masks in one pass
            return masked_rows(self.embedding(ids), self.pruner.threshold, widths, self.pruner.norm)
        emb = self.rows(ids)
        if widths is not None:
            emb = apply_widths(emb, widths)
        return emb

    # -- training --------------------------------------------------------------------------
    def learns_thresholds(self) -> bool:
        return self.prune_rows and self.row_mask is None

    def regularizer(self) -> Tensor | None:
        return self.pruner.regularizer() if self.learns_thresholds() else None

    def threshold_params(self) -> list[nn.Parameter]:
        return [self.pruner.threshold] if self.learns_thresholds() else []

    def excluded_params(self) -> list[nn.Parameter]:
        return [self.pruner.threshold]

    def table_row_counts(self, id_counts: Tensor) -> Tensor:
        """Counts of the rows read: under fixed masks a pruned id's count goes to its field's OOV row."""
        from optembed.training.freq_lr import remapped_counts

        emb = self.embedding
        if id_counts.shape != (emb.num_rows,):
            raise ConfigError(f"--freq-lr needs one count per table row ({emb.num_rows}), got {tuple(id_counts.shape)}")
        if self.id_remap is None:
            return id_counts
        return remapped_counts(id_counts, self.id_remap, emb.offsets, emb.field_of_row)

    # -- size ------------------------------------------------------------------------------
    @torch.no_grad()
    def keep_mask(self) -> Tensor | None:
        """The rows kept, ``BoolTensor(|f|)``: the fixed mask, else the learned one when pruning
        (``None``: every row)."""
        emb = self.embedding
        if self.id_remap is not None:
            local = torch.arange(emb.num_rows, device=self.id_remap.device) - emb.offsets[emb.field_of_row]
            return self.id_remap == local
        if self.row_mask is not None:
            return self.row_mask
        if self.prune_rows:
            return self.pruner.table_mask(emb.weight, emb.field_of_row)
        return None

    @torch.no_grad()
    def learned_mask(self) -> Tensor:
        """The rows the learnable thresholds keep, ``BoolTensor(|f|)`` (every row when not pruning)."""
        emb = self.embedding
        if self.prune_rows:
            return self.pruner.table_mask(emb.weight, emb.field_of_row)
        return torch.ones(emb.num_rows, dtype=torch.bool, device=emb.weight.device)

    def row_mask_record(self) -> dict[str, Any]:
        emb = self.embedding
        mask = self.learned_mask().cpu()
        kept = torch.bincount(emb.field_of_row.cpu()[mask], minlength=emb.n_fields)
        return {
            "mask": mask,
            "kept_per_field": kept.tolist(),
            "rows_per_field": list(emb.cardinalities),
            "thresholds": self.pruner.threshold.detach().cpu().tolist(),
            "pruned": self.prune_rows,
        }

    @torch.no_grad()
    def row_stats(self) -> dict[str, float]:
        emb = self.embedding
        kept = int(self.learned_mask().sum())
        t = self.pruner.threshold.detach()
        norms = emb.weight.detach().abs().sum(dim=1)
        return {
            "sparsity": 1.0 - kept / emb.num_rows,
            "kept_rows": kept,
            "threshold_min": float(t.min()),
            "threshold_mean": float(t.mean()),
            "threshold_max": float(t.max()),
            "norm_min": float(norms.min()),
            "norm_mean": float(norms.mean()),
            "norm_max": float(norms.max()),
        }

    def field_rows(self) -> list[int]:
        keep = self.keep_mask()
        if keep is None:
            return list(self.cardinalities)
        emb = self.embedding
        return torch.bincount(emb.field_of_row[keep.to(emb.offsets.device)], minlength=self.n_fields).tolist()

    def field_widths(self) -> list[int]:
        return [self.dim] * self.n_fields if self.fixed_widths is None else self.fixed_widths.tolist()

    def kept_params(self) -> int:
        return sum(k * w for k, w in zip(self.field_rows(), self.field_widths(), strict=True))

    def memory_bytes(self) -> dict[str, int]:
        """The bytes of the compact export: kept rows x widths float32 values."""
        return {"embedding": self.kept_params() * FLOAT_BYTES, "remaps": 0}

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "norm": self.pruner.norm, "prune_rows": self.prune_rows, "sample_dims": self.sample_dims}

    @torch.no_grad()
    def export(self) -> tuple[Embedder, list[Tensor] | None]:
        """Per-field dense tables of the kept rows (the OOV row always among them) and widths."""
        from optembed.embedders.compact import CompactEmbedder

        emb = self.embedding
        keep = self.keep_mask()
        keep = torch.ones(emb.num_rows, dtype=torch.bool, device=emb.weight.device) if keep is None else keep
        keep = with_oov_rows(keep.to(emb.weight.device), emb.offsets)
        widths = self.field_widths()
        tables, remaps, kept_ids = [], [], []
        for f, card in enumerate(emb.cardinalities):
            start = int(emb.offsets[f])
            ids = torch.nonzero(keep[start : start + card]).squeeze(1)  # sorted, ids[0] == 0 (OOV)
            remap = torch.zeros(card, dtype=torch.long, device=ids.device)
            remap[ids] = torch.arange(ids.numel(), device=ids.device)
            tables.append(emb.weight[start + ids, : widths[f]].cpu())
            remaps.append(remap.cpu())
            kept_ids.append(ids.cpu())
        return CompactEmbedder(tables, remaps, self.dim), kept_ids
