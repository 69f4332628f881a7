"""Model names -> backbone classes, and the one function that builds a model."""

from __future__ import annotations

from collections.abc import Sequence

from optembed.embedders.base import Embedder
from optembed.errors import ConfigError
from optembed.embedders.table import SupernetMode, TableEmbedder
from optembed.models.base import CTRModel
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.dcn import DCN
from optembed.models.deepfm import DeepFM
from optembed.models.fnn import FNN
from optembed.models.ipnn import IPNN

BACKBONES: dict[str, type[CTRModel]] = {"fnn": FNN, "deepfm": DeepFM, "dcn": DCN, "ipnn": IPNN}


def build_model(
    cardinalities: Sequence[int], cfg: ModelConfig, mode: SupernetMode | str = "optembed", embedder: Embedder | None = None
) -> CTRModel:
    """Build the backbone ``cfg.name`` over fields of the given cardinalities: over ``embedder``
    when given, else over OptEmbed's table in ``mode`` (a name is parsed: :meth:`SupernetMode.parse`)."""
    if cfg.name not in BACKBONES:
        raise ConfigError(f"Unknown model {cfg.name!r}; choose one of {', '.join(MODEL_NAMES)}.")
    if embedder is None:
        table_mode = mode if isinstance(mode, SupernetMode) else SupernetMode.parse(mode)
        embedder = TableEmbedder.of_mode(cardinalities, cfg.embed_dim, cfg.init_std, cfg.norm, table_mode)
    return BACKBONES[cfg.name](cfg, embedder)
