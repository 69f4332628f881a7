"""Embedding methods behind one interface: the full/OptEmbed table, compact tables, baselines."""

from optembed.embedders.base import Embedder
from optembed.embedders.compact import CompactEmbedder
from optembed.embedders.table import MODES, TableEmbedder, mode_flags

__all__ = ["MODES", "CompactEmbedder", "Embedder", "TableEmbedder", "mode_flags"]
