"""Benchmark: ``compress --jobs``: the per-field quantizer fits one at a time vs on a thread pool.

A compact model with Criteo's 39 fields (cardinalities capped at ``--cap`` rows, width
``--dim``, every row kept) is quantized by :func:`quantize_compact` with the default quantizer
(popularity-free), once per ``--jobs`` value, interleaved over ``--trials``; the table shows the
median seconds and the codes' mean squared error (equal up to rounding across job counts).

Usage::

    python benchmarks/quantize_jobs.py                       # jobs 1, 2, 4 on the CPU
    python benchmarks/quantize_jobs.py --jobs 1,8 --results
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the optembed command does

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, machine, now, write_section  # noqa: E402

from optembed.models.compact import export_compact  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.quantization import QuantizerConfig  # noqa: E402
from optembed.quantization.compress import quantize_compact  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", default="1,2,4")
    ap.add_argument("--cap", type=int, default=100_000, help="rows per field at most")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--min-rows", type=int, default=10_000)
    ap.add_argument("--results", action="store_true", help="write the RESULTS.md section")
    args = ap.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",")]
    cards = [min(c, args.cap) for c in CARDINALITIES]
    torch.manual_seed(0)
    model = build_model(cards, ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=(16,)), "none")
    with torch.no_grad():  # trained tables are not Gaussian noise: give rows a clustered structure
        w = model.embedder.embedding.weight
        centers = torch.randn(64, args.dim)
        w.copy_(centers[torch.randint(0, 64, (w.shape[0],))] + 0.3 * torch.randn_like(w))
    compact = export_compact(model, torch.ones(sum(cards), dtype=torch.bool), torch.full((len(cards),), args.dim))
    cfg = QuantizerConfig()
    seconds: dict[int, list[float]] = {j: [] for j in jobs}
    mse: dict[int, float] = {}
    coded = 0
    for trial in range(args.trials):
        for j in jobs:
            t0 = time.perf_counter()
            _, stats = quantize_compact(compact, [f"f{i}" for i in range(len(cards))], None, cfg, args.min_rows, "cpu", jobs=j)
            seconds[j].append(time.perf_counter() - t0)
            coded_stats = [s for s in stats if s["coded"]]
            coded = len(coded_stats)
            mse[j] = sum(s["mse"] * s["rows"] for s in coded_stats) / sum(s["rows"] for s in coded_stats)
            print(f"trial {trial + 1}: jobs {j}: {seconds[j][-1]:.1f} s", file=sys.stderr)
    base = statistics.median(seconds[jobs[0]])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`python benchmarks/quantize_jobs.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {now()}: "
        f"{machine()}; {torch.get_num_threads()} torch threads, load average {load:.1f} at the end.",
        f"Criteo's 39 fields capped at {args.cap:,} rows, width {args.dim}, {coded} fields coded (more than "
        f"{args.min_rows:,} rows), default quantizer; median of {args.trials} interleaved trials [min..max].",
        "",
        "| --jobs | seconds | speed-up | row-weighted MSE |",
        "|---:|---|---:|---:|",
    ]
    for j in jobs:
        t = seconds[j]
        med = statistics.median(t)
        lines.append(f"| {j} | {med:.1f} [{min(t):.1f}..{max(t):.1f}] | {base / med:.2f}x | {mse[j]:.5f} |")
    body = "\n".join(lines)
    print(body)
    if args.results:
        write_section("compress --jobs (cpu)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
