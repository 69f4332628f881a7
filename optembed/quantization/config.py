"""Hyperparameters of quantizer training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from optembed.errors import ConfigError

POPULARITY = ("log", "linear", "none")
MAX_CODEBOOK = 65536  # codes are stored as uint8 (K <= 256) or uint16


@dataclass(frozen=True)
class QuantizerConfig:
    """``groups`` sub-vectors per row, ``codebook`` entries per group.

    Loss = popularity-weighted reconstruction
    - ``balance_weight`` * normalised entropy of the batch-mean soft code assignment
    + ``contrastive_weight`` * InfoNCE(row -> its own quantized vector, temperature ``temperature``).
    """

    groups: int = 4
    codebook: int = 256
    popularity: str = "log"
    balance_weight: float = 0.1
    contrastive_weight: float = 0.1
    temperature: float = 0.1
    soft_temperature: float = 1.0  # of the soft assignment used by the balance term
    steps: int = 300
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        if self.groups < 1:
            raise ConfigError(f"--groups must be at least 1, got {self.groups}")
        if not 2 <= self.codebook <= MAX_CODEBOOK:
            raise ConfigError(
                f"--codebook must be in 2..{MAX_CODEBOOK} so a code fits in uint16, got {self.codebook}"
            )
        if self.popularity not in POPULARITY:
            raise ConfigError(f"unknown --popularity '{self.popularity}'; choose {', '.join(POPULARITY)}")
        if self.balance_weight < 0 or self.contrastive_weight < 0:
            raise ConfigError("--balance-weight and --contrastive-weight must not be negative")
        if self.temperature <= 0 or self.soft_temperature <= 0:
            raise ConfigError("temperatures must be positive")
        if self.steps < 0 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("steps must be >= 0, batch size >= 2 and the learning rate positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
