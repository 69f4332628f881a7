"""Architecture weights drawn through an annealed Gumbel-softmax (AutoField, AutoDim).

During the search every training-mode lookup draws one Gumbel-softmax sample of the logits
(one draw per row of the logits, shared by the batch) at temperature
``max(min_temperature, temperature - decay * t)``, ``t`` the number of training-mode lookups so
far (kept in a buffer, so it is saved with the model, and mirrored by a Python counter, so no
lookup waits on the device); AutoDim's paper anneals by ``5e-5`` per step down to ``0.01``. In evaluation mode, and without gradients, the weights are the plain
softmax of the logits: validation is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optembed.errors import ConfigError


class AnnealedGumbel(nn.Module):
    """Softmax weights of ``(rows, choices)`` logits, with annealed Gumbel noise while training."""

    lookups: Tensor

    def __init__(self, temperature: float = 1.0, decay: float = 5e-5, min_temperature: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < min_temperature <= temperature:
            raise ConfigError(f"the Gumbel temperature must satisfy 0 < min_temperature <= temperature, got "
                              f"{min_temperature} and {temperature}")
        if decay < 0:
            raise ConfigError(f"the temperature decay must not be negative, got {decay}")
        self.temperature, self.decay, self.min_temperature = float(temperature), float(decay), float(min_temperature)
        self.register_buffer("lookups", torch.zeros((), dtype=torch.long))
        self._count: int | None = 0

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None  # read from the loaded buffer on next use

    def count(self) -> int:
        if self._count is None:
            self._count = int(self.lookups)
        return self._count

    def current_temperature(self) -> float:
        return max(self.min_temperature, self.temperature - self.decay * self.count())

    def forward(self, logits: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            tau = self.current_temperature()
            self._count = self.count() + 1
            self.lookups.fill_(self._count)
            return F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
        return torch.softmax(logits, dim=-1)
