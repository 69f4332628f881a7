"""Benchmark: the quantized embedder's inference lookup, packed (two gathers) vs one call per field.

The compressed model of ``serving.py`` (DeepFM, 39 Criteo-shaped fields, 30% of the rows kept,
random widths, fields over 10,000 rows coded with 4 groups x 256 entries) is timed at batch 1
and 4096 with one thread: the embedding lookup alone both ways (their outputs are checked equal
first), and the whole compressed model next to the compact model it was made from. Medians of
``--trials`` timed calls after a warm-up; both ways are timed in alternation, so a busy machine
slows both alike.

Usage::

    python benchmarks/quantized_lookup.py [--dims 16,64] [--trials 300] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import criteo_shaped, machine, now, write_section  # noqa: E402
from serving import masked_models, quantized_from  # noqa: E402


def median_ms(fns: dict[str, Callable[[], object]], trials: int) -> dict[str, float]:
    """Median time of each function over ``trials`` calls, the functions called in turn."""
    for fn in fns.values():
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(trials):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def run_dim(dim: int, trials: int) -> list[str]:
    _, compact = masked_models(dim, "1024,512,256", 0.3)
    quantized = quantized_from(compact)
    emb = quantized.embedder
    x = criteo_shaped(4096, seed=3).x.long()
    rows = []
    with torch.inference_mode():
        for batch in (1, 64, 256, 1024, 4096):
            xb = x[:batch]
            ids = emb.ids(xb)
            packed = emb.packed()
            assert torch.equal(packed.lookup(ids), emb.lookup_per_field(ids))
            n = trials if batch <= 256 else max(5, trials // 20)
            t = median_ms({"loop": lambda: emb.lookup_per_field(ids), "packed": lambda: packed.lookup(ids),
                           "model": lambda: quantized(xb), "compact": lambda: compact(xb)}, n)
            rows.append(f"| {dim} | {batch:,} | {t['loop']:.3f} | {t['packed']:.3f} | {t['loop'] / t['packed']:.1f}x "
                        f"| {t['model']:.3f} | {t['compact']:.3f} |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="16,64")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    header = ("| D | batch | per-field loop ms | packed ms | speed-up | compressed model ms | compact model ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|")
    print(header)
    rows = [r for d in args.dims.split(",") for r in run_dim(int(d), args.trials)]
    body = (
        "The compressed model's embedding lookup at inference: one `embedding_bag` over packed tables\n"
        "(`optembed/quantization/packed.py`) against one call per field, same outputs bit for bit\n"
        "(the model reads the packed tables for batches up to 256 rows); \"compressed model\": the whole model's time;\n"
        "the model of \"serving (cpu)\" (39 fields, 30% of the rows kept, fields over 10,000 rows coded\n"
        "4 x 256). One thread; medians, the ways timed in alternation.\n\n"
        f"- Machine: {machine()}.\n- Date: {now()}. Command: `python benchmarks/quantized_lookup.py --dims {args.dims}`\n\n"
        + header + "\n" + "\n".join(rows) + "\n"
    )
    if not args.no_write:
        write_section("quantized lookup (cpu)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
