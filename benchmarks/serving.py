"""Benchmark: serving latency and throughput of the exported graphs next to the in-package models.

A DeepFM over 39 Criteo-shaped fields (~1M table rows) is put under fixed masks typical of
OptEmbed (``--keep`` of the rows, random widths in 1..D) and exported as a compact model; a
product-quantized form of it (fields of more than 10,000 rows coded with 4 groups x 256
entries, random codes: the speed depends on the shapes only) stands for the compressed model.
Side by side, with the same thread count: onnxruntime and the ``torch.export`` program of the
compact model, the in-package compact model, the dense masked model it replaces, and the
quantized model (in package and as ONNX). Every runtime's outputs are checked against the dense
masked model first. p50/p99 ms at batch 1 and samples/s at batch 4096 are medians of 5 trials
after a warm-up (:func:`optembed.training.latency.measure_latency`), with the trials' spread.

Usage::

    python benchmarks/serving.py [--dims 16,64] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.export.bundle import onnx_scorer, torch_scorer  # noqa: E402
from optembed.export.graph import ServingNet  # noqa: E402
from optembed.export.writers import export_program, save_onnx, save_pt2  # noqa: E402
from optembed.models.compact import export_compact  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.quantization.fields import CodedField, DenseField  # noqa: E402
from optembed.quantization.model import quantized_model  # noqa: E402
from optembed.training.latency import measure_latency  # noqa: E402


def quantized_from(compact, min_rows: int = 10_000, groups: int = 4, entries: int = 256):
    g = torch.Generator().manual_seed(7)
    fields = []
    for f in range(compact.n_fields):
        table = compact.embedder.table(f).detach()
        if table.shape[0] > min_rows:
            sub = -(-table.shape[1] // groups)
            codes = torch.randint(0, entries, (table.shape[0], groups), generator=g).to(torch.uint8)
            fields.append(CodedField(codes, torch.randn(groups, entries, sub, generator=g) * 0.01, table.shape[1]))
        else:
            fields.append(DenseField(table))
    return quantized_model(compact, fields).eval()


def as_module(score):
    """A numpy scorer as ``ids tensor -> logit tensor`` for :func:`measure_latency`."""
    return lambda x: torch.from_numpy(score(x.numpy())[0])


def masked_models(dim: int, mlp: str, keep_share: float):
    """The dense DeepFM under a random row mask (``keep_share`` of the rows) and random widths,
    and the compact model exported from it (both in eval mode, seed 0)."""
    gen = torch.Generator().manual_seed(0)
    cfg = ModelConfig("deepfm", embed_dim=dim, mlp_dims=tuple(int(v) for v in mlp.split(",")))
    dense = build_model(CARDINALITIES, cfg, "none").eval()
    table = dense.table_embedder()
    keep = torch.rand(table.num_rows, generator=gen) < keep_share
    keep[table.embedding.offsets] = True
    widths = torch.randint(1, dim + 1, (dense.n_fields,), generator=gen)
    table.set_fixed_masks(keep, widths)
    return dense, export_compact(dense, keep, widths).eval()


def run_dim(dim: int, mlp: str, keep_share: float, threads: int, work: Path) -> list[tuple[str, dict[str, float]]]:
    dense, compact = masked_models(dim, mlp, keep_share)
    quantized = quantized_from(compact)
    x = criteo_shaped(4096, seed=3).x.long()
    candidates: dict[str, object] = {"dense masked (in package)": dense, "compact (in package)": compact,
                                     "compressed (in package)": quantized}
    for name, model in (("compact", compact), ("compressed", quantized)):
        net = ServingNet(model, [f"f{i}" for i in range(model.n_fields)]).eval()
        program = export_program(net, net.n_fields)
        save_pt2(program, work / f"{name}-{dim}.pt2")
        save_onnx(program, work / f"{name}-{dim}.onnx", net.n_fields)
        candidates[f"{name}: onnxruntime"] = as_module(onnx_scorer(work / f"{name}-{dim}.onnx", threads))
        candidates[f"{name}: torch.export (.pt2)"] = as_module(torch_scorer(work / f"{name}-{dim}.pt2"))
    with torch.inference_mode():
        want = dense(x).numpy()
        for name, model in candidates.items():
            got = model(x)  # type: ignore[operator]
            ref = quantized(x).numpy() if name.startswith("compressed") else want
            assert np.abs(got.numpy() - ref).max() < 1e-4, name
    rows = []
    for name, model in candidates.items():
        lat = measure_latency(model, x, torch.device("cpu"))  # type: ignore[arg-type]
        rows.append((name, lat))
        print(
            f"D={dim:<3d} {name:34s} p50 {lat['latency_p50_ms']:.3f} ms ({lat['latency_p50_ms_min']:.3f}-{lat['latency_p50_ms_max']:.3f})  "
            f"p99 {lat['latency_p99_ms']:.3f} ms  {lat['throughput_samples_per_s']:>10,.0f} samples/s "
            f"({lat['throughput_min']:,.0f}-{lat['throughput_max']:,.0f})",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="16,64")
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--keep", type=float, default=0.3, help="share of table rows kept by the row mask")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dim in (int(d) for d in args.dims.split(",")):
            results[dim] = run_dim(dim, args.mlp, args.keep, args.threads, Path(tmp))
    if args.no_write:
        return 0
    lines = []
    for dim, rows in results.items():
        compact = dict(rows)["compact (in package)"]
        for name, lat in rows:
            lines.append(
                f"| {dim} | {name} | {lat['latency_p50_ms']:.3f} ({lat['latency_p50_ms_min']:.3f}-{lat['latency_p50_ms_max']:.3f}) | "
                f"{lat['latency_p99_ms']:.3f} | {lat['throughput_samples_per_s']:,.0f} ({lat['throughput_min']:,.0f}-{lat['throughput_max']:,.0f}) | "
                f"{compact['latency_p50_ms'] / lat['latency_p50_ms']:.2f}x | {lat['throughput_samples_per_s'] / compact['throughput_samples_per_s']:.2f}x |"
            )
    load = os.getloadavg()
    body = f"""
DeepFM, 39 Criteo-shaped fields ({sum(CARDINALITIES):,} rows), MLP {args.mlp}; row mask keeping
{args.keep:.0%} of the rows, random widths in 1..D; the compressed model codes every field of more
than 10,000 rows (4 groups x 256 entries, uint8). Every runtime's outputs are checked against the
dense masked model (the compressed ones against the in-package compressed model) first. Threads:
{args.threads} for torch and onnxruntime. p50 (batch 1) and samples/s (batch 4096): median of 5
trials after a warm-up, the trials' range in brackets; "vs compact": the in-package compact
model's p50 / this p50, and this throughput / the compact model's.

- Machine: {machine()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) when
  the table was written: the 2 cores are shared with other jobs, so compare rows of one run only.
- Date: {now()}. Command: `python benchmarks/serving.py {' '.join(argv if argv is not None else sys.argv[1:])}`

| D | runtime | p50 ms, batch 1 | p99 ms | samples/s, batch 4096 | p50 vs compact | samples/s vs compact |
|---:|---|---:|---:|---:|---:|---:|
{chr(10).join(lines)}
"""
    write_section("serving (cpu)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
