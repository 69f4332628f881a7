"""Streaming a Parquet split in row-group chunks: training and evaluation past memory.

:class:`StreamSplit` has the interface of :class:`~optembed.data.tensors.SplitTensors` that
training and evaluation use (``len``, ``y``, ``slice``, ``batches``) but keeps only a few chunks
in memory. A *chunk* is a run of whole row groups holding at least ``buffer_rows`` rows (the
shuffle buffer); a background thread reads the next chunks (pyarrow, column by column, no
per-row Python) into reusable buffers - pinned host memory when the device is CUDA - while the
current one is consumed.

Shuffled epochs. The row groups are put in a random order (one ``randperm`` of the groups), cut
into chunks, and each chunk's rows - with the rows the previous chunk left over, fewer than a
batch - are permuted (one ``randperm`` per chunk) and cut into batches: every batch but the
epoch's last is full, as in memory. When one chunk holds the whole split the groups keep their
file order, so the epoch draws exactly one ``randperm`` of all rows from the generator - the
in-memory path's draw: same batches, same order, same generator state afterwards.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from optembed.data.batches import Batched, RowBlock
from optembed.errors import DataError

DEFAULT_BUFFER_ROWS = 1 << 20  # shuffle buffer: rows per chunk (~170 MB at 40 int32 fields)
PREFETCH = 2  # chunks read ahead of the one being consumed


@dataclass
class StreamSplit(Batched):
    """One encoded Parquet split, read in chunks of row groups; optionally only rows ``[lo, hi)``.
    ``extra_labels``: the label columns of the tasks after the primary one (``y`` is then
    ``(N, T)``), ``tasks`` their names, as :class:`~optembed.data.tensors.SplitTensors` has them."""

    path: Path
    field_names: Sequence[str]
    label: str = "label"
    buffer_rows: int = DEFAULT_BUFFER_ROWS
    lo: int = 0
    hi: int | None = None
    extra_labels: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    _group_rows: list[int] = field(default_factory=list, repr=False)
    _labels: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.path.is_file():
            raise DataError(f"split file missing: {self.path}")
        if self.buffer_rows < 1:
            raise DataError(f"the shuffle buffer must hold at least one row, got {self.buffer_rows}")
        if not self._group_rows:
            try:
                parquet = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"cannot read split {self.path} (truncated or not Parquet: {str(exc).splitlines()[0][:200]})") from None
            meta = parquet.metadata
            self._group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            names = set(parquet.schema_arrow.names)
            missing = [c for c in (*self.label_columns, *self.field_names) if c not in names]
            if missing:
                raise DataError(f"split {self.path} has no column {', '.join(missing[:5])}")
        total = sum(self._group_rows)
        self.hi = total if self.hi is None else self.hi
        if not 0 <= self.lo <= self.hi <= total:
            raise DataError(f"rows {self.lo}..{self.hi} are outside split {self.path} ({total} rows)")

    def __len__(self) -> int:
        return int(self.hi) - self.lo  # type: ignore[operator]

    @property
    def label_columns(self) -> list[str]:
        return [self.label, *self.extra_labels]

    @property
    def nbytes(self) -> int:
        """Bytes the split would take in memory (int32 ids, float32 labels)."""
        return len(self) * 4 * (len(self.field_names) + len(self.label_columns))

    @property
    def y(self) -> Tensor:
        """The labels (float32, the label columns read once): evaluation pairs them with the predictions."""
        if self._labels is None:
            table = pq.read_table(self.path, columns=self.label_columns).slice(self.lo, len(self))
            if not self.extra_labels:
                self._labels = torch.from_numpy(table.column(self.label).to_numpy().astype(np.float32))
            else:
                self._labels = torch.from_numpy(
                    np.stack([table.column(c).to_numpy().astype(np.float32) for c in self.label_columns], axis=1)
                )
        return self._labels

    @property
    def primary_y(self) -> Tensor:
        """The primary task's labels ``(N,)``."""
        y = self.y
        return y if y.dim() == 1 else y[:, 0]

    def has_both_classes(self) -> bool:
        y = self.primary_y
        return len(self) > 0 and bool((y > 0.5).any()) and bool((y < 0.5).any())

    def slice(self, lo: int, hi: int) -> StreamSplit:
        return StreamSplit(
            self.path, self.field_names, self.label, self.buffer_rows, self.lo + lo, self.lo + hi,
            self.extra_labels, self.tasks, self._group_rows,
        )

    # -- the chunk plan ---------------------------------------------------------------------
    def _pieces(self) -> list[tuple[int, int, int]]:
        """``(group, first row in group, rows)`` of every row group overlapping ``[lo, hi)``."""
        out, start = [], 0
        for g, rows in enumerate(self._group_rows):
            a, b = max(self.lo, start), min(int(self.hi), start + rows)  # type: ignore[arg-type]
            if a < b:
                out.append((g, a - start, b - a))
            start += rows
        return out

    def _chunks(self, pieces: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
        chunks: list[list[tuple[int, int, int]]] = [[]]
        held = 0
        for piece in pieces:
            if held >= self.buffer_rows:
                chunks.append([])
                held = 0
            chunks[-1].append(piece)
            held += piece[2]
        return [c for c in chunks if c]

    def plan(self, generator: torch.Generator | None, shuffle: bool) -> list[list[tuple[int, int, int]]]:
        """The epoch's chunks, in order (draws the row-group order from ``generator`` when the
        split needs more than one chunk)."""
        pieces = self._pieces()
        if shuffle and len(self) > self.buffer_rows and len(pieces) > 1:
            where = generator.device if generator is not None else "cpu"
            order = torch.randperm(len(pieces), generator=generator, device=where).tolist()
            pieces = [pieces[i] for i in order]
        return self._chunks(pieces)

    # -- batches ----------------------------------------------------------------------------
    def blocks(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None, shuffle: bool
    ) -> Generator[RowBlock, None, None]:
        """One run per chunk (see the module doc): the chunk's rows on ``device`` after the rows
        the previous chunk left over, permuted when ``shuffle``, as many as fill whole batches
        (all of them in the epoch's last chunk); the rest is carried over."""
        chunks = self.plan(generator, shuffle)
        if not chunks:
            return
        reader = _Prefetcher(self.path, [*self.label_columns, *self.field_names], chunks, device.type == "cuda",
                             len(self.label_columns))
        carry_x: Tensor | None = None
        carry_y: Tensor | None = None
        try:
            for k in range(len(chunks)):
                slot, rows = reader.next()
                x, y = slot.x[:rows], slot.y[:rows]
                if x.device != device:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if device.type == "cuda":
                        torch.cuda.current_stream(device).synchronize()  # the host buffer may be refilled now
                if carry_x is not None:
                    x, y = torch.cat([carry_x, x]), torch.cat([carry_y, y])  # type: ignore[list-item]
                if shuffle:
                    where = generator.device if generator is not None else x.device
                    perm = torch.randperm(x.shape[0], generator=generator, device=where).to(x.device)
                    x, y = x[perm], y[perm]
                last = k == len(chunks) - 1
                m = x.shape[0]
                full = m if last else m - m % batch_size
                yield RowBlock(x, y, full)
                carry_x, carry_y = (x[full:].clone(), y[full:].clone()) if full < m else (None, None)
                reader.release(slot)
        finally:
            reader.close()


@dataclass
class _Slot:
    x: Tensor
    y: Tensor


class _Prefetcher:
    """Reads the chunks on a background thread, at most ``PREFETCH`` ahead of the consumer: into a
    pool of reusable pinned buffers for CUDA (each copied to the device before it is reused), into
    fresh host tensors otherwise (the batches are views of them and stay valid)."""

    def __init__(
        self, path: Path, columns: list[str], chunks: list[list[tuple[int, int, int]]], pin: bool, n_labels: int = 1
    ) -> None:
        """``columns``: the ``n_labels`` label columns, then the fields."""
        self.path = path
        self.columns = columns
        self.chunks = chunks
        longest = max(sum(p[2] for p in c) for c in chunks)
        self.n_labels = n_labels
        self.n_fields = len(columns) - n_labels
        self.pin = pin
        self.free: queue.Queue[_Slot | None] = queue.Queue()
        for _ in range(min(PREFETCH + 1, len(chunks))):
            if pin:
                x = torch.empty((longest, self.n_fields), dtype=torch.int32).pin_memory()
                self.free.put(_Slot(x, torch.empty(self._label_shape(longest), dtype=torch.float32).pin_memory()))
            else:
                self.free.put(None)  # a token: the chunk gets its own tensors
        self.ready: queue.Queue[tuple[_Slot, int] | BaseException] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="optembed-stream", daemon=True)
        self.thread.start()

    def _label_shape(self, rows: int) -> tuple[int, ...]:
        return (rows,) if self.n_labels == 1 else (rows, self.n_labels)

    def _run(self) -> None:
        try:
            pf = pq.ParquetFile(self.path)
            for chunk in self.chunks:
                token = self._take()
                if token is False:
                    return
                rows_here = sum(p[2] for p in chunk)
                slot = token or _Slot(
                    torch.empty((rows_here, self.n_fields), dtype=torch.int32), torch.empty(self._label_shape(rows_here))
                )
                xs, ys = slot.x.numpy(), slot.y.numpy()
                at = 0
                for group, first, rows in chunk:
                    table = pf.read_row_group(group, columns=self.columns)
                    if first or rows != table.num_rows:
                        table = table.slice(first, rows)
                    if self.n_labels == 1:
                        ys[at : at + rows] = table.column(self.columns[0]).to_numpy()
                    else:
                        for k in range(self.n_labels):
                            ys[at : at + rows, k] = table.column(self.columns[k]).to_numpy()
                    for j, name in enumerate(self.columns[self.n_labels :]):
                        xs[at : at + rows, j] = table.column(name).to_numpy()
                    at += rows
                self.ready.put((slot, at))
        except (pa.ArrowException, OSError) as exc:  # a damaged file: one error naming it
            self.ready.put(DataError(f"cannot read split {self.path} (damaged: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})"))
        except BaseException as exc:  # handed to the consumer, raised there
            self.ready.put(exc)

    def _take(self) -> _Slot | None | bool:
        """A free pinned slot (or ``None``: allocate one); ``False`` once the consumer closed."""
        while not self.stop.is_set():
            try:
                return self.free.get(timeout=0.1)
            except queue.Empty:
                continue
        return False

    def next(self) -> tuple[_Slot, int]:
        item = self.ready.get()
        if isinstance(item, BaseException):
            raise DataError(f"reading {self.path} failed: {item}") from item
        return item

    def release(self, slot: _Slot) -> None:
        self.free.put(slot if self.pin else None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
