"""Encoded splits as tensors: resident on the device when they fit, sliced into batches there."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from optembed.errors import DataError

DEVICE_MEMORY_FRACTION = 0.5  # use at most this share of free device memory for the data


@dataclass
class SplitTensors:
    """One split: ids ``x`` ``(N, n_fields)`` int32 and labels ``y`` ``(N,)`` float32."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def has_both_classes(self) -> bool:
        """True when the split holds at least one positive and one negative row (AUC is defined)."""
        return len(self) > 0 and bool((self.y > 0.5).any()) and bool((self.y < 0.5).any())

    @property
    def nbytes(self) -> int:
        return self.x.element_size() * self.x.numel() + self.y.element_size() * self.y.numel()

    def slice(self, lo: int, hi: int) -> SplitTensors:
        """Rows ``[lo, hi)`` (views, no copy)."""
        return SplitTensors(self.x[lo:hi], self.y[lo:hi])

    def to(self, device: torch.device) -> SplitTensors:
        """Move to ``device``; on CUDA keep it in pinned host memory if it does not fit."""
        if device.type == "cuda" and not fits_on_device(self.nbytes, device):
            return SplitTensors(self.x.pin_memory(), self.y.pin_memory())
        return SplitTensors(self.x.to(device), self.y.to(device))

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        shuffle: bool = False,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` batches on ``device``; shuffled by a permutation where the data lives.

        ``part=(rank, world_size)``: of every batch, only the rows ``[rank * b // world_size,
        (rank + 1) * b // world_size)`` (data parallelism: the same global batches on every rank,
        each rank its own share)."""
        n = len(self)
        order = None
        if shuffle:
            # The permutation is drawn where the generator lives (the training device), then moved
            # to the data: data kept in pinned host memory is gathered on the host.
            where = generator.device if generator is not None else self.x.device
            order = torch.randperm(n, generator=generator, device=where).to(self.x.device)
        rank, world = part
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            lo, hi = start + rank * b // world, start + (rank + 1) * b // world
            if order is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = self.x[idx], self.y[idx]
            if xb.device != device:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_MEMORY_FRACTION * free


def read_split(path: Path, field_names: Sequence[str], label: str = "label", max_rows: int | None = None) -> SplitTensors:
    """Read one encoded Parquet split into CPU tensors."""
    if not path.is_file():
        raise DataError(f"split file missing: {path}")
    table = pq.read_table(path, columns=[label, *field_names])
    if max_rows is not None:
        table = table.slice(0, max_rows)
    x = np.empty((table.num_rows, len(field_names)), dtype=np.int32)
    for j, name in enumerate(field_names):
        x[:, j] = table.column(name).to_numpy()
    y = table.column(label).to_numpy().astype(np.float32)
    return SplitTensors(torch.from_numpy(x), torch.from_numpy(y))
