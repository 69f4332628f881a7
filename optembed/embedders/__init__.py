"""Embedding methods behind one interface: the full/OptEmbed table, compact tables, baselines."""

from optembed.embedders.base import Embedder
from optembed.embedders.compact import CompactEmbedder
from optembed.embedders.table import MODES, SupernetMode, TableEmbedder

__all__ = ["MODES", "CompactEmbedder", "Embedder", "SupernetMode", "TableEmbedder"]
