"""Encoded splits as tensors: resident on the device when they fit, sliced into batches there."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from optembed.data.batches import Batched, RowBlock
from optembed.errors import DataError

DEVICE_MEMORY_FRACTION = 0.5  # use at most this share of free device memory for the data


@dataclass
class SplitTensors(Batched):
    """One split: ids ``x`` ``(N, n_fields)`` int32 and labels ``y`` float32, ``(N,)`` for one
    task or ``(N, T)`` for ``T`` tasks (the primary task's column first; ``tasks`` names them)."""

    x: Tensor
    y: Tensor
    tasks: tuple[str, ...] = ()

    @property
    def primary_y(self) -> Tensor:
        """The primary task's labels ``(N,)``."""
        return self.y if self.y.dim() == 1 else self.y[:, 0]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def has_both_classes(self) -> bool:
        """True when the split holds at least one positive and one negative row (AUC is defined)."""
        y = self.primary_y
        return len(self) > 0 and bool((y > 0.5).any()) and bool((y < 0.5).any())

    @property
    def nbytes(self) -> int:
        return self.x.element_size() * self.x.numel() + self.y.element_size() * self.y.numel()

    def slice(self, lo: int, hi: int) -> SplitTensors:
        """Rows ``[lo, hi)`` (views, no copy)."""
        return SplitTensors(self.x[lo:hi], self.y[lo:hi], self.tasks)

    def to(self, device: torch.device) -> SplitTensors:
        """Move to ``device``; on CUDA keep it in pinned host memory if it does not fit."""
        if device.type == "cuda" and not fits_on_device(self.nbytes, device):
            return SplitTensors(self.x.pin_memory(), self.y.pin_memory(), self.tasks)
        return SplitTensors(self.x.to(device), self.y.to(device), self.tasks)

    def blocks(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None, shuffle: bool
    ) -> Generator[RowBlock, None, None]:
        """The whole split as one run, shuffled by a permutation drawn where the generator lives
        (the training device) and moved to the data: data kept in pinned host memory is gathered
        on the host, each batch into a reusable pinned buffer (:mod:`optembed.data.pinned`)."""
        order = None
        if shuffle:
            where = generator.device if generator is not None else self.x.device
            order = torch.randperm(len(self), generator=generator, device=where).to(self.x.device)
        yield RowBlock(self.x, self.y, len(self), order)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_MEMORY_FRACTION * free


def read_split(
    path: Path,
    field_names: Sequence[str],
    label: str | Sequence[str] = "label",
    max_rows: int | None = None,
    tasks: Sequence[str] = (),
) -> SplitTensors:
    """Read one encoded Parquet split into CPU tensors. ``label``: the label column, or the label
    columns of several tasks (``y`` is then ``(N, T)``; one column in a list still gives ``(N,)``);
    ``tasks``: the tasks' names, kept on the split."""
    if not path.is_file():
        raise DataError(f"split file missing: {path}")
    labels = [label] if isinstance(label, str) else list(label)
    table = pq.read_table(path, columns=[*labels, *field_names])
    if max_rows is not None:
        table = table.slice(0, max_rows)
    x = np.empty((table.num_rows, len(field_names)), dtype=np.int32)
    for j, name in enumerate(field_names):
        x[:, j] = table.column(name).to_numpy()
    if len(labels) == 1:
        y = table.column(labels[0]).to_numpy().astype(np.float32)
    else:
        y = np.empty((table.num_rows, len(labels)), dtype=np.float32)
        for k, name in enumerate(labels):
            y[:, k] = table.column(name).to_numpy()
    return SplitTensors(torch.from_numpy(x), torch.from_numpy(y), tuple(tasks))
