"""Host batches through the ring of pinned buffers, with a stand-in device whose copies land late.

The stand-in's copy does not read its source when queued: it lands in its destination only
once an event recorded after it is waited for, or when the test drains the queue at the end
(a device slow enough to run every copy last). A buffer written again before its copy was
waited for therefore shows up as a wrong batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from optembed.data import pinned
from optembed.data.pinned import PinnedStaging
from optembed.data.tensors import SplitTensors


class LateDevice:
    def __init__(self) -> None:
        self.queued: list[tuple[Tensor, Tensor]] = []
        self.landed = 0
        self.allocations: list[tuple[int, ...]] = []

    def allocate(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        self.allocations.append(shape)
        return torch.full(shape, -7, dtype=dtype)

    def transfer(self, t: Tensor) -> Tensor:
        dst = torch.empty_like(t)
        self.queued.append((t, dst))
        return dst

    def land(self, upto: int) -> None:
        for src, dst in self.queued[self.landed : upto]:
            dst.copy_(src)
        self.landed = max(self.landed, upto)

    def drain(self) -> None:
        self.land(len(self.queued))

    def event(self) -> Event:
        return Event(self)

    def ring(self, slots: int = 2) -> PinnedStaging:
        return PinnedStaging(self.allocate, self.transfer, self.event, slots)


class Event:
    def __init__(self, device: LateDevice) -> None:
        self.device, self.mark = device, 0

    def record(self) -> None:
        self.mark = len(self.device.queued)

    def synchronize(self) -> None:
        self.device.land(self.mark)


class NoWait(Event):
    def synchronize(self) -> None:  # a ring that does not wait before reusing a buffer
        pass


def _data(rows: int = 50, fields: int = 3, tasks: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 1000, (rows, fields), generator=g, dtype=torch.int32)
    y = torch.rand((rows,) if tasks == 1 else (rows, tasks), generator=g)
    return x, y


def test_gathered_batches_equal_plain_gathers_and_buffers_are_reused() -> None:
    x, y = _data(tasks=2)
    dev = LateDevice()
    ring = dev.ring()
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    idxs = [order[i : i + 8] for i in range(0, 50, 8)]  # 6 full batches and one of 2
    out = [ring.gather(x, y, idx) for idx in idxs]
    dev.drain()
    for (xb, yb), idx in zip(out, idxs, strict=True):
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    assert dev.allocations == [(8, 3), (8, 2), (8, 3), (8, 2)]  # two slots, each an x and a y buffer, never regrown
    assert ring.waits == len(idxs) - 2  # every reuse waited for that buffer's copies


def test_the_late_device_catches_a_buffer_written_while_its_copy_is_in_flight() -> None:
    x, y = _data()
    dev = LateDevice()
    ring = PinnedStaging(dev.allocate, dev.transfer, lambda: NoWait(dev))
    idxs = [torch.arange(i, i + 5) for i in range(0, 30, 5)]
    out = [ring.gather(x, y, idx) for idx in idxs]
    dev.drain()
    assert not all(torch.equal(xb, x[idx]) for (xb, _), idx in zip(out, idxs, strict=True))


def test_a_larger_batch_regrows_its_buffer_after_waiting() -> None:
    x, y = _data()
    dev = LateDevice()
    ring = dev.ring()
    idxs = [torch.tensor([4, 1, 9]), torch.tensor([0, 2]), torch.tensor([7, 8, 3, 5, 6, 10]), torch.tensor([11])]
    out = [ring.gather(x, y, idx) for idx in idxs]
    dev.drain()
    for (xb, yb), idx in zip(out, idxs, strict=True):
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    assert [s[0] for s in dev.allocations] == [3, 3, 2, 2, 6, 6]  # slot 0 grew from 3 to 6 rows; slot 1 kept 2


def test_rows_of_pageable_memory_are_staged_in_order() -> None:
    x, y = _data()
    dev = LateDevice()
    ring = dev.ring()
    out = [ring.rows(x, y, lo, min(lo + 16, 50)) for lo in range(0, 50, 16)]
    dev.drain()
    assert torch.equal(torch.cat([xb for xb, _ in out]), x) and torch.equal(torch.cat([yb for _, yb in out]), y)
    assert ring.waits == 2


def test_no_staging_off_cuda() -> None:
    assert pinned.host_staging(torch.device("cpu")) is None
    with pytest.raises(ValueError):
        PinnedStaging(lambda s, d: torch.empty(s, dtype=d), lambda t: t, lambda: Event(LateDevice()), slots=1)


@pytest.mark.parametrize(("shuffle", "part", "tasks"), [(True, (0, 1), 1), (True, (1, 3), 2), (False, (2, 3), 1)])
def test_split_batches_through_the_ring_equal_todays_batches(
    monkeypatch: pytest.MonkeyPatch, shuffle: bool, part: tuple[int, int], tasks: int
) -> None:
    """``SplitTensors.batches`` of host rows staged through the ring (as for a CUDA device) gives
    the batches, and leaves the generator, as the plain host path does."""
    x, y = _data(rows=103, tasks=tasks)
    split = SplitTensors(x, y)
    cpu = torch.device("cpu")

    def run() -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        gen = torch.Generator().manual_seed(5)
        got = [(xb.clone(), yb.clone()) for xb, yb in split.batches(16, cpu, gen, shuffle=shuffle, part=part)]
        return got, gen.get_state()

    plain, plain_state = run()
    dev = LateDevice()
    staged_ring: list[PinnedStaging] = []

    def fake_staging(device: torch.device) -> PinnedStaging:
        staged_ring.append(dev.ring())
        return staged_ring[-1]

    monkeypatch.setattr(pinned, "host_staging", fake_staging)
    gen = torch.Generator().manual_seed(5)
    staged = list(split.batches(16, cpu, gen, shuffle=shuffle, part=part))
    dev.drain()
    assert len(staged) == len(plain) == 7
    for (xa, ya), (xb, yb) in zip(plain, staged, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(gen.get_state(), plain_state)
    assert len(staged_ring) == 1 and staged_ring[0].waits == len(staged) - 2
