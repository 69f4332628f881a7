"""AutoDim: field-aware embedding width search (Zhao et al., WWW 2021).

Search (weight sharing, the paper's second architecture): one ``D``-wide table; candidate
width ``d_c`` of a field reads the first ``d_c`` columns of the field's rows. Each candidate is
brought to the common width ``D`` by ``transform``:

- ``linear`` (the paper): a linear map ``d_c -> D`` per field and candidate, followed by a
  batch normalisation per field and candidate (it puts the candidates on one scale before they
  are mixed);
- ``pad``: zero-padding to ``D`` (the field's embedding is then the table row times a soft
  prefix mask; no extra parameters).

The field's embedding is the sum of its candidates weighted by an annealed Gumbel-softmax of
its architecture logits (one logit per candidate, starting equal; :mod:`.gumbel`), updated on
validation batches alternately with the network (first-order DARTS). The chosen width of a
field is the candidate of its largest logit.

Retrain: an :class:`AutoDimEmbedder` with fixed ``widths`` stores field ``f``'s table with
``widths[f]`` columns only (fields of one width share one table) and maps it to ``D`` with the
same ``transform``: a linear map per field (as the paper retrains; no normalisation), or
zero-padding (OptEmbed's compact per-field tables). Sparsity: ``1 - sum_f rows_f x d_f /
(all rows x D)``; the linear maps (``d_f x D + D`` per field) count in the embedding's
parameters and bytes, not in the sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.embedders.base import FLOAT_BYTES, Embedder, SearchOutcome
from optembed.embedders.gumbel import AnnealedGumbel
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding

TRANSFORMS = ("linear", "pad")


def default_candidates(dim: int) -> list[int]:
    """Powers of two from 2 up to ``dim``, and ``dim`` itself (1 when ``dim`` is 1)."""
    out = [2**k for k in range(1, dim.bit_length()) if 2**k < dim]
    return [*out, dim]


def _uniform(shape: tuple[int, ...], fan_in: Tensor | int) -> Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, a linear layer's default, per leading cell."""
    bound = 1.0 / torch.sqrt(torch.as_tensor(fan_in, dtype=torch.float32))
    return (torch.rand(shape) * 2 - 1) * bound


