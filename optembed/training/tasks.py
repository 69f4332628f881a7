"""The loss of several tasks: the weighted sum of each task's binary cross-entropy.

One task keeps the plain BCE of ``(B,)`` logits. With ``T`` tasks the logits and labels are
``(B, T)``; task ``t``'s BCE is averaged (or summed) over the batch's rows and the loss is
``sum_t w_t * BCE_t`` (``task_weights``; all ones when none are given).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from optembed.errors import ConfigError


def resolve_task_weights(weights: Sequence[float], tasks: int) -> tuple[float, ...]:
    """The weight of every task: ``weights`` (one per task), or ones when empty; a
    :class:`ConfigError` for a count that does not match the model's tasks."""
    if not weights:
        return (1.0,) * tasks
    if len(weights) != tasks:
        raise ConfigError(f"--task-weights gives {len(weights)} weights for a model of {tasks} task{'s' if tasks > 1 else ''}")
    return tuple(float(w) for w in weights)


def task_bce(logits: Tensor, labels: Tensor, weights: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """The batch's BCE: plain for ``(B,)`` logits (times ``weights[0]`` when given); for ``(B, T)``
    the per-task BCE (``reduction`` over the rows: ``mean`` or ``sum``) weighted by ``weights`` ``(T,)``
    and summed (equal weights of one when ``weights`` is None)."""
    if logits.shape != labels.shape:
        raise ConfigError(f"the model predicts {tuple(logits.shape[1:]) or 'one'} task(s) but the labels are {tuple(labels.shape[1:]) or 'one'}")
    if logits.dim() == 1:
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction=reduction)
        return loss if weights is None else loss * weights[0]
    per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_task = per_task.sum(0) if reduction == "sum" else per_task.mean(0)
    return per_task.sum() if weights is None else (per_task * weights.to(per_task.dtype)).sum()


def task_names(names: Sequence[str], tasks: int) -> list[str]:
    """``names`` when there is one per task, else ``task0``, ``task1``, ..."""
    return list(names) if len(names) == tasks else [f"task{k}" for k in range(tasks)]


def split_columns(y: Tensor) -> list[Tensor]:
    """The label (or logit) columns of ``(N,)`` or ``(N, T)``, one per task."""
    return [y] if y.dim() == 1 else list(torch.unbind(y, dim=1))
