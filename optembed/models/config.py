"""The model configuration: a plain dataclass, JSON friendly, kept apart from the modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from optembed.errors import ConfigError
from optembed.validation import check_number, check_positive

MODEL_NAMES = ("fnn", "deepfm", "dcn", "ipnn")
NORMS = ("l1", "l2")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a backbone (together with the field cardinalities)."""

    name: str
    embed_dim: int = 16
    mlp_dims: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.2
    batch_norm: bool = True
    cross_layers: int = 6
    norm: str = "l1"
    init_std: float = 0.01

    def __post_init__(self) -> None:
        self.mlp_dims = tuple(int(d) for d in self.mlp_dims)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for an unknown model or norm, or bad sizes."""
        if self.name not in MODEL_NAMES:
            raise ConfigError(f"Unknown model {self.name!r}; choose one of {', '.join(MODEL_NAMES)}.")
        if self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be at least 1, got {self.embed_dim}.")
        if any(d < 1 for d in self.mlp_dims):
            raise ConfigError(f"Every MLP layer needs at least 1 unit, got {list(self.mlp_dims)}.")
        check_number("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.cross_layers < 0 or (self.name == "dcn" and self.cross_layers < 1):
            raise ConfigError(f"DCN needs at least one cross layer, got {self.cross_layers}.")
        if self.norm not in NORMS:
            raise ConfigError(f"Unknown row norm {self.norm!r}; choose one of {', '.join(NORMS)}.")
        check_positive("init_std", self.init_std)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mlp_dims"] = list(self.mlp_dims)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown model configuration keys: {', '.join(unknown)}.")
        if "name" not in data:
            raise ConfigError("The model configuration has no 'name'.")
        return cls(**data)
