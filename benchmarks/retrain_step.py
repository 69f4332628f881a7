"""Benchmark: the re-training step of a pruned model, against the Original's and a plain model's.

Criteo-shaped synthetic data (39 fields, ~1M table rows, Zipf-like ids), DeepFM with D = 64 and
an MLP 1024-512-256 with BatchNorm, batch 2,048, dense Adam. Four models take the same steps
(forward, loss, backward, every optimizer step), interleaved trial by trial:

- ``original``: the full table, no masks (what ``retrain --full`` trains);
- ``masked``: the full table under a fixed row mask and per-field widths (how a masked variant was
  re-trained before it trained its compact tables; still the path of the row-wise optimizers);
- ``compact``: the same masks as compact tables (what ``retrain`` trains now);
- ``plain``: an Original of the compact size: each field's kept rows at one uniform width that
  gives the same number of embedding parameters (its network reads ``n x D_u`` inputs).

The masks keep ``--keep`` of every field's rows (the most frequent ids, as a threshold on row
norms tends to) and widths cycling through ``--widths``. Prints samples/s per model (median
over trials) and the ratios the compact re-training is judged by.

Usage::

    python benchmarks/retrain_step.py                      # CPU-sized
    python benchmarks/retrain_step.py --device cuda --steps 100 --rows 2000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.data.tensors import SplitTensors  # noqa: E402
from optembed.models.apply import apply_search  # noqa: E402
from optembed.models.compact import compact_model  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402

MODELS = ("original", "masked", "compact", "plain")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def keep_mask(cards: list[int], share: float) -> torch.Tensor:
    """The first ``share`` of every field's ids (the frequent ones: ``criteo_shaped`` draws low
    ids most often), the OOV row among them."""
    parts = []
    for card in cards:
        keep = torch.zeros(card, dtype=torch.bool)
        keep[: max(1, round(card * share))] = True
        parts.append(keep)
    return torch.cat(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model per trial")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--keep", type=float, default=0.3, help="share of every field's rows kept")
    ap.add_argument("--widths", default="16,24,32,8", help="per-field widths, cycled over the fields")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    data = criteo_shaped(args.rows, seed=1)
    cycle = [int(w) for w in args.widths.split(",")]
    widths = torch.tensor([cycle[f % len(cycle)] for f in range(len(CARDINALITIES))])
    keep = keep_mask(CARDINALITIES, args.keep)

    torch.manual_seed(0)
    original = build_model(CARDINALITIES, cfg, "none")
    masked = build_model(CARDINALITIES, cfg, "none")
    apply_search(masked, keep, widths)
    compact = compact_model(masked).train()
    kept_rows = compact.embedder.field_rows()
    kept_params = compact.embedder.kept_params()
    total = sum(CARDINALITIES) * args.dim
    sparsity = 1 - kept_params / total
    uniform = max(1, round(kept_params / sum(kept_rows)))
    plain = build_model(kept_rows, ModelConfig("deepfm", embed_dim=uniform, mlp_dims=cfg.mlp_dims), "none")
    kept_t = torch.tensor(kept_rows, dtype=data.x.dtype)
    plain_data = SplitTensors(data.x % kept_t, data.y)  # ids inside the kept rows, the same skew

    runs = {}
    for name, model in zip(MODELS, (original, masked, compact, plain), strict=True):
        model = model.to(device).train()
        trainer = Trainer(model, TrainConfig(batch_size=args.batch, lr=1e-3, seed=0), device)
        split = (plain_data if name == "plain" else data).to(device)
        runs[name] = (trainer, split, iter(()))
    rates: dict[str, list[float]] = {name: [] for name in MODELS}

    def steps(name: str, count: int) -> None:
        trainer, split, it = runs[name]
        for _ in range(count):
            try:
                xb, yb = next(it)
            except StopIteration:
                it = split.batches(args.batch, device, generator=trainer.generator, shuffle=True)
                xb, yb = next(it)
            trainer.step(xb, yb)
        runs[name] = (trainer, split, it)

    for name in MODELS:  # warm-up
        steps(name, 3)
    for _ in range(args.trials):
        for name in MODELS:
            sync(device)
            start = time.perf_counter()
            steps(name, args.steps)
            sync(device)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
    median = {name: statistics.median(r) for name, r in rates.items()}
    for name in MODELS:
        print(f"{name:<9} {median[name]:>10,.0f} samples/s")
    ratios = {
        "compact / original": median["compact"] / median["original"],
        "compact / masked": median["compact"] / median["masked"],
        "compact / plain": median["compact"] / median["plain"],
        "masked / original": median["masked"] / median["original"],
    }
    for key, value in ratios.items():
        print(f"{key:<19} {value:.2f}x")
    print(f"sparsity {sparsity:.3f} ({kept_params:,} of {total:,} entries; plain D_u = {uniform})")

    if not args.no_write:
        table = "\n".join(f"| {n} | {median[n]:,.0f} |" for n in MODELS)
        ratio_lines = "\n".join(f"| {k} | {v:.2f}x |" for k, v in ratios.items())
        body = f"""
One re-training step (forward, loss, backward, dense Adam) of DeepFM D = {args.dim}, MLP {args.mlp} with
BatchNorm, batch {args.batch:,}, on {args.rows:,} Criteo-shaped rows ({sum(CARDINALITIES):,} table rows); the
masks keep {args.keep:g} of every field's rows and widths {args.widths} cycled over the fields: sparsity
{sparsity:.3f}. `plain`: an Original over the kept rows at D_u = {uniform} (the same embedding
parameters). Median of {args.trials} interleaved trials of {args.steps} steps.

- Machine: {machine()}; device `{device}`. Date: {now()}.
- Command: `python benchmarks/retrain_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| model | samples/s |
|---|---:|
{table}

| ratio | |
|---|---:|
{ratio_lines}
"""
        write_section(f"retrain step ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
