"""The model configuration: a plain dataclass, JSON friendly, kept apart from the modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from optembed.errors import ConfigError
from optembed.fingerprint import since_default
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
    # labels the model predicts, one logit each (shared-bottom: the backbone's last layer has one
    # output per task); models made before it predicted one
    tasks: int = field(default=1, metadata=since_default(1))

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
        if isinstance(self.tasks, bool) or not isinstance(self.tasks, int) or self.tasks < 1:
            raise ConfigError(f"tasks must be a whole number of at least 1, got {self.tasks!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON; ``tasks`` only when several (one-task model files keep their keys)."""
        d = asdict(self)
        d["mlp_dims"] = list(self.mlp_dims)
        if self.tasks == 1:
            d.pop("tasks")
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
