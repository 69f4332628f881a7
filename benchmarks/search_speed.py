"""Benchmark: seconds per search generation, batched scoring against one pass per candidate.

A DeepFM supernet (Criteo-shaped: 39 fields, ~1M table rows, D = 64, MLP 1024-512-256 with
BatchNorm by default) is trained briefly on planted synthetic data, then searched. Measured in
the same run and on the same device:

- ``optembed``: ``evolve`` with :class:`BatchedScorer` (one lookup per validation batch, the
  first layer's blocks of ``--block`` columns shared by all candidates, each distinct candidate
  scored once), seconds per generation averaged over ``--generations``;
- ``optembed, stacked``: the same with ``block=None`` (every candidate's masked input times the
  whole first layer);
- ``naive``: one inference pass per candidate for the whole population each generation
  (:class:`NaiveScorer` on every member: the loop without batching or score reuse);
- ``reference-like``: the reference's per-candidate loop (gradients on, batch 2048, a host
  copy of every batch, AUC on the host), timed on a few candidates and scaled to the population.

The best candidate of a full ``evolve`` run with the naive scorer must equal the batched one.

Usage::

    python benchmarks/search_speed.py                       # CPU-sized defaults
    python benchmarks/search_speed.py --device cuda --val-rows 1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.evolution import EvolutionConfig, evolve  # noqa: E402
from optembed.evolution.fitness import BatchedScorer, NaiveScorer  # noqa: E402
from optembed.metrics import auc  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402


def reference_like_seconds(model, val, device, widths: np.ndarray, batch: int = 2048) -> float:
    """Seconds for one candidate the way the reference loop scores it."""
    start = time.perf_counter()
    w = torch.as_tensor(widths, device=device)
    outs, labels = [], []
    for xb, yb in val.batches(batch, device):
        logits = model(xb, w)  # gradients on, as in the reference
        outs.append(torch.sigmoid(logits).detach().cpu().numpy())
        labels.append(yb.cpu().numpy())
    auc(torch.from_numpy(np.concatenate(labels)), torch.from_numpy(np.concatenate(outs)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--val-rows", type=int, default=None, help="default: 1M on CUDA, 20k on CPU")
    ap.add_argument("--train-rows", type=int, default=None, help="default: 2M on CUDA, 100k on CPU")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--population", type=int, default=40)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--reference-candidates", type=int, default=3)
    ap.add_argument("--block", type=int, default=16, help="shared block width of the first layer (0: stacked only)")
    ap.add_argument("--rows-per-pass", type=int, default=None, help="default: 262144 on CUDA, 4096 on CPU")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    val_rows = args.val_rows or (1_000_000 if cuda else 20_000)
    train_rows = args.train_rows or (2_000_000 if cuda else 100_000)
    rows_per_pass = args.rows_per_pass or (262_144 if cuda else 4096)
    torch.manual_seed(0)
    train, val = criteo_shaped(train_rows, seed=1), criteo_shaped(val_rows, seed=2)
    train, val = train.to(device), val.to(device)
    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    model = build_model(CARDINALITIES, cfg, "optembed").to(device)
    t0 = time.perf_counter()
    fit = Trainer(model, TrainConfig(epochs=1, batch_size=4096 if cuda else 2048), device).fit(train, val)
    model.load_state_dict(fit.best_state)
    table = model.table_embedder()
    table.set_row_mask(table.learned_mask())
    model.eval()
    print(f"supernet: 1 epoch on {train_rows:,} rows in {time.perf_counter() - t0:.1f}s, val AUC {fit.best_val_auc:.4f}")

    kept = torch.bincount(table.embedding.field_of_row[table.row_mask], minlength=model.n_fields).cpu().numpy()
    evo = EvolutionConfig(population=args.population, generations=args.generations, topk=min(15, args.population // 2))
    batched = BatchedScorer(model, val, device, rows_per_pass=rows_per_pass, block=args.block or None)
    stacked = BatchedScorer(model, val, device, rows_per_pass=rows_per_pass, block=None)
    naive = NaiveScorer(model, val, device, batch_size=32768 if cuda else 2048)

    batched(np.full((2, model.n_fields), args.dim))  # warm up
    start = time.perf_counter()
    ours = evolve(batched, kept, args.dim, evo)
    ours_total = time.perf_counter() - start
    ours_per_gen = ours_total / (args.generations + 1)
    if args.block:
        stacked(np.full((2, model.n_fields), args.dim))
        start = time.perf_counter()
        plain = evolve(stacked, kept, args.dim, evo)
        stacked_per_gen = (time.perf_counter() - start) / (args.generations + 1)
        assert np.array_equal(plain.best, ours.best)

    population = np.array([r["widths"] for r in ours.history if r["generation"] == 0])
    start = time.perf_counter()
    naive_scores = naive(population)
    naive_per_gen = time.perf_counter() - start
    np.testing.assert_allclose(naive_scores, batched(population), atol=1e-5)

    same = evolve(naive, kept, args.dim, evo)
    same_best = bool(np.array_equal(same.best, ours.best))

    with torch.enable_grad():
        model.train(False)
        ref = [reference_like_seconds(model, val, device, population[i]) for i in range(args.reference_candidates)]
    ref_per_gen = float(np.mean(ref)) * args.population

    rows = [(f"optembed (shared {args.block}-column blocks, scores reused)" if args.block else "optembed (stacked, scores reused)", ours_per_gen)]
    if args.block:
        rows.append(("optembed, candidates stacked (--block 0)", stacked_per_gen))
    rows += [
        ("naive: one inference pass per candidate", naive_per_gen),
        ("reference-like loop (grad on, batch 2048, host copies)", ref_per_gen),
    ]
    print(f"\n{'method':58s} {'s/generation':>12s} {'samples/s':>14s} {'vs ours':>8s}")
    for name, sec in rows:
        print(f"{name:58s} {sec:12.2f} {val_rows * args.population / sec:14,.0f} {sec / ours_per_gen:7.1f}x")
    print(f"same best candidate as the naive loop: {same_best}; best val AUC {ours.best_score:.5f}")

    if not args.no_write:
        table = "\n".join(
            f"| {name} | {sec:.2f} | {val_rows * args.population / sec:,.0f} | {sec / ours_per_gen:.1f}x |" for name, sec in rows
        )
        body = f"""
Seconds per generation of `--population {args.population}` on {val_rows:,} validation rows: DeepFM
supernet, 39 Criteo-shaped fields ({sum(CARDINALITIES):,} table rows), D = {args.dim}, MLP {args.mlp} with
BatchNorm, trained 1 epoch on {train_rows:,} planted synthetic rows (val AUC {fit.best_val_auc:.4f}).
Ours is averaged over {args.generations + 1} generations (generation 0 scores all {args.population}
random candidates; later ones score only new children). samples/s = candidate-rows per second.

- Machine: {machine()}; device `{device}`. Date: {now()}.
- Command: `python benchmarks/search_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| method | s / generation | candidate-rows/s | seconds vs ours |
|---|---:|---:|---:|
{table}

- Same best candidate as the naive loop for the same seed: **{'yes' if same_best else 'NO'}**.
- The reference-like figure is {args.reference_candidates} candidates timed and scaled to {args.population}.
"""
        write_section(f"search speed ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
