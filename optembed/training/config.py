"""Training hyperparameters as a plain, JSON-friendly dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from optembed.errors import ConfigError

AMP_MODES = ("none", "bf16")
THRESHOLD_OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 1e-4  # Adam's L2 term: rows that do not help shrink towards 0
    alpha: float = 1e-3  # weight of the threshold regulariser sum(exp(-t))
    threshold_lr: float = 1e-2
    threshold_optimizer: str = "adam"  # Adam follows the gradient's sign at a steady pace
    patience: int = 2
    eval_batch_size: int = 32768
    seed: int = 2022
    amp: str = "none"
    compile: bool = False
    check_every: int = 50  # steps between loss finiteness checks (each one syncs the device)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be positive")
        if self.lr <= 0 or self.threshold_lr < 0:
            raise ConfigError("learning rates must be positive")
        if self.weight_decay < 0 or self.alpha < 0:
            raise ConfigError("--weight-decay and --alpha must not be negative")
        if self.patience < 0:
            raise ConfigError("--patience must not be negative")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown --amp '{self.amp}'; choose {' or '.join(AMP_MODES)}")
        if self.threshold_optimizer not in THRESHOLD_OPTIMIZERS:
            raise ConfigError(f"unknown --threshold-optimizer '{self.threshold_optimizer}'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
