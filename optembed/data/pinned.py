"""Host batches to a CUDA device through reusable pinned buffers.

When a split is kept in host memory (it does not fit on the device), every batch is gathered
on the host: ``x[idx]`` of a shuffled epoch gives a fresh tensor in pageable memory, and a
copy from pageable memory to the device is synchronous whatever ``non_blocking`` says (the
driver first copies it into a pinned bounce buffer of its own, while the host waits).
:class:`PinnedStaging` gathers each batch straight into page-locked memory
(``torch.index_select(src, 0, idx, out=buffer[:rows])``) and copies it with
``non_blocking=True``: the host goes on to gather the next batch while the copy and the
step run on the device.

Reuse. A pinned buffer must not be written while a copy out of it may still be in flight.
The buffers form a ring of two, used in turn, each with a CUDA event recorded on the current
stream right after its batch's copies were queued; before a buffer takes a new batch, its
event is waited for. Events rather than a stream or device synchronisation before each reuse:
a ``synchronize`` would wait for all the queued work, the step that reads the batch
included, and so serialise the host's gather with the device's step; with two buffers the
gather of batch ``k + 1`` overlaps the step of batch ``k``, and the wait before batch
``k + 2`` only needs batch ``k``'s copy (and the work queued before it), long done in the
steady state. ``record_stream`` does not apply: it protects device memory of the caching
allocator, not a host buffer that is written again. A buffer grows (after its event) when a
batch holds more rows than it does; a batch of a split that already is in pinned memory,
read in order, is a slice of it and is copied as it is, without staging.

The pieces that need CUDA - allocating pinned memory, the copy, the event - are passed in
(:func:`host_staging` gives the CUDA ones), so the ring's logic is the same with stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

SLOTS = 2  # pinned buffers in the ring


class CopyEvent(Protocol):
    """What the ring needs of a CUDA event."""

    def record(self) -> None: ...

    def synchronize(self) -> None: ...


Allocate = Callable[[tuple[int, ...], torch.dtype], Tensor]
Transfer = Callable[[Tensor], Tensor]


@dataclass
class _Slot:
    buffers: dict[str, Tensor] = field(default_factory=dict)
    event: CopyEvent | None = None
    pending: bool = False  # a copy out of this slot was queued and not waited for


class PinnedStaging:
    """A ring of ``slots`` host buffers (pinned for CUDA) that batches pass through on their way
    to the device; see the module doc for when a buffer is reused."""

    def __init__(self, allocate: Allocate, transfer: Transfer, new_event: Callable[[], CopyEvent],
                 slots: int = SLOTS) -> None:
        if slots < 2:
            raise ValueError("the staging ring needs at least two buffers to overlap the copies")
        self.allocate, self.transfer, self.new_event = allocate, transfer, new_event
        self.slots = [_Slot() for _ in range(slots)]
        self.turn = 0
        self.waits = 0  # events waited for before a reuse (tests and benchmarks read it)

    def _take(self) -> _Slot:
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        if slot.pending and slot.event is not None:
            slot.event.synchronize()  # its last copies have left the buffer
            self.waits += 1
        slot.pending = False
        return slot

    def _view(self, slot: _Slot, name: str, like: Tensor, rows: int) -> Tensor:
        """The first ``rows`` rows of the slot's buffer ``name`` shaped and typed as ``like``'s rows."""
        buf = slot.buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1:] != like.shape[1:] or buf.dtype != like.dtype:
            buf = self.allocate((rows, *like.shape[1:]), like.dtype)
            slot.buffers[name] = buf
        return buf[:rows]

    def _send(self, slot: _Slot, staged: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        out = (self.transfer(staged[0]), self.transfer(staged[1]))
        if slot.event is None:
            slot.event = self.new_event()
        slot.event.record()
        slot.pending = True
        return out

    def gather(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``(x[idx], y[idx])`` on the device, gathered into the next pinned buffer."""
        slot = self._take()
        rows = int(idx.shape[0])
        xv, yv = self._view(slot, "x", x, rows), self._view(slot, "y", y, rows)
        torch.index_select(x, 0, idx, out=xv)
        torch.index_select(y, 0, idx, out=yv)
        return self._send(slot, (xv, yv))

    def rows(self, x: Tensor, y: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """``(x[lo:hi], y[lo:hi])`` on the device: copied as they are from pinned memory, else
        through the next pinned buffer."""
        xs, ys = x[lo:hi], y[lo:hi]
        if xs.is_pinned() and ys.is_pinned():
            return self.transfer(xs), self.transfer(ys)
        slot = self._take()
        xv, yv = self._view(slot, "x", x, hi - lo), self._view(slot, "y", y, hi - lo)
        xv.copy_(xs)
        yv.copy_(ys)
        return self._send(slot, (xv, yv))


def host_staging(device: torch.device) -> PinnedStaging | None:
    """The pinned ring for batches of host data bound for ``device``; ``None`` unless ``device``
    is CUDA (pinning needs CUDA, and CPU batches are used where they are)."""
    if device.type != "cuda":
        return None

    def allocate(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def transfer(t: Tensor) -> Tensor:
        return t.to(device, non_blocking=True)

    return PinnedStaging(allocate, transfer, lambda: _StreamEvent(device))


class _StreamEvent:
    """A CUDA event recorded on ``device``'s current stream, the stream the copies are queued on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.event = torch.cuda.Event()

    def record(self) -> None:
        self.event.record(torch.cuda.current_stream(self.device))

    def synchronize(self) -> None:
        self.event.synchronize()
