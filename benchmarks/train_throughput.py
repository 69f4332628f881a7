"""Benchmark: samples/s of a full supernet training step and of evaluation, plus peak memory.

Criteo-shaped synthetic data (39 fields, ~1M table rows, Zipf-like ids), DeepFM with D = 64 and
an MLP 1024-512-256 with BatchNorm by default, ``--mode optembed`` (row mask with its threshold
regulariser and per-sample random widths). One step = forward with both masks, loss, backward,
every optimizer step; data resident on the device, batches sliced from it. Each batch size is
timed after warm-up steps; the learning rate is scaled linearly with the batch size.

Usage::

    python benchmarks/train_throughput.py                        # CPU-sized defaults
    python benchmarks/train_throughput.py --device cuda --batches 2048,16384 --amp bf16 --compile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.evaluate import predict  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=None, help="default: 4M on CUDA, 200k on CPU")
    ap.add_argument("--batches", default="2048,16384")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per batch size (default 200 CUDA, 20 CPU)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--amp", default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    rows = args.rows or (4_000_000 if cuda else 200_000)
    steps = args.steps or (200 if cuda else 20)
    data = criteo_shaped(rows, seed=1).to(device)
    cfg = ModelConfig(args.model, embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        torch.manual_seed(0)
        model = build_model(CARDINALITIES, cfg, "optembed").to(device)
        train_cfg = TrainConfig(batch_size=batch, lr=1e-3 * batch / 2048, amp=args.amp, compile=args.compile)
        trainer = Trainer(model, train_cfg, device)
        model.train()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        it = data.batches(batch, device, generator=trainer.generator, shuffle=True)

        def next_batch():
            nonlocal it
            try:
                return next(it)
            except StopIteration:
                it = data.batches(batch, device, generator=trainer.generator, shuffle=True)
                return next(it)

        for _ in range(max(3, steps // 10)):
            xb, yb = next_batch()
            trainer.step(xb, yb)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            xb, yb = next_batch()
            trainer.step(xb, yb)
        sync(device)
        rate = steps * batch / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        results.append((batch, rate, peak))
        memory = f", peak GPU memory {peak:.2f} GiB" if cuda else ""
        print(f"batch {batch:>6}: {rate:>12,.0f} samples/s train step{memory}")

    model.eval()
    predict(model, data, device, batch_size=65536)
    sync(device)
    start = time.perf_counter()
    predict(model, data, device, batch_size=65536)
    sync(device)
    eval_rate = rows / (time.perf_counter() - start)
    print(f"evaluation: {eval_rate:,.0f} samples/s (batch 65536)")

    if not args.no_write:
        table = "\n".join(f"| {b:,} | {r:,.0f} | {'-' if p != p else f'{p:.2f}'} |" for b, r, p in results)
        body = f"""
Supernet training step (`--mode optembed`: row mask + threshold regulariser + random widths,
forward, backward, all optimizer steps) on {rows:,} Criteo-shaped synthetic rows resident on the
device; {args.model}, D = {args.dim}, MLP {args.mlp} with BatchNorm; amp `{args.amp}`, compile {args.compile};
{steps} timed steps after warm-up; learning rate scaled linearly with the batch.

- Machine: {machine()}; device `{device}`. Date: {now()}.
- Command: `python benchmarks/train_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| batch | train samples/s | peak GPU memory GiB |
|---:|---:|---:|
{table}

Evaluation (inference mode, batch 65,536): **{eval_rate:,.0f} samples/s**.
"""
        write_section(f"training throughput ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
