"""Knowledge distillation: a trained teacher's probabilities as soft labels beside the labels.

With weight ``w`` (``--distill``) the data loss of a batch is

    (1 - w) * BCE(z, y) + w * BCE(z, p_teacher)

per task (weighted and summed as :func:`optembed.training.tasks.task_bce` does), where ``z`` are
the student's logits and ``p_teacher = sigmoid(teacher(x))``; its gradient in ``z`` is
``sigmoid(z) - ((1 - w) * y + w * p_teacher)``: the student is fitted to a blend of the labels and
the teacher's belief. The compressed models are re-trained this way from the Original (the
model a user would train anyway): the teacher's probabilities carry what the full table learned
about every id, which a narrower table can fit more easily than the 0/1 labels alone.

The teacher is frozen and evaluated in eval mode (no dropout, BatchNorm's running statistics),
so its targets do not depend on the batch they are computed in.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.training.tasks import task_bce


class Teacher:
    """A frozen trained model whose probabilities are the soft labels of a distillation."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tasks: int = int(getattr(model, "tasks", 1))

    @torch.no_grad()
    def targets(self, xb: Tensor) -> Tensor:
        """The teacher's probabilities of the batch ``xb``: ``(B,)``, or ``(B, T)`` with several tasks."""
        return torch.sigmoid(self.model(xb).float())


def distilled_bce(
    logits: Tensor,
    labels: Tensor,
    soft: Tensor | None,
    weight: float,
    task_weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``(1 - weight) * BCE(logits, labels) + weight * BCE(logits, soft)`` (the plain BCE when
    ``soft`` is None or ``weight`` 0); both terms weighted over the tasks by ``task_weights``."""
    hard = task_bce(logits, labels, task_weights, reduction)
    if soft is None or weight == 0.0:
        return hard
    return (1.0 - weight) * hard + weight * task_bce(logits, soft.to(logits.dtype), task_weights, reduction)
