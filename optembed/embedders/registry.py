"""Embedder kinds -> classes: rebuild an embedder from its saved ``spec``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optembed.embedders.base import Embedder
from optembed.errors import ArtifactError
from optembed.models.config import ModelConfig


def build_embedder(spec: dict[str, Any], cardinalities: Sequence[int], cfg: ModelConfig) -> Embedder:
    """The embedder of ``spec`` (``kind`` plus options) over fields of ``cardinalities``, ``cfg``'s width."""
    from optembed.embedders.autodim import AutoDimEmbedder
    from optembed.embedders.autofield import AutoFieldEmbedder
    from optembed.embedders.pep import PEPEmbedder
    from optembed.embedders.qr import QREmbedder

    kinds: dict[str, Any] = {"qr": QREmbedder, "pep": PEPEmbedder, "autofield": AutoFieldEmbedder, "autodim": AutoDimEmbedder}
    if not isinstance(spec, dict) or spec.get("kind") not in kinds:
        raise ArtifactError(f"unknown embedder {spec!r}; known: {', '.join(kinds)}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    return kinds[spec["kind"]].from_spec(cardinalities, cfg, options)
