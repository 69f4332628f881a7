"""Embedder kinds -> classes: rebuild an embedder from its saved ``spec``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optembed.embedders.base import Embedder
from optembed.errors import ArtifactError
from optembed.models.config import ModelConfig

BASELINE_KINDS = ("qr", "pep", "autofield", "autodim")  # the paper's baselines, trained by their own stage


def _classes() -> dict[str, type[Embedder]]:
    from optembed.embedders.autodim import AutoDimEmbedder
    from optembed.embedders.autofield import AutoFieldEmbedder
    from optembed.embedders.pep import PEPEmbedder
    from optembed.embedders.compact import CompactEmbedder
    from optembed.embedders.qr import QREmbedder
    from optembed.embedders.table import TableEmbedder
    from optembed.quantization.model import QuantizedEmbedder

    kinds: list[type[Embedder]] = [TableEmbedder, CompactEmbedder, QuantizedEmbedder, QREmbedder, PEPEmbedder,
                                   AutoFieldEmbedder, AutoDimEmbedder]
    return {k.kind: k for k in kinds}


def embedder_class(kind: str) -> type[Embedder]:
    """The class of the embedder kind ``kind``."""
    classes = _classes()
    if kind not in classes:
        raise ArtifactError(f"unknown embedder {kind!r}; known: {', '.join(classes)}")
    return classes[kind]


def build_embedder(spec: dict[str, Any], cardinalities: Sequence[int], cfg: ModelConfig) -> Embedder:
    """The embedder of ``spec`` (``kind`` plus options) over fields of ``cardinalities``, ``cfg``'s width."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ArtifactError(f"unknown embedder {spec!r}; known: {', '.join(_classes())}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    return embedder_class(spec["kind"]).from_spec(cardinalities, cfg.embed_dim, cfg.init_std, options)
