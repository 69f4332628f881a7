"""The embedding interface: every way of turning per-field ids into ``(B, n, D)`` embeddings.

A CTR model is an :class:`Embedder` plus a backbone head (:class:`optembed.models.base.CTRModel`).
The embedder owns everything about the embedding method - the lookup, its loss regulariser,
which of its parameters need their own optimizer, how many parameters it keeps and how many
bytes it really needs, and its compact export - so the trainer, the stages and ``evaluate``
ask it instead of reaching into attributes.

A lookup is two steps: :meth:`Embedder.ids` maps the original per-field ids to the ids the
embedder and the head's per-feature terms (DeepFM's linear weights) read - the identity, or a
remap to compact rows - and :meth:`Embedder.lookup` reads the embeddings of those ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from optembed.embedders.packed import PackedEmbeddings, PackedLayout
from optembed.errors import ArtifactError, ConfigError
from optembed.layers.embedding import FieldEmbedding

FLOAT_BYTES = 4


@dataclass
class SearchOutcome:
    """What an embedder's own search found: the embedder to re-train is built from its spec's
    options updated with ``options`` (from a fresh initialisation, or, with ``rewind``, from the
    weights the search started from: a lottery ticket), then given ``state`` (e.g. a fixed mask)."""

    options: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    fields: list[dict[str, Any]] | None = None  # one record per field (the search's choice), if any
    message: str = ""
    rewind: bool = False
    state: dict[str, Tensor] = field(default_factory=dict)


class Embedder(nn.Module, ABC):
    """``(B, n)`` per-field ids -> ``(B, n, D)`` embeddings, over fields of ``cardinalities``.

    ``kind`` names the method in files and reports; :meth:`spec` (``kind`` plus options) and
    the cardinalities rebuild it (:func:`optembed.embedders.registry.build_embedder`).
    ``flat_keys`` keeps the embedder's state-dict keys at the model's top level (the layout
    model files had before embedders existed: ``embedding.weight``, ``pruner.threshold``).
    """

    kind: ClassVar[str] = ""
    flat_keys: ClassVar[bool] = False
    sample_dims: bool = False  # the trainer passes sampled widths to the lookup
    arch_lr: float = 3e-4  # learning rate of the architecture weights' optimizer (Adam)

    def __init__(self, cardinalities: Sequence[int], dim: int) -> None:
        super().__init__()
        self.cardinalities: tuple[int, ...] = tuple(int(c) for c in cardinalities)
        self.dim = int(dim)

    # -- shape ---------------------------------------------------------------------------
    @property
    def n_fields(self) -> int:
        return len(self.cardinalities)

    @property
    def num_rows(self) -> int:
        """All ids of all fields: the rows of the dense Original table."""
        return sum(self.cardinalities)

    @property
    def head_cardinalities(self) -> tuple[int, ...]:
        """The id range per field that :meth:`ids` produces (what per-feature head terms index)."""
        return self.cardinalities

    # -- lookup ----------------------------------------------------------------------------
    def ids(self, x: Tensor) -> Tensor:
        """Original ids ``(B, n)`` -> the ids :meth:`lookup` and the head read (identity here)."""
        return x

    @abstractmethod
    def lookup(self, ids: Tensor, widths: Tensor | None = None) -> Tensor:
        """``(B, n)`` ids from :meth:`ids` -> ``(B, n, D)``; ``widths`` only if :attr:`sample_dims`."""

    def forward(self, x: Tensor, widths: Tensor | None = None) -> Tensor:
        return self.lookup(self.ids(x), widths)

    def packed_layout(self) -> PackedLayout | None:
        """The layout of :meth:`packed_lookup`'s embeddings (the exact one: ``sum(D_f)`` columns),
        or ``None`` for an embedder that hands the head the ``(B, n, D)`` block only."""
        return None

    def packed_lookup(self, ids: Tensor) -> PackedEmbeddings | None:
        """``(B, n)`` ids from :meth:`ids` -> the embeddings in :meth:`packed_layout`, without the
        zero padding to ``D`` (``None``: use :meth:`lookup`)."""
        return None

    # -- training --------------------------------------------------------------------------
    def regularizer(self) -> Tensor | None:
        """The loss term the trainer adds (times ``alpha``), or ``None``."""
        return None

    def tables(self) -> list[FieldEmbedding]:
        """The embedding tables (sparse optimizers, frequency-adaptive rates, re-initialisation)."""
        return [m for m in self.modules() if isinstance(m, FieldEmbedding)]

    def zero_padded_widths(self) -> list[int] | None:
        """Per field, the width beyond which its output columns are always zero (its tables are
        that wide, zero-padded to ``D``); ``None`` when no such bound holds (widths that masks or
        sampling may change)."""
        return None

    def table_params(self) -> list[nn.Parameter]:
        """The parameters that are embedding tables (they take ``--embedding-lr`` and
        ``--embedding-l2``): the weights of :meth:`tables`, or an embedder's own storage."""
        return [t.weight for t in self.tables()]

    def table_row_counts(self, id_counts: Tensor) -> Tensor:
        """The training count of every row of the embedding table, from the count of every id
        (``--freq-lr`` scales each row's learning rate by it); only the full table has them."""
        raise ConfigError(f"--freq-lr works on the full table only, not on a {self.kind!r} embedding")

    def threshold_params(self) -> list[nn.Parameter]:
        """Parameters trained by the threshold optimizer (``--threshold-lr``), not the network's."""
        return []

    def arch_params(self) -> list[nn.Parameter]:
        """Architecture weights, trained on validation batches alternately with the network
        (Adam at :attr:`arch_lr`; see :mod:`optembed.training.arch`)."""
        return []

    def excluded_params(self) -> list[nn.Parameter]:
        """Parameters the network optimizer never updates (thresholds and architecture weights
        by default; a frozen threshold too)."""
        return self.threshold_params() + self.arch_params()

    def search_done(self) -> bool:
        """Whether a search embedder reached its goal (the trainer then stops); never by default."""
        return False

    # -- a method's own search (the baselines) ------------------------------------------------
    found_options: ClassVar[tuple[str, ...]] = ()  # spec options only the search sets

    def searching(self) -> str | None:
        """What this embedder searches before it is re-trained, as a line to show (``None``: it is
        trained once). An embedder with :meth:`arch_params` searches them, with architecture steps
        on validation batches."""
        if self.arch_params():
            return f"{self.kind}: searching (network on training batches, architecture on validation batches)"
        return None

    def search_outcome(self, field_names: Sequence[str], epochs: int) -> SearchOutcome:
        """After the search's ``epochs`` of training: what to re-train (only when :meth:`searching`)."""
        raise NotImplementedError(f"the {self.kind} embedding has no search")

    def stats(self) -> dict[str, float]:
        """Numbers to log with every validation (e.g. the current sparsity)."""
        return {}

    # -- OptEmbed's row mask (only the full table has one) -----------------------------------
    def row_mask_record(self) -> dict[str, Any]:
        """The row mask m_e* a supernet saves (``row_mask.pt``): ``mask`` (``BoolTensor(|f|)``),
        ``kept_per_field``, ``rows_per_field``, ``thresholds`` and whether rows are ``pruned``."""
        raise ConfigError(f"a {self.kind!r} embedding has no row mask")

    def row_stats(self) -> dict[str, float]:
        """The row mask's sparsity and the ranges of the row thresholds and norms (a supernet's curves)."""
        raise ConfigError(f"a {self.kind!r} embedding has no row mask")

    def set_row_mask(self, mask: Tensor | None) -> None:
        """Freeze the row mask to ``mask`` (``BoolTensor(|f|)``), or go back to the learned one with ``None``."""
        raise ConfigError(f"a {self.kind!r} embedding has no row mask")

    # -- size ------------------------------------------------------------------------------
    @abstractmethod
    def kept_params(self) -> int:
        """The embedding parameters the method keeps, by its paper's definition: sparsity is
        ``1 - kept_params / (num_rows x dim)``."""

    def stored_params(self) -> int:
        """Float parameters the embedding stores (codebooks and float tables when quantized)."""
        return self.kept_params()

    def memory_bytes(self) -> dict[str, int]:
        """Exact bytes the embedding needs: ``embedding`` (values, codes, sparse indices) and
        ``remaps`` (id remaps)."""
        return {"embedding": self.kept_params() * FLOAT_BYTES, "remaps": 0}

    def field_widths(self) -> list[int]:
        """The width each field's embedding keeps (reports)."""
        return [self.dim] * self.n_fields

    def field_rows(self) -> list[int]:
        """The rows each field keeps (reports)."""
        return list(self.cardinalities)

    def spec(self) -> dict[str, Any]:
        """``kind`` and the options that rebuild this embedder (saved in model files)."""
        return {"kind": self.kind}

    @classmethod
    def from_spec(cls, cardinalities: Sequence[int], dim: int, init_std: float, options: dict[str, Any]) -> Embedder:
        """The embedder of :meth:`spec`'s ``options`` over fields of ``cardinalities``, ``dim`` wide."""
        return cls(cardinalities, dim, init_std=init_std, **options)  # type: ignore[call-arg]

    def serving_lookup(self) -> nn.Module:
        """The lookup an exported graph runs, in operators ``torch.export`` and ONNX take: ids
        ``(B, n)`` -> ``(rows, (B, n, D) embeddings)``, ``rows`` what the head's per-id terms read.
        Only deployable embeddings have one (the compact and the quantized tables)."""
        raise ArtifactError(f"cannot export a model over a {self.kind!r} embedding; export a retrain or compress artifact")

    def export(self) -> tuple[Embedder, list[Tensor] | None]:
        """The compact form to deploy, and per field the original ids of its rows when the
        rows change (then per-feature head terms are sliced the same way); ``None`` when not."""
        return self, None

    def own_param_ids(self) -> set[int]:
        return {id(p) for p in self.parameters()}


def param_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    return total + sum(b.numel() * b.element_size() for b in module.buffers())

