"""Architecture weights drawn through an annealed Gumbel-softmax (AutoField, AutoDim).

During the search every training-mode lookup draws one Gumbel-softmax sample of the logits
(one draw per row of the logits, shared by the batch) at temperature
``max(min_temperature, temperature - decay * t)``, ``t`` the number of training-mode lookups so
far; AutoDim's paper anneals by ``5e-5`` per step down to ``0.01``. In evaluation mode, and
without gradients, the weights are the plain softmax of the logits: validation is
deterministic.

The schedule lives in tensors only: ``t`` is the 0-d ``lookups`` buffer (saved with the model),
incremented in place by every training-mode lookup, and the draw's temperature is a 0-d tensor
computed from it inside the lookup. No Python number changes from step to step, so a
``torch.compile``-d model compiles the lookup once instead of once per step (a Python float or
int that changes is a constant of the traced graph, and every new value recompiles it), and no
lookup waits on the device. The temperature is computed in float64 exactly as the Python
formula computes it (one multiplication, one subtraction, one maximum), then rounded to the
logits' dtype, so the temperatures are the same numbers as before. It is derived, not stored:
model files keep the one ``lookups`` entry they always had, and no second buffer can drift from
it (data-parallel runs average floating-point buffers over ranks; the count is an integer).
"""

from __future__ import annotations

import torch
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

    def tau(self) -> Tensor:
        """The temperature of the next training-mode draw, ``max(min_temperature, temperature -
        decay * lookups)``: a 0-d float64 tensor where ``lookups`` lives."""
        return (self.temperature - self.decay * self.lookups.to(torch.float64)).clamp_min(self.min_temperature)

    def count(self) -> int:
        """Training-mode lookups so far (reads the device)."""
        return int(self.lookups)

    def current_temperature(self) -> float:
        """The temperature of the next training-mode draw (reads the device)."""
        return float(self.tau())

    def forward(self, logits: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            tau = self.tau().to(logits.dtype)
            with torch.no_grad():
                self.lookups.add_(1)
            # F.gumbel_softmax's soft sample, with the temperature a tensor: the same draw of the noise
            gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_().log()
            return ((logits + gumbels) / tau).softmax(dim=-1)
        return torch.softmax(logits, dim=-1)
