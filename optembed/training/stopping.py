"""When a training loop stops: divergence (an error) and patience (early stopping).

Both rules serve every training loop: ``supernet`` and ``retrain`` (:mod:`optembed.training.trainer`)
and the fine-tuning of ``compress`` (:mod:`optembed.quantization.finetune`).

Divergence. The loss of every step is summed on the device; every ``check_every`` steps and at
the end of every epoch (a *check point*, one device sync) the loop stops with a
:class:`~optembed.errors.TrainingError` when

- the mean training loss of the steps since the last check point (the *window*) is NaN or
  infinite, or
- a gradient of the last step, or any weight, is NaN or infinite (a non-finite gradient at any
  step of the window leaves non-finite weights after an Adam, Adagrad or SGD step), or
- the window's mean loss exceeds ``max(10 x L0, 20 x ln 2)`` (13.9 nats), where ``L0`` is the
  loss of the run's first batch, computed before any update (the untrained model; after
  ``--resume``, the resumed model).

A constant prediction of 50% costs ln 2 = 0.693 per sample, and a sane model's training loss
stays near or below it (BCE with logits); a model whose mean loss is 20 times that is wrong with
large confidence on most samples: it has diverged (too high a learning rate gives losses of
1e4 and more within an epoch). The ``10 x L0`` term keeps a model that starts badly calibrated
(a large first loss) from being stopped for a loss it already had.

Patience. The loop stops after ``patience`` epochs in a row without a validation AUC gain
(``patience`` 2: two epochs without a gain, then stop); ``patience`` 0 never stops early. The
state with the best validation AUC is kept either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from optembed.errors import TrainingError

LN2 = math.log(2.0)
GROWTH = 10.0  # a window's mean loss may reach this many times the first batch's loss
FLOOR = 20.0 * LN2  # ... and always this much (nats per sample)


def patience_exhausted(stale_epochs: int, patience: int) -> bool:
    """Whether ``stale_epochs`` epochs in a row without a validation gain end the run."""
    return patience > 0 and stale_epochs >= patience


def loss_limit(first_loss: float) -> float:
    """The largest mean window loss that is not divergence, given the first batch's loss."""
    return max(GROWTH * first_loss, FLOOR)


def _all_finite(tensors: Iterable[Tensor], device: torch.device) -> Tensor:
    flags = [torch.isfinite(t._values() if t.is_sparse else t).all() for t in tensors]
    if not flags:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.stack([f.to(device) for f in flags]).all()


class DivergenceGuard:
    """Sums the step losses on the device and checks them at check points (see the module doc).

    ``lr_option`` and ``lr`` name the learning rate in the error (``--lr 1e+06``). ``reduce`` (data
    parallel runs) sums a tensor over ranks: each rank's step loss is its share of the global
    batch's loss, so the window's and the first batch's losses are summed before they are judged.
    """

    def __init__(
        self, model: nn.Module, device: torch.device, lr_option: str, lr: float,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.reduce = reduce
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = device
        self.lr_option = lr_option
        self.lr = lr
        self.first: Tensor | None = None
        self.first_loss: float | None = None
        self._window = torch.zeros((), device=device)
        self._window_weight = 0
        self._window_steps = 0
        self._epoch = torch.zeros((), device=device)
        self._epoch_weight = 0

    def start_epoch(self) -> None:
        self._window = torch.zeros((), device=self.device)
        self._window_weight = self._window_steps = 0
        self._epoch = torch.zeros((), device=self.device)
        self._epoch_weight = 0

    def add(self, loss: Tensor, weight: int = 1) -> None:
        """One step's (detached, scalar) loss; ``weight``: what it averages over (1 = per step)."""
        loss = loss.detach().float()
        if self.first is None:
            self.first = loss.clone()
        self._window += loss * weight if weight != 1 else loss
        self._window_weight += weight
        self._window_steps += 1

    @property
    def pending(self) -> int:
        """Steps since the last check point."""
        return self._window_steps

    def check(self, epoch: int, step: int) -> None:
        """A check point after ``step`` steps of ``epoch``: one device sync; raises on divergence."""
        if self._window_steps == 0:
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        first = self.first if self.first is not None else torch.zeros((), device=self.device)
        losses = torch.stack([self._window.to(self.device), first.to(self.device)])
        if self.reduce is not None:
            losses = self.reduce(losses)
            self._window = losses[0].clone()
        packed = torch.stack([
            losses[0],
            losses[1],
            _all_finite(grads, self.device).float(),
            _all_finite(self.params, self.device).float(),
        ])
        window_sum, first_loss, grads_ok, weights_ok = packed.tolist()
        if self.first_loss is None:
            self.first_loss = first_loss
        mean = window_sum / self._window_weight
        steps = self._window_steps
        self._epoch += self._window
        self._epoch_weight += self._window_weight
        self._window = torch.zeros((), device=self.device)
        self._window_weight = self._window_steps = 0
        where = f"at epoch {epoch}, step {step}"
        advice = f"nothing was published; try a lower {self.lr_option} (now {self.lr:g})"
        if not math.isfinite(mean):
            raise TrainingError(f"the training loss became {mean} {where}; {advice}")
        if not grads_ok:
            raise TrainingError(f"a gradient became NaN or infinite {where} (mean loss {mean:.4g}); {advice}")
        if not weights_ok:
            raise TrainingError(f"the weights became NaN or infinite {where} (mean loss {mean:.4g}); {advice}")
        limit = loss_limit(self.first_loss)
        if mean > limit:
            raise TrainingError(
                f"training diverged {where}: the mean loss of the last {steps} steps is {mean:.4g}, over the limit "
                f"{limit:.4g} (10 x the first batch's {self.first_loss:.4g}, at least 20 x ln 2); {advice}"
            )

    def epoch_mean(self) -> float:
        """The epoch's mean loss so far (every step checked: call after :meth:`check`)."""
        return float(self._epoch) / max(self._epoch_weight, 1)
