"""The frequency-adaptive rate of :class:`RowLRScale`: equal to scaling every row's change of the
step, while a sparse step reads and writes the batch's rows only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from optembed.training.optimizers import RowLRScale

ROWS, DIM, STEPS = 40, 6, 8


def batches(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        ids = torch.randint(0, ROWS // 2, (10,), generator=g)  # rows 20..39 are never read
        ids[:3] = ids[0]
        out.append((ids, torch.randn(10, DIM, generator=g, dtype=torch.float64)))
    return out


def factories() -> dict[str, tuple[Callable[[nn.Parameter], torch.optim.Optimizer], bool]]:
    return {
        "adam": (lambda w: torch.optim.Adam([w], lr=0.05, weight_decay=0.01), False),
        "sparse-adam": (lambda w: torch.optim.SparseAdam([w], lr=0.05), True),
    }


def grads(w: nn.Parameter, ids: Tensor, upstream: Tensor, sparse: bool) -> None:
    w.grad = None
    (F.embedding(ids, w, sparse=sparse) * upstream).sum().backward()


def reference(make: Callable, sparse: bool, w0: Tensor, scale: Tensor) -> Tensor:
    """Every row's change of the step scaled, the whole table each step (the definition)."""
    w = nn.Parameter(w0.clone())
    opt = make(w)
    for ids, upstream in batches():
        grads(w, ids, upstream, sparse)
        old = w.detach().clone()
        opt.step()
        with torch.no_grad():
            w.copy_(old + scale.unsqueeze(1) * (w - old))
    return w.detach()


@pytest.mark.parametrize("name", ["adam", "sparse-adam"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scaled_steps_equal_the_whole_table_reference(name: str, dtype: torch.dtype) -> None:
    make, sparse = factories()[name]
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(ROWS, DIM, generator=g, dtype=torch.float64).to(dtype)
    scale = (torch.rand(ROWS, generator=g, dtype=torch.float64) * 1.2).to(dtype)  # factors on both sides of 0.5 and 1
    scale[5] = 0.0
    want = reference(make, sparse, w0, scale)
    w = nn.Parameter(w0.clone())
    scaled = RowLRScale(make(w), {w: scale})
    for ids, upstream in batches():
        grads(w, ids, upstream.to(dtype), sparse)
        scaled.step()
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(w.detach(), want.to(dtype), **tol)
    assert torch.equal(w.detach()[5], w0[5])  # a zero factor: the row does not move
    if sparse:
        assert torch.equal(w.detach()[ROWS // 2 :], w0[ROWS // 2 :])  # never read: not written
    assert not torch.equal(w.detach(), w0)


class TableSizedOps(TorchDispatchMode):
    """Names of the ops with an output the size of ``numel``, outside the wrapped optimizer's step."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.paused, self.ops = numel, False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if any(isinstance(t, Tensor) and t.numel() >= self.numel for t in outs):
                self.ops.append(func.overloadpacket.__name__)
        return out


class Paused(torch.optim.Optimizer):
    """An optimizer whose own ops the recorder does not count."""

    def __init__(self, inner: torch.optim.Optimizer, mode: TableSizedOps) -> None:
        self.inner, self.mode = inner, mode

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        self.mode.paused = True
        try:
            return self.inner.step()
        finally:
            self.mode.paused = False


@pytest.mark.parametrize("name", ["adam", "sparse-adam"])
def test_the_scale_touches_only_the_rows_the_step_can_move(name: str) -> None:
    """SparseAdam moves the batch's rows: the scale reads and writes those rows, and its only op
    of the table's size is the in-place ``index_copy_`` of them. Dense Adam moves every row: two
    table-sized passes, the snapshot's copy and one fused ``lerp`` (the snapshot is allocated
    once, at the first step)."""
    make, sparse = factories()[name]
    w = nn.Parameter(torch.randn(ROWS, DIM, dtype=torch.float64))
    scale = torch.rand(ROWS, dtype=torch.float64)
    mode = TableSizedOps(w.numel())
    scaled = RowLRScale(Paused(make(w), mode), {w: scale})
    (ids, upstream), (ids2, upstream2) = batches()[:2]
    grads(w, ids, upstream, sparse)
    scaled.step()
    grads(w, ids2, upstream2, sparse)
    with mode:
        scaled.step()
    assert mode.ops == (["index_copy_"] if sparse else ["copy_", "lerp"]), mode.ops
