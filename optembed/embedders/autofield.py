"""AutoField: differentiable feature-field selection (Wang et al., WWW 2022).

Search: every field ``f`` has two architecture logits ``(drop, keep)``; a lookup scales the
field's full-width embedding by its keep weight, the second entry of an annealed Gumbel-softmax
of the two logits (:class:`optembed.embedders.gumbel.AnnealedGumbel`; the plain softmax when
evaluating). The logits start equal (keep probability 0.5) and are architecture parameters: the
trainer updates them on validation batches, alternately with the network on training batches
(first-order DARTS; :mod:`optembed.training.arch`). A field is kept when its keep probability
``softmax(logits)[keep]`` exceeds 0.5, or, with ``keep_fields = k``, when it is among the ``k``
most probable (at least one field is always kept).

Retrain: an :class:`AutoFieldEmbedder` with a fixed ``keep`` list holds a table of the kept
fields only; a dropped field reads a zero embedding and its ids are all read as id 0 (so a
per-feature head term, DeepFM's linear weights, sees one constant row for it). Sparsity:
``1 - kept fields' rows x D / (all rows x D)``, the parameters of the dropped fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from optembed.embedders.base import Embedder, SearchOutcome
from optembed.embedders.gumbel import AnnealedGumbel
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding

KEEP = 1  # column of the keep logit


class AutoFieldEmbedder(Embedder):
    """The full table gated per field by learned keep weights (search), or the kept fields only."""

    kind = "autofield"
    keep_index: Tensor
    field_keep: Tensor
    order: Tensor

    def __init__(
        self, cardinalities: Sequence[int], dim: int, keep: Sequence[bool] | None = None, keep_fields: int = 0,
        temperature: float = 1.0, temperature_decay: float = 5e-5, min_temperature: float = 0.01,
        arch_lr: float = 3e-4, init_std: float = 0.01,
    ) -> None:
        super().__init__(cardinalities, dim)
        if keep_fields < 0 or keep_fields > self.n_fields:
            raise ConfigError(f"AutoField's keep_fields must be in 0..{self.n_fields} (0: keep probability > 0.5), "
                              f"got {keep_fields}")
        if arch_lr <= 0:
            raise ConfigError(f"AutoField's arch_lr must be positive, got {arch_lr}")
        self.keep_fields, self.arch_lr = int(keep_fields), float(arch_lr)
        self.gumbel = AnnealedGumbel(temperature, temperature_decay, min_temperature)
        self.keep: list[bool] | None = None if keep is None else [bool(k) for k in keep]
        if self.keep is None:
            self.embedding = FieldEmbedding(self.cardinalities, dim, init_std=init_std)
            self.logits = nn.Parameter(torch.zeros(self.n_fields, 2))
            return
        if len(self.keep) != self.n_fields or not any(self.keep):
            raise ConfigError(f"AutoField's keep needs {self.n_fields} flags with at least one field kept")
        kept = [f for f, k in enumerate(self.keep) if k]
        dropped = [f for f, k in enumerate(self.keep) if not k]
        self.embedding = FieldEmbedding([self.cardinalities[f] for f in kept], dim, init_std=init_std)
        self.register_buffer("keep_index", torch.tensor(kept, dtype=torch.long), persistent=False)
        self.register_buffer("field_keep", torch.tensor(self.keep, dtype=torch.bool), persistent=False)
        self.register_buffer("order", torch.argsort(torch.tensor(kept + dropped)), persistent=False)

    def spec(self) -> dict[str, Any]:
        g = self.gumbel
        out: dict[str, Any] = {
            "kind": self.kind, "keep_fields": self.keep_fields, "temperature": g.temperature,
            "temperature_decay": g.decay, "min_temperature": g.min_temperature, "arch_lr": self.arch_lr,
        }
        if self.keep is not None:
            out["keep"] = list(self.keep)
        return out

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        if self.keep is None:
            return self.cardinalities
        return tuple(c if k else 1 for c, k in zip(self.cardinalities, self.keep, strict=True))

    # -- lookup ----------------------------------------------------------------------------
    def ids(self, x: Tensor) -> Tensor:
        if self.keep is None:
            return x
        return x * self.field_keep.to(x.dtype)  # a dropped field's ids all read id 0

    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        if self.keep is None:
            weights = self.gumbel(self.logits)[:, KEEP]  # (n,)
            emb = self.embedding(ids)
            return emb * weights.to(emb.dtype).view(1, -1, 1)
        kept = self.embedding(ids[:, self.keep_index])
        zeros = kept.new_zeros(ids.shape[0], self.n_fields - kept.shape[1], self.dim)
        return torch.cat([kept, zeros], dim=1)[:, self.order]

    # -- the search ------------------------------------------------------------------------
    def arch_params(self) -> list[nn.Parameter]:
        return [self.logits] if self.keep is None else []

    @torch.no_grad()
    def keep_probabilities(self) -> list[float]:
        """Per field ``softmax(logits)[keep]`` (search), or 1/0 for kept/dropped (retrain)."""
        if self.keep is None:
            return torch.softmax(self.logits.float(), dim=-1)[:, KEEP].tolist()
        return [1.0 if k else 0.0 for k in self.keep]

    def selected(self) -> list[bool]:
        """The fields to keep: keep probability > 0.5, or the ``keep_fields`` most probable;
        at least the most probable field."""
        probs = self.keep_probabilities()
        ranked = sorted(range(self.n_fields), key=lambda f: (-probs[f], f))
        if self.keep_fields > 0:
            chosen = set(ranked[: self.keep_fields])
        else:
            chosen = {f for f in range(self.n_fields) if probs[f] > 0.5} or {ranked[0]}
        return [f in chosen for f in range(self.n_fields)]

    found_options = ("keep",)

    def search_outcome(self, field_names: Sequence[str], epochs: int) -> SearchOutcome:
        """The fields kept (re-trained from a fresh initialisation), with their keep probabilities."""
        keep = self.selected()
        probs = self.keep_probabilities()
        names = list(field_names)
        metrics = {
            "fields_kept": sum(keep),
            "fields_dropped": [n for n, k in zip(names, keep, strict=True) if not k],
            "field_sparsity": 1.0 - sum(keep) / len(keep),
        }
        fields = [{"field": n, "keep_probability": p, "kept": k} for n, p, k in zip(names, probs, keep, strict=True)]
        return SearchOutcome({"keep": keep}, metrics, fields, f"autofield: keeping {sum(keep)} of {len(keep)} fields")

    def stats(self) -> dict[str, float]:
        if self.keep is None:
            return {"fields_kept": float(sum(self.selected())), "temperature": self.gumbel.current_temperature()}
        return {}

    # -- size ------------------------------------------------------------------------------
    def kept_params(self) -> int:
        return sum(self.field_rows()) * self.dim

    def field_rows(self) -> list[int]:
        if self.keep is None:
            return list(self.cardinalities)
        return [c if k else 0 for c, k in zip(self.cardinalities, self.keep, strict=True)]

    def field_widths(self) -> list[int]:
        if self.keep is None:
            return [self.dim] * self.n_fields
        return [self.dim if k else 0 for k in self.keep]
