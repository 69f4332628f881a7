"""The unit step with OptEmbed's long-tail straight-through gradient estimator."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def long_tail_grad(x: Tensor) -> Tensor:
    """``H(x) = 2 - 4|x|`` for ``|x| <= 0.4``, ``0.4`` for ``0.4 < |x| <= 1``, else ``0``."""
    a = x.abs()
    near = 2.0 - 4.0 * a
    tail = torch.full_like(x, 0.4)
    return torch.where(a <= 0.4, near, torch.where(a <= 1.0, tail, torch.zeros_like(x)))


class LongTailStep(torch.autograd.Function):
    """Forward: ``S(x) = 1 if x > 0 else 0`` (so ``x == 0`` gives 0: a row whose norm only
    equals its threshold is pruned). Backward: ``grad * H(x)``, see :func:`long_tail_grad`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * long_tail_grad(x)


def long_tail_step(x: Tensor) -> Tensor:
    """Apply :class:`LongTailStep` to ``x`` (differentiable through the long-tail estimator)."""
    out: Tensor = LongTailStep.apply(x)
    return out
