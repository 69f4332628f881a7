"""The CTR model base: an embedder (:mod:`optembed.embedders`) plus a backbone head.

The embedder turns ids into ``(B, n, D)`` embeddings - the full table, OptEmbed's masked table,
the compact per-field tables, product-quantized tables or a baseline's embedding - and the
backbone subclass (FNN, DeepFM, DCN, IPNN) defines the head that turns them into logits.

Several tasks (``ModelConfig.tasks = T > 1``) share everything but the backbone's last layer,
which has one output per task (a shared bottom with a one-layer tower per task): the logits are
then ``(B, T)``, the primary task's first; one task gives ``(B,)`` as always. Every backbone sizes
its last layer by :attr:`CTRModel.tasks` and shapes its output with :meth:`CTRModel.task_logits`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from optembed.embedders.base import Embedder, param_bytes
from optembed.embedders.packed import PackedEmbeddings, PackedLayout
from optembed.embedders.table import MODES, TableEmbedder
from optembed.errors import ConfigError
from optembed.layers.embedding import FieldEmbedding
from optembed.layers.packed_linear import PackedLinear
from optembed.models.candidates import CandidateBatch
from optembed.models.config import ModelConfig

__all__ = ["MODES", "CTRModel"]  # MODES: the names --mode takes


class CTRModel(nn.Module, ABC):
    """Embedder -> backbone head -> logits.

    Models are built by :func:`optembed.models.registry.build_model` (over OptEmbed's table in a
    :class:`~optembed.embedders.table.SupernetMode` unless given an embedder). An embedder with
    ``flat_keys`` keeps its state-dict keys at the model's top level (``embedding.weight``,
    ``pruner.threshold``), as model files always had them.
    """

    def __init__(self, cfg: ModelConfig, embedder: Embedder) -> None:
        super().__init__()
        self.cfg = cfg
        if embedder.dim != cfg.embed_dim:
            raise ConfigError(f"The embedder is {embedder.dim} wide, the model expects {cfg.embed_dim}.")
        self.embedder = embedder
        self.register_state_dict_post_hook(_flatten_keys)
        self.register_load_state_dict_pre_hook(_nest_keys)
        self.build_head()

    # -- shape -----------------------------------------------------------------------------
    @property
    def n_fields(self) -> int:
        return self.embedder.n_fields

    @property
    def embed_dim(self) -> int:
        return self.embedder.dim

    @property
    def sample_dims(self) -> bool:
        return self.embedder.sample_dims

    @property
    def tasks(self) -> int:
        """The number of labels the model predicts: its last layer's outputs."""
        return self.cfg.tasks

    # -- one logit per task ----------------------------------------------------------------
    def task_logits(self, out: Tensor) -> Tensor:
        """The last layer's ``(..., T)`` outputs as the logits: ``(...)`` for one task, else unchanged."""
        return out.squeeze(-1) if self.tasks == 1 else out

    def per_task(self, shared: Tensor) -> Tensor:
        """A term shared by every task (``(...)``, e.g. DeepFM's linear and FM terms), shaped to add
        to :meth:`task_logits`' output."""
        return shared if self.tasks == 1 else shared.unsqueeze(-1)

    def candidate_logits(self, out: Tensor, size: int, batch: int) -> Tensor:
        """``size * batch`` rows of last-layer outputs as ``(C, B)`` logits (``(C, B, T)`` for several tasks)."""
        return out.reshape(size, batch) if self.tasks == 1 else out.reshape(size, batch, self.tasks)

    # -- the head --------------------------------------------------------------------------
    @abstractmethod
    def build_head(self) -> None:
        """Create the backbone's modules (called at the end of ``__init__``); per-feature terms
        index ``self.embedder.head_cardinalities``."""

    @abstractmethod
    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        """``(B', n, D)`` embeddings and ``(B', n)`` ids (same batch) -> logits ``(B',)``
        (``(B', T)`` for several tasks)."""

    def head_packed(self, emb: PackedEmbeddings, x: Tensor) -> Tensor:
        """:meth:`head` on packed embeddings (:meth:`Embedder.packed_lookup`); this default pads
        them to ``(B, n, D)`` first, backbones override it to read the packed columns."""
        return self.head(emb.padded(), x)

    def mlp_inputs(self, in_dim: int) -> Tensor | None:
        """The columns of an MLP input of ``in_dim`` (the flattened ``(n, D)`` embeddings, then any
        other features) that can be nonzero, when the embedder zero-pads fixed widths (its
        MLP then reads those alone), in the order of the embedder's packed columns
        (:meth:`Embedder.packed_layout`; field order without one); ``None`` otherwise."""
        widths = self.embedder.zero_padded_widths()
        if widths is None or all(int(w) == self.embed_dim for w in widths):
            return None  # nothing is zero for certain: the full layer
        dim = self.embed_dim
        layout = self.embedder.packed_layout()
        if layout is not None:
            cols = layout.columns()
        else:
            cols = [f * dim + c for f, w in enumerate(widths) for c in range(int(w))]
        return torch.tensor(cols + list(range(len(widths) * dim, in_dim)), dtype=torch.long)

    def for_layout(self, layout: PackedLayout) -> CTRModel:
        """This model reading packed embeddings of ``layout`` (an exported graph's width groups):
        itself for its embedder's own layout, else a copy sharing every parameter and buffer but
        the first layers that read the packed columns, whose weights are laid out for ``layout``
        (a zero column for each column of padding)."""
        if layout == self.embedder.packed_layout():
            return self
        if layout.dim != self.embed_dim or len(layout.widths) != self.n_fields:
            raise ConfigError(f"a packed layout of {len(layout.widths)} fields x {layout.dim} does not fit this model")
        tensors = [*self.parameters(), *self.buffers()]
        out = copy.deepcopy(self, memo={id(t): t for t in tensors})
        cols = layout.columns()
        n_dim = self.n_fields * self.embed_dim
        for name, module in list(out.named_modules()):
            if isinstance(module, PackedLinear):
                extra = [c for c in module.kept.tolist() if c >= n_dim]  # inputs after the embeddings
                parent, _, child = name.rpartition(".")
                setattr(out.get_submodule(parent), child, module.relayout(cols + extra))
        return out

    def additive_id_tables(self) -> list[FieldEmbedding]:
        """The head's per-id tables whose looked-up values are summed into the logit (DeepFM's
        linear weights), indexed by the same ids as the embedder; none by default."""
        return []

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        """Logits ``(C, B)`` (``(C, B, T)``) of every candidate of ``cands`` on ``(B, n, D)`` embeddings.

        This default stacks the masked embeddings and runs :meth:`head` once; backbones
        override it to share work between candidates (see :class:`CandidateBatch`).
        """
        return self.candidate_logits(self.head(cands.stacked(emb), x.repeat(cands.size, 1)), cands.size, x.shape[0])

    def forward(self, x: Tensor, widths: Tensor | None = None) -> Tensor:
        """Logits ``(B,)`` (``(B, T)`` for several tasks); ``widths`` of shape ``(B, n)`` or ``(n,)``
        keep prefix columns."""
        ids = self.embedder.ids(x)
        if widths is None:
            packed = self.embedder.packed_lookup(ids)
            if packed is not None:
                return self.head_packed(packed, ids)
        return self.head(self.embedder.lookup(ids, widths), ids)

    def forward_candidates(self, x: Tensor, candidates: Tensor, block: int | None = None) -> Tensor:
        """Logits ``(C, B)`` of ``C`` candidate width vectors ``(C, n)``, one embedding lookup;
        ``block`` as in :class:`CandidateBatch` (a table embedder only)."""
        table = self.table_embedder()
        ids = table.ids(x)
        return self.head_candidates(table.rows(ids), ids, CandidateBatch(candidates, block))

    # -- sizes -----------------------------------------------------------------------------
    def size_report(self) -> dict[str, Any]:
        """Embedding and network sizes, as the embedder counts them (see :class:`Embedder`)."""
        emb = self.embedder
        own = emb.own_param_ids()
        network = sum(p.numel() for p in self.parameters() if id(p) not in own)
        mem = emb.memory_bytes()
        return {
            "kind": emb.kind,
            "kept_params": emb.kept_params(),
            "embedding_params": emb.stored_params(),
            "embedding_bytes": mem["embedding"],
            "remap_bytes": mem["remaps"],
            "total_params": emb.stored_params() + network,
            "total_rows": emb.num_rows,
            "dim": emb.dim,
            "sparsity": 1.0 - emb.kept_params() / (emb.num_rows * emb.dim),
            "widths": emb.field_widths(),
            "kept": emb.field_rows(),
            "head_bytes": param_bytes(self) - param_bytes(emb),
        }

    # -- OptEmbed's table ------------------------------------------------------------------
    def table_embedder(self) -> TableEmbedder:
        """The embedder as OptEmbed's table (the width search and :func:`optembed.models.apply.apply_search`
        work on it); a clear error for any other kind."""
        if not isinstance(self.embedder, TableEmbedder):
            raise ConfigError(f"This needs OptEmbed's table; the model's embedding is {self.embedder.kind!r}.")
        return self.embedder


def _flatten_keys(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``embedder.X`` -> ``X`` for an embedder with ``flat_keys`` (order kept)."""
    if not getattr(module.embedder, "flat_keys", False):
        return
    inner = prefix + "embedder."
    items = list(state.items())
    state.clear()
    for key, value in items:
        state[prefix + key[len(inner):] if key.startswith(inner) else key] = value
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        for key in [k for k in meta if k.startswith(inner[:-1])]:
            meta[prefix + key[len(inner):]] = meta.pop(key)


def _nest_keys(
    module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
    missing: list[str], unexpected: list[str], errors: list[str],
) -> None:
    """The other way round when loading: the embedder's top-level names go under ``embedder.``."""
    embedder = module.embedder
    if not getattr(embedder, "flat_keys", False):
        return
    names = {n for n, _ in embedder.named_children()}
    names |= {n for n, _ in embedder.named_parameters(recurse=False)}
    names |= {n for n, _ in embedder.named_buffers(recurse=False)}
    for key in list(state):
        if key.startswith(prefix) and key[len(prefix):].split(".")[0] in names:
            state[prefix + "embedder." + key[len(prefix):]] = state.pop(key)
