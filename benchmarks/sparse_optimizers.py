"""Benchmark: training-step samples/s and optimizer state of the embedding optimizers.

Dense Adam (the embedding table in the network's Adam) against ``sparse-adam`` (SparseAdam on
sparse gradients) and ``rowwise-adagrad`` (one accumulator per row), optionally each with the
frequency-adaptive learning rate (counts taken from the benchmark data). Criteo-shaped table:
the 39 Criteo cardinalities scaled to ``--rows-in-table`` rows, D = ``--dim``; DeepFM (its
per-feature linear table uses the same optimizer), ``--mode optembed`` by default. One step =
forward with the masks, loss, backward, every optimizer step; data resident on the device.

Prints a Markdown table; ``--write`` also replaces the section in ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/sparse_optimizers.py                                   # CPU-sized defaults
    python benchmarks/sparse_optimizers.py --device cuda --rows-in-table 5000000 --batches 2048,16384 --with-freq-lr
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
from optembed.training.config import EMBEDDING_OPTIMIZERS, TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def scaled_cardinalities(rows: int) -> list[int]:
    """The Criteo cardinalities scaled to about ``rows`` rows in all (at least 3 per field)."""
    total = sum(CARDINALITIES)
    return [max(3, round(c * rows / total)) for c in CARDINALITIES]


def human(n: float) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows-in-table", type=int, default=None, help="default: 5M on CUDA, 1M on CPU")
    ap.add_argument("--samples", type=int, default=None, help="data rows (default: 4M on CUDA, 200k on CPU)")
    ap.add_argument("--batches", default=None, help="comma-separated (default: 2048,16384 on CUDA, 2048 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (default 100 CUDA, 10 CPU)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default=None, help="default: 1024,512,256 on CUDA, 256,128 on CPU")
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--mode", default="optembed")
    ap.add_argument("--optimizers", default=",".join(EMBEDDING_OPTIMIZERS))
    ap.add_argument("--with-freq-lr", action="store_true", help="also time each optimizer with --freq-lr clip")
    ap.add_argument("--amp", default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    rows = args.rows_in_table or (5_000_000 if cuda else 1_000_000)
    samples = args.samples or (4_000_000 if cuda else 200_000)
    batches = [int(b) for b in (args.batches or ("2048,16384" if cuda else "2048")).split(",")]
    steps = args.steps or (100 if cuda else 10)
    mlp = tuple(int(v) for v in (args.mlp or ("1024,512,256" if cuda else "256,128")).split(","))
    cards = scaled_cardinalities(rows)
    data = criteo_shaped(samples, seed=1, cardinalities=cards)
    offsets = torch.cumsum(torch.tensor(cards), 0) - torch.tensor(cards)
    counts = torch.bincount((data.x.long() + offsets).flatten(), minlength=sum(cards))
    data = data.to(device)
    cfg = ModelConfig(args.model, embed_dim=args.dim, mlp_dims=mlp)
    cases = [(opt, freq) for opt in args.optimizers.split(",") for freq in ((False, True) if args.with_freq_lr else (False,))]
    print(f"table: {sum(cards):,} rows x {args.dim} ({args.model}, mode {args.mode}, MLP {mlp}); {samples:,} samples; device {device}")
    results = []
    for batch in batches:
        for opt, freq in cases:
            torch.manual_seed(0)
            model = build_model(cards, cfg, args.mode).to(device)
            train_cfg = TrainConfig(
                batch_size=batch, lr=1e-3 * batch / 2048, amp=args.amp, compile=args.compile,
                embedding_optimizer=opt, weight_decay=0.0 if opt == "sparse-adam" else 1e-4,
                freq_lr="clip" if freq else "none", freq_lr_c0=100.0,
            )
            trainer = Trainer(model, train_cfg, device, row_counts=counts if freq else None)
            model.train()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            gen = trainer.generator
            it = data.batches(batch, device, generator=gen, shuffle=True)

            def next_batch(batch: int = batch, gen: torch.Generator = gen) -> tuple[torch.Tensor, torch.Tensor]:
                nonlocal it
                try:
                    return next(it)
                except StopIteration:
                    it = data.batches(batch, device, generator=gen, shuffle=True)
                    return next(it)

            for _ in range(max(3, steps // 10)):
                trainer.step(*next_batch())
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(*next_batch())
            sync(device)
            rate = steps * batch / (time.perf_counter() - start)
            state = trainer.optimizer_state_bytes()
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            name = opt + (" + freq-lr" if freq else "")
            results.append((batch, name, rate, state["embedding_optimizer_state_bytes"], state["optimizer_state_bytes"], peak))
            print(
                f"batch {batch:>6} {name:<28} {rate:>12,.0f} samples/s | embedding optimizer state "
                f"{human(state['embedding_optimizer_state_bytes'])}, all {human(state['optimizer_state_bytes'])}"
                + (f" | peak GPU {peak:.2f} GiB" if cuda else "")
            )
            del trainer, model

    table = "\n".join(
        f"| {b:,} | {n} | {r:,.0f} | {human(e)} | {human(a)} | {'-' if p != p else f'{p:.2f}'} |"
        for b, n, r, e, a, p in results
    )
    body = f"""
Embedding optimizers: one supernet training step (`--mode {args.mode}`, forward, backward, all
optimizer steps) on a Criteo-shaped table of {sum(cards):,} rows x {args.dim} ({args.model}, MLP
{','.join(map(str, mlp))} with BatchNorm), {samples:,} synthetic samples resident on the device;
{steps} timed steps after warm-up; amp `{args.amp}`, compile {args.compile}. Optimizer state is
measured after the steps (dense Adam and SparseAdam keep two table-sized moments, row-wise
Adagrad one float per row).

- Machine: {machine()}; device `{device}`. Date: {now()}.
- Command: `python benchmarks/sparse_optimizers.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| batch | embedding optimizer | train samples/s | embedding optimizer state | all optimizer state | peak GPU GiB |
|---:|---|---:|---:|---:|---:|
{table}
"""
    print(body)
    if args.write:
        write_section(f"embedding optimizers ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
