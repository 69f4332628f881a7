"""Benchmark: product-quantizer codebook fit, optembed against faiss-cpu, side by side.

One table of ``--rows`` x ``--dim`` float32 rows (a mixture of Gaussian clusters with Zipf-like
sizes, like a trained embedding table: a few dense regions, a long tail), ``--groups``
sub-vectors, ``--codebook`` entries per group, ``--iters`` Lloyd iterations, no popularity
weights (faiss has none). Every fit is timed from the float table to the codes of *all* rows
(training + encoding), on the same threads, ``--trials`` times; the reconstruction error is the
mean squared error of the decoded rows relative to the mean squared row norm.

Contestants:

- ``optembed (sample 256/entry)``: the default (``QuantizerConfig.kmeans_sample = 256``), k-means
  on 256 rows per entry drawn from the table, then every row encoded;
- ``optembed (sample 256/entry, 2x iterations)``: the same with twice the Lloyd iterations;
- ``optembed (all rows)``: ``kmeans_sample = 0``, every iteration over every row;
- ``optembed --kmeans-backend faiss``: the default sample, faiss's k-means and search inside
  optembed's fit (the optional backend);
- ``faiss (default)``: ``faiss.ProductQuantizer.train`` (its own subsample: 256 points per
  centroid) + ``compute_codes``;
- ``faiss (all rows)``: the same with ``max_points_per_centroid`` raised to use every row.

Usage::

    pip install faiss-cpu
    python benchmarks/codebook_fit.py                 # 1M x 64, 4 groups, K 256, 10 iterations
    python benchmarks/codebook_fit.py --results       # also writes the RESULTS.md section
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the optembed command does: no spinning threads on a busy machine

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, now, write_section  # noqa: E402

from optembed.quantization.config import QuantizerConfig  # noqa: E402
from optembed.quantization.fit import fit_quantizer  # noqa: E402


def clustered_table(rows: int, dim: int, seed: int = 0, clusters: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, clusters + 1)
    which = rng.choice(clusters, size=rows, p=sizes / sizes.sum())
    return (centres[which] + 0.5 * rng.standard_normal((rows, dim)).astype(np.float32)).astype(np.float32)


def rel_mse(x: np.ndarray, q: np.ndarray) -> float:
    return float(((x - q) ** 2).sum(1).mean() / (x * x).sum(1).mean())


def ours(x: np.ndarray, groups: int, codebook: int, iters: int, sample: int, backend: str = "torch") -> Callable[[], float]:
    table = torch.from_numpy(x)
    cfg = QuantizerConfig(groups=groups, codebook=codebook, popularity="none", steps=0, kmeans_iters=iters,
                          kmeans_sample=sample, balance_weight=0.0, contrastive_weight=0.0, kmeans_backend=backend)

    def run() -> float:
        pq, codes, _ = fit_quantizer(table, None, cfg)
        with torch.no_grad():
            return rel_mse(x, pq.decode(codes).numpy())

    return run


def faiss_fit(x: np.ndarray, groups: int, codebook: int, iters: int, all_rows: bool) -> Callable[[], float]:
    import faiss

    def run() -> float:
        pq = faiss.ProductQuantizer(x.shape[1], groups, int(np.log2(codebook)))
        pq.cp.niter = iters
        if all_rows:
            pq.cp.max_points_per_centroid = (x.shape[0] + codebook - 1) // codebook
        pq.train(x)
        codes = pq.compute_codes(x)
        return rel_mse(x, pq.decode(codes))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--results", action="store_true", help="write the '## codebook fit (cpu)' section of RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = clustered_table(args.rows, args.dim)
    runs: list[tuple[str, Callable[[], float]]] = [
        ("optembed (sample 256/entry)", ours(x, args.groups, args.codebook, args.iters, 256)),
        (f"optembed (sample 256/entry, {2 * args.iters} iterations)", ours(x, args.groups, args.codebook, 2 * args.iters, 256)),
        ("optembed (all rows)", ours(x, args.groups, args.codebook, args.iters, 0)),
    ]
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        runs += [("optembed --kmeans-backend faiss (sample 256/entry)",
                  ours(x, args.groups, args.codebook, args.iters, 256, "faiss")),
                 (f"optembed --kmeans-backend faiss (sample 256/entry, {2 * args.iters} iterations)",
                  ours(x, args.groups, args.codebook, 2 * args.iters, 256, "faiss")),
                 ("faiss (default)", faiss_fit(x, args.groups, args.codebook, args.iters, False)),
                 ("faiss (all rows)", faiss_fit(x, args.groups, args.codebook, args.iters, True))]
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "not installed"
        print("faiss-cpu is not installed: measuring optembed only", file=sys.stderr)
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    errors: dict[str, float] = {}
    for trial in range(args.trials):  # interleaved, so a busy spell hits every contestant alike
        for name, fn in runs:
            t0 = time.perf_counter()
            errors[name] = fn()
            times[name].append(time.perf_counter() - t0)
            print(f"trial {trial + 1}: {name}: {times[name][-1]:.2f} s, relative MSE {errors[name]:.4f}", file=sys.stderr)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`python benchmarks/codebook_fit.py` on {now()}: {machine()}, faiss-cpu {faiss_version}, "
        f"{args.threads} threads, load average {load:.1f} at the end.",
        f"Table {args.rows:,} x {args.dim} (clustered rows), {args.groups} groups, K = {args.codebook}, "
        f"{args.iters} Lloyd iterations, no popularity weights; time = fit + encoding every row; "
        f"median of {args.trials} interleaved trials [min..max].",
        "",
        "| fit | seconds | relative MSE |",
        "|---|---|---|",
    ]
    for name, _ in runs:
        t = times[name]
        lines.append(f"| {name} | {statistics.median(t):.2f} [{min(t):.2f}..{max(t):.2f}] | {errors[name]:.4f} |")
    body = "\n".join(lines)
    print(body)
    if args.results:
        write_section("codebook fit (cpu)", body)


if __name__ == "__main__":
    main()
