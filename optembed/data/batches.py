"""Cutting a split's rows into batches: the one ``batches`` of the in-memory and the streamed split."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from optembed.data import pinned


class RowBlock(NamedTuple):
    """A run of rows cut into batches in turn: the first ``rows`` rows of ``x``/``y``, read
    through ``order`` (row indices) when it is given."""

    x: Tensor
    y: Tensor
    rows: int
    order: Tensor | None = None


class Batched(ABC):
    """A split that yields ``(x, y)`` batches; its :meth:`blocks` say which runs of rows."""

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        shuffle: bool = False,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` batches on ``device``, shuffled by ``generator`` when ``shuffle``.

        ``part=(rank, world_size)``: of every batch, only the rows ``[rank * b // world_size,
        (rank + 1) * b // world_size)`` (data parallelism: the same global batches on every rank,
        each rank its own share).

        Rows kept on the host for a CUDA ``device`` reach it through a ring of pinned buffers
        (:mod:`optembed.data.pinned`), so the copies are asynchronous; on the CPU, and for rows
        already on the device, the batches are plain slices and gathers."""
        rank, world = part
        staging = pinned.host_staging(device)
        blocks = self.blocks(batch_size, device, generator, shuffle)
        try:
            for block in blocks:
                staged = staging if staging is not None and block.x.device.type == "cpu" else None
                for start in range(0, block.rows, batch_size):
                    b = min(batch_size, block.rows - start)
                    lo, hi = start + rank * b // world, start + (rank + 1) * b // world
                    if staged is not None:
                        if block.order is None:
                            yield staged.rows(block.x, block.y, lo, hi)
                        else:
                            yield staged.gather(block.x, block.y, block.order[lo:hi])
                        continue
                    if block.order is None:
                        xb, yb = block.x[lo:hi], block.y[lo:hi]
                    else:
                        idx = block.order[lo:hi]
                        xb, yb = block.x[idx], block.y[idx]
                    if xb.device != device:
                        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    yield xb, yb
        finally:
            blocks.close()

    @abstractmethod
    def blocks(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None, shuffle: bool
    ) -> Generator[RowBlock, None, None]:
        """The epoch's runs of rows, in order; every run but the last holds whole batches. A run
        is cut into batches before the next one is asked for."""
