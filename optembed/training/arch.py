"""The architecture step of a differentiable search (first-order DARTS): AutoField, AutoDim.

After every optimizer step of the network on a training batch, the embedder's architecture
weights (:meth:`optembed.embedders.Embedder.arch_params`) take one Adam step (at the embedder's
``arch_lr``, no weight decay) on the loss of a validation batch. Validation batches are drawn
in a shuffled, endless cycle by a generator of their own, so the training batches are the same
as without the search. Only the architecture weights' gradients are computed into their
``.grad``; the network's weights are left untouched, and so are the running statistics of its
batch normalisations (the validation batch is normalised by its own statistics, as in
training, but does not move the statistics used for evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from optembed.data.tensors import SplitTensors

SEED_OFFSET = 7919  # the validation batches' generator: the training seed plus this


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Batch normalisations use batch statistics but leave their running statistics as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class ArchStep:
    """One Adam step of ``params`` per call, on the next validation batch through ``model``."""

    def __init__(
        self, model: nn.Module, params: list[nn.Parameter], val: SplitTensors, batch_size: int, device: torch.device,
        lr: float, seed: int,
    ) -> None:
        self.model = model
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.val, self.batch_size, self.device = val, batch_size, device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed + SEED_OFFSET)
        self._batches = self._cycle()

    def _cycle(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield from self.val.batches(self.batch_size, self.device, self.generator, shuffle=True)

    def step(self, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        xb, yb = next(self._batches)
        with frozen_norm_statistics(self.model):
            loss = loss_fn(xb, yb)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g
        self.optimizer.step()
