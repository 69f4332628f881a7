"""Benchmark: inference latency, throughput and memory of the compact model vs the dense masked one.

A DeepFM (Criteo-shaped: 39 fields, ~1M table rows, D = 64, MLP 1024-512-256 by default) is put
under fixed masks typical of OptEmbed (``--keep`` of the rows, random widths in 1..D averaging
about D/2), then exported with ``export_compact``. Both answer the same ids; their outputs are
checked equal, then timed: p50/p99 ms at batch 1 and samples/s at batch 4096, and the bytes of
their parameters and buffers.

Usage::

    python benchmarks/compact_latency.py [--device cuda] [--keep 0.3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.models.compact import export_compact  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.latency import measure_latency, module_bytes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--keep", type=float, default=0.3, help="share of table rows kept by the row mask")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)

    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    dense = build_model(CARDINALITIES, cfg, "none").eval()
    keep = torch.rand(dense.embedder.num_rows, generator=gen) < args.keep
    widths = torch.randint(1, args.dim + 1, (dense.n_fields,), generator=gen)
    dense.table_embedder().set_fixed_masks(keep, widths)
    compact = export_compact(dense, keep, widths).eval()
    dense, compact = dense.to(device), compact.to(device)
    x = criteo_shaped(4096, seed=3).x.to(device)
    with torch.inference_mode():
        torch.testing.assert_close(compact(x), dense(x), rtol=1e-5, atol=1e-5)

    rows = []
    for name, model in (("dense masked", dense), ("compact", compact)):
        lat = measure_latency(model, x, device)
        rows.append((name, lat, module_bytes(model)))
        print(
            f"{name:13s} p50 {lat['latency_p50_ms']:.3f} ms  p99 {lat['latency_p99_ms']:.3f} ms  "
            f"{lat['throughput_samples_per_s']:>12,.0f} samples/s  {module_bytes(model) / 2**20:8.1f} MiB"
        )
    if not args.no_write:
        table = "\n".join(
            f"| {n} | {l['latency_p50_ms']:.3f} | {l['latency_p99_ms']:.3f} | {l['throughput_samples_per_s']:,.0f} | {b / 2**20:.1f} |"
            for n, l, b in rows
        )
        body = f"""
DeepFM, 39 Criteo-shaped fields ({sum(CARDINALITIES):,} rows), D = {args.dim}, MLP {args.mlp}; row mask
keeping {args.keep:.0%} of the rows, random widths (mean {widths.float().mean():.1f}). The two models'
outputs are checked equal first. Memory = bytes of parameters and buffers.

- Machine: {machine()}; device `{device}`. Date: {now()}.
- Command: `python benchmarks/compact_latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| model | p50 ms (batch 1) | p99 ms (batch 1) | samples/s (batch 4096) | memory MiB |
|---|---:|---:|---:|---:|
{table}
"""
        write_section(f"compact model latency ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
