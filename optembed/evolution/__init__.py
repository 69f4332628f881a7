"""Evolutionary search of one embedding width per field (OptEmbed's dimension search)."""

from optembed.evolution.config import EvolutionConfig
from optembed.evolution.search import SearchResult, evolve

__all__ = ["EvolutionConfig", "SearchResult", "evolve"]
