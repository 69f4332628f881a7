"""Optimizers of the embedding tables: dense Adam, sparse (lazy) Adam, row-wise Adagrad.

The dense network always trains with Adam (with weight decay) and the row-pruning thresholds
with their own optimizer. The embedding tables - the shared table ``E`` and DeepFM's
per-feature linear weights, both :class:`FieldEmbedding` - can use:

- ``adam``: they join the network's Adam (the original behaviour; dense gradients, two
  moment tensors of the table's size, every row moves at every step through its momentum
  and weight decay);
- ``sparse-adam``: :class:`torch.optim.SparseAdam` on sparse gradients: only the rows of the
  batch are updated ("lazy" Adam). Its moment tensors are still dense (two per table) and it
  has **no weight decay**: ``--weight-decay`` then applies to the dense network only;
- ``rowwise-adagrad``: :class:`RowWiseAdagrad`, Adagrad with one accumulator per row (the mean
  of the squared gradient over the row, as TorchRec/FBGEMM do): one float per row of state.

:class:`RowLRScale` multiplies each row's update by a per-row factor (the frequency-adaptive
learning rate, :mod:`optembed.training.freq_lr`) for any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from optembed.errors import ConfigError


def touched_rows(grad: Tensor) -> tuple[Tensor, Tensor | None]:
    """The distinct rows of a sparse row gradient and their summed gradient rows.

    A sparse gradient of ``F.embedding(sparse=True)`` lists one row per looked-up id, with
    repeats; they are summed per row with ``unique`` + ``index_add_`` (no Python loop). For a
    dense gradient every row counts as touched and the gradient is returned as is.
    """
    if not grad.is_sparse:
        return torch.arange(grad.shape[0], device=grad.device), grad
    indices = grad._indices()[0]
    values = grad._values()
    rows, inverse = torch.unique(indices, return_inverse=True)
    summed = torch.zeros((rows.numel(), *values.shape[1:]), dtype=values.dtype, device=values.device)
    summed.index_add_(0, inverse, values)
    return rows, summed


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row of each 2-D parameter (TorchRec/FBGEMM style).

    For the rows ``r`` touched by the step's (sparse or dense) gradient ``g``::

        g[r]   += weight_decay * w[r]                  (L2, touched rows only)
        acc[r] += mean(g[r] ** 2, dim=1)
        w[r]   -= lr * scale[r] * g[r] / (sqrt(acc[r]) + eps)

    ``scale`` is an optional per-row learning-rate factor (:meth:`set_row_scale`; 1 when
    unset). Untouched rows and their accumulators do not change. State: ``sum``, one float per
    row.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 1e-2,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ConfigError(f"row-wise Adagrad needs a positive learning rate, got {lr}")
        if eps <= 0 or weight_decay < 0 or initial_accumulator_value < 0:
            raise ConfigError("row-wise Adagrad needs eps > 0 and non-negative weight decay and accumulator")
        defaults = {
            "lr": lr,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ConfigError(f"row-wise Adagrad optimizes 2-D tables, got a {p.dim()}-D parameter")
        self._row_scale: dict[nn.Parameter, Tensor] = {}

    def set_row_scale(self, param: nn.Parameter, scale: Tensor | None) -> None:
        """Per-row learning-rate factors ``(rows,)`` of ``param`` (``None`` removes them)."""
        if scale is None:
            self._row_scale.pop(param, None)
            return
        if scale.shape != (param.shape[0],):
            raise ConfigError(f"a row scale needs {param.shape[0]} entries, got {tuple(scale.shape)}")
        self._row_scale[param] = scale.to(param.device, param.dtype)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["sum"] = torch.full(
                        (p.shape[0],), group["initial_accumulator_value"], dtype=p.dtype, device=p.device
                    )
                rows, g = touched_rows(p.grad)
                if rows.numel() == 0:
                    continue
                if wd:
                    g = g + wd * p.index_select(0, rows)
                acc = state["sum"]
                acc.index_add_(0, rows, g.pow(2).mean(dim=1))
                step_size = lr / (acc.index_select(0, rows).sqrt_().add_(eps))
                scale = self._row_scale.get(p)
                if scale is not None:
                    step_size = step_size * scale.index_select(0, rows)
                p.index_add_(0, rows, g * step_size.neg_().unsqueeze(1))
        return loss


class RowLRScale:
    """Scale each row's update of an optimizer's step by a per-row factor.

    Used for the frequency-adaptive learning rate with optimizers that have no per-row rate
    (Adam, SparseAdam). Scaling the *gradient* would not do for Adam: its update
    ``m / (sqrt(v) + eps)`` is invariant to the gradient's scale. Instead the step is taken and
    each row's change is scaled: ``w_v <- w_v + s_v * (step(w)_v - w_v)``, which is exactly a
    learning rate ``lr * s_v`` for that row's Adam update (weight decay included).

    Only the rows the step can change are read and written:

    - a sparse gradient (SparseAdam): the step moves the batch's rows only, so the batch's
      distinct rows are saved before it (``index_select``) and written back scaled after it
      (``index_copy_``) - nothing of the size of the table is computed;
    - a dense gradient (the tables in the network's Adam): the step moves every row (Adam's
      moments and weight decay move rows the batch did not touch), so every row is scaled,
      in two passes over the table: the rows are copied into a snapshot kept from step to step
      (no table-sized allocation per step), and ``lerp(old, new, s)`` writes the scaled rows
      back in one fused pass.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scales: Mapping[nn.Parameter, Tensor]) -> None:
        self.optimizer = optimizer
        self.scales = {p: s.to(p.device, p.dtype) for p, s in scales.items()}
        self._columns = {p: s.unsqueeze(1) for p, s in self.scales.items()}  # (rows, 1): broadcast over the row
        self._snapshots: dict[nn.Parameter, Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        sparse, dense = [], []
        for p in self.scales:
            if p.grad is None:
                continue  # torch optimizers skip parameters without a gradient
            if p.grad.is_sparse:
                rows = torch.unique(p.grad._indices()[0])
                sparse.append((p, rows, p.index_select(0, rows)))
            else:
                snapshot = self._snapshots.get(p)
                if snapshot is None or snapshot.shape != p.shape:
                    snapshot = self._snapshots[p] = torch.empty_like(p)
                dense.append((p, snapshot.copy_(p)))
        self.optimizer.step()
        for p, rows, old in sparse:
            new = p.index_select(0, rows)
            p.index_copy_(0, rows, old + self.scales[p].index_select(0, rows).unsqueeze(1) * (new - old))
        for p, old in dense:
            torch.lerp(old, p, self._columns[p], out=p)


def state_bytes(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter] | None = None) -> int:
    """Bytes of the tensors in ``optimizer``'s state (of ``params`` only, when given)."""
    wanted = None if params is None else {id(p) for p in params}
    total = 0
    for p, state in optimizer.state.items():
        if wanted is not None and id(p) not in wanted:
            continue
        for value in state.values():
            if isinstance(value, Tensor):
                total += value.numel() * value.element_size()
    return total