class AutoDimEmbedder(Embedder):
    """Weight-shared candidate widths mixed by learned weights (search), or fixed widths."""

    kind = "autodim"
    cand_widths: Tensor
    cand_rows: Tensor
    order: Tensor

    def __init__(
        self, cardinalities: Sequence[int], dim: int, candidates: Sequence[int] | None = None,
        transform: str = "linear", widths: Sequence[int] | None = None, temperature: float = 1.0,
        temperature_decay: float = 5e-5, min_temperature: float = 0.01, arch_lr: float = 3e-4,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(cardinalities, dim)
        cands = sorted({int(c) for c in candidates}) if candidates else default_candidates(dim)
        if not cands or cands[0] < 1 or cands[-1] > dim:
            raise ConfigError(f"AutoDim's candidate widths must be in 1..{dim}, got {list(candidates or [])}")
        if transform not in TRANSFORMS:
            raise ConfigError(f"unknown AutoDim transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
        if arch_lr <= 0:
            raise ConfigError(f"AutoDim's arch_lr must be positive, got {arch_lr}")
        self.candidates, self.transform, self.arch_lr = cands, transform, float(arch_lr)
        self.gumbel = AnnealedGumbel(temperature, temperature_decay, min_temperature)
        self.widths: list[int] | None = None if widths is None else [int(w) for w in widths]
        if self.widths is None:
            self._build_search(init_std)
        else:
            self._build_fixed(init_std)

    def _build_search(self, init_std: float) -> None:
        n, c, d = self.n_fields, len(self.candidates), self.dim
        self.embedding = FieldEmbedding(self.cardinalities, d, init_std=init_std)
        self.logits = nn.Parameter(torch.zeros(n, c))
        cand = torch.tensor(self.candidates, dtype=torch.long)
        self.register_buffer("cand_widths", cand, persistent=False)
        # (C, D): 1 for the columns candidate c reads
        self.register_buffer("cand_rows", (torch.arange(d) < cand.unsqueeze(1)).float(), persistent=False)
        if self.transform == "linear":
            fan_in = cand.view(1, c, 1, 1).expand(n, c, 1, 1)
            self.proj_weight = nn.Parameter(_uniform((n, c, d, d), fan_in) * self.cand_rows.view(1, c, d, 1))
            self.proj_bias = nn.Parameter(torch.zeros(n, c, d))
            self.norm = nn.BatchNorm1d(n * c * d)
            nn.init.constant_(self.norm.weight, init_std)  # normalised outputs start at the table's scale

    def _build_fixed(self, init_std: float) -> None:
        widths = self.widths or []
        if len(widths) != self.n_fields or min(widths) < 1 or max(widths) > self.dim:
            raise ConfigError(f"AutoDim's widths must be {self.n_fields} values in 1..{self.dim}")
        groups = sorted(set(widths))
        self.group_fields: list[list[int]] = [[f for f, w in enumerate(widths) if w == g] for g in groups]
        self.group_widths = groups
        self.tables_ = nn.ModuleList(
            FieldEmbedding([self.cardinalities[f] for f in fields], w, init_std=init_std)
            for w, fields in zip(groups, self.group_fields, strict=True)
        )
        for g, fields in enumerate(self.group_fields):
            self.register_buffer(f"group_{g}", torch.tensor(fields, dtype=torch.long), persistent=False)
        self.register_buffer("order", torch.argsort(torch.tensor(sum(self.group_fields, []))), persistent=False)
        if self.transform == "linear":
            self.proj_weights = nn.ParameterList(
                nn.Parameter(_uniform((len(fields), w, self.dim), w)) for w, fields in zip(groups, self.group_fields, strict=True)
            )
            self.proj_biases = nn.ParameterList(nn.Parameter(torch.zeros(len(fields), self.dim)) for fields in self.group_fields)

    def spec(self) -> dict[str, Any]:
        g = self.gumbel
        out: dict[str, Any] = {
            "kind": self.kind, "candidates": list(self.candidates), "transform": self.transform,
            "temperature": g.temperature, "temperature_decay": g.decay, "min_temperature": g.min_temperature,
            "arch_lr": self.arch_lr,
        }
        if self.widths is not None:
            out["widths"] = list(self.widths)
        return out

    # -- lookup ----------------------------------------------------------------------------
    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        return self._search_lookup(ids) if self.widths is None else self._fixed_lookup(ids)

    def _search_lookup(self, ids: Tensor) -> Tensor:
        emb = self.embedding(ids)  # (B, n, D)
        b, n, d = emb.shape
        weights = self.gumbel(self.logits).to(emb.dtype)  # (n, C)
        c = weights.shape[1]
        if self.transform == "pad":
            # sum_c w_c * pad(e[:d_c]) = e * (sum_c w_c [j < d_c]) column by column
            return emb * (weights @ self.cand_rows.to(emb.dtype)).unsqueeze(0)
        # the weight rows past d_c are zero, so e @ W reads only the first d_c columns
        mapped = torch.einsum("bni,ncio->bnco", emb, self.proj_weight * self.cand_rows.view(1, c, d, 1))
        mapped = self.norm((mapped + self.proj_bias).reshape(b, n * c * d)).view(b, n, c, d)
        return (mapped * weights.view(1, n, c, 1)).sum(dim=2)

    def _fixed_lookup(self, ids: Tensor) -> Tensor:
        pieces = []
        for g, (table, width) in enumerate(zip(self.tables_, self.group_widths, strict=True)):
            e = table(ids[:, getattr(self, f"group_{g}")])  # (B, k, w)
            if self.transform == "linear":
                e = torch.einsum("bkw,kwd->bkd", e, self.proj_weights[g]) + self.proj_biases[g]
            elif width < self.dim:
                e = F.pad(e, (0, self.dim - width))
            pieces.append(e)
        return torch.cat(pieces, dim=1)[:, self.order]

    # -- the search ------------------------------------------------------------------------
    def arch_params(self) -> list[nn.Parameter]:
        return [self.logits] if self.widths is None else []

    @torch.no_grad()
    def candidate_probabilities(self) -> Tensor:
        """``softmax(logits)``, ``(n, C)`` (search only)."""
        return torch.softmax(self.logits.float(), dim=-1).cpu()

    @torch.no_grad()
    def chosen_widths(self) -> list[int]:
        """Per field the candidate of the largest logit (the fixed widths after the search)."""
        if self.widths is not None:
            return list(self.widths)
        return [self.candidates[int(i)] for i in self.logits.argmax(dim=1).tolist()]

    found_options = ("widths",)

    def search_outcome(self, field_names: Sequence[str], epochs: int) -> SearchOutcome:
        """Each field's most probable width (re-trained from a fresh initialisation), with every
        candidate's probability."""
        widths = self.chosen_widths()
        probs = self.candidate_probabilities()
        names = list(field_names)
        metrics = {"candidates": list(self.candidates), "search_widths": dict(zip(names, widths, strict=True))}
        fields = [
            {"field": n, "width": w, **{f"p_{c}": float(probs[f, i]) for i, c in enumerate(self.candidates)}}
            for f, (n, w) in enumerate(zip(names, widths, strict=True))
        ]
        return SearchOutcome({"widths": widths}, metrics, fields, f"autodim: widths {widths}")

    def stats(self) -> dict[str, float]:
        if self.widths is None:
            chosen = self.chosen_widths()
            return {"mean_width": sum(chosen) / len(chosen), "temperature": self.gumbel.current_temperature()}
        return {}

    # -- size ------------------------------------------------------------------------------
    def kept_params(self) -> int:
        return sum(r * w for r, w in zip(self.field_rows(), self.field_widths(), strict=True))

    def stored_params(self) -> int:
        if self.widths is None:
            return sum(p.numel() for p in self.parameters() if p is not self.logits)
        extra = sum(w * self.dim + self.dim for w in self.widths) if self.transform == "linear" else 0
        return self.kept_params() + extra

    def memory_bytes(self) -> dict[str, int]:
        return {"embedding": self.stored_params() * FLOAT_BYTES, "remaps": 0}

    def field_widths(self) -> list[int]:
        return [self.dim] * self.n_fields if self.widths is None else list(self.widths)

