"""Streaming a Parquet split (optembed.data.stream): with a buffer holding the whole split the
batches, their order and a training run equal the in-memory path's; with a small buffer every
row still comes once per epoch, batches are full, and evaluation reads rows in file order."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import distributed_worker as dw
from optembed.data.stream import StreamSplit
from optembed.data.tensors import SplitTensors, read_split
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.trainer import Trainer

FIELDS = ["f0", "f1", "f2", "f3"]


def _write(path: Path, split: SplitTensors, group_rows: int) -> Path:
    cols = {"label": pa.array(split.y.numpy().astype("int8"))}
    cols.update({name: pa.array(split.x[:, j].numpy()) for j, name in enumerate(FIELDS)})
    pq.write_table(pa.table(cols), path, row_group_size=group_rows)
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    return path


@pytest.fixture()
def data(tmp_path: Path) -> tuple[SplitTensors, Path]:
    split = dw.planted(1000, 5)
    return split, _write(tmp_path / "train.parquet", split, group_rows=96)


def _batches(split: object, seed: int, epochs: int = 2, part: tuple[int, int] = (0, 1)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        out += list(split.batches(64, torch.device("cpu"), gen, shuffle=True, part=part))  # type: ignore[attr-defined]
    return out


def test_a_buffer_holding_the_split_gives_the_in_memory_batches(data: tuple[SplitTensors, Path]) -> None:
    split, path = data
    memory = read_split(path, FIELDS)
    assert torch.equal(memory.x, split.x)
    for part in ((0, 1), (1, 2)):
        want = _batches(memory, seed=11, part=part)
        got = _batches(StreamSplit(path, FIELDS, buffer_rows=len(split)), seed=11, part=part)
        assert len(got) == len(want)
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_a_small_buffer_still_gives_every_row_once_per_epoch_in_full_batches(data: tuple[SplitTensors, Path]) -> None:
    split, path = data
    stream = StreamSplit(path, FIELDS, buffer_rows=200)
    gen = torch.Generator().manual_seed(3)
    keys = split.x[:, 0].long() * 10**6 + split.x[:, 1].long() * 10**3 + split.x[:, 2].long()
    orders = []
    for _ in range(2):
        batches = list(stream.batches(64, torch.device("cpu"), gen, shuffle=True))
        assert [b[0].shape[0] for b in batches] == [64] * (len(split) // 64) + [len(split) % 64]
        x = torch.cat([b[0] for b in batches])
        got = x[:, 0].long() * 10**6 + x[:, 1].long() * 10**3 + x[:, 2].long()
        assert torch.equal(torch.sort(got).values, torch.sort(keys).values)  # a permutation of the rows
        orders.append(got)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], keys)


def test_evaluation_reads_rows_in_file_order_across_group_boundaries(data: tuple[SplitTensors, Path]) -> None:
    split, path = data
    part = StreamSplit(path, FIELDS, buffer_rows=150).slice(130, 777)
    assert len(part) == 647
    x = torch.cat([b[0] for b in part.batches(100, torch.device("cpu"))])
    assert torch.equal(x, split.x[130:777]) and torch.equal(part.y, split.y[130:777])
    assert part.has_both_classes()


def _fit(train: object, val: SplitTensors) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    model = build_model(dw.CARDS, dw.MODEL, "optembed")
    cfg = TrainConfig(epochs=2, batch_size=64, patience=0, seed=5)
    Trainer(model, cfg, torch.device("cpu")).fit(train, val)  # type: ignore[arg-type]
    return model.state_dict()


def test_training_from_the_stream_equals_training_in_memory(data: tuple[SplitTensors, Path], tmp_path: Path) -> None:
    split, path = data
    val = dw.planted(400, 6)
    val_path = _write(tmp_path / "val.parquet", val, group_rows=128)
    memory = _fit(read_split(path, FIELDS), read_split(val_path, FIELDS))
    streamed = _fit(StreamSplit(path, FIELDS, buffer_rows=4096), StreamSplit(val_path, FIELDS, buffer_rows=100))
    for key, value in memory.items():
        assert torch.equal(streamed[key], value), key
