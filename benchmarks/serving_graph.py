"""Benchmark: the exported compact graph against the Original's and a plain DeepFM's, in onnxruntime.

A DeepFM over Criteo-shaped fields (``--fields`` of the 39, D = 64 by default) is built three ways:
the plain model over the full table (its graph: one row gather), the Original's deployable model
(``compact_model`` of that table: every row, full width) and a compact model at sparsity >= 0.8
built directly from random per-field tables (random kept rows and widths in 1..D) and random
remaps. Each is exported with :func:`optembed.export.writers.save_onnx` through
:class:`optembed.export.graph.ServingNet`; the compact and the Original graphs are exported
twice, with the serving lookup (:class:`optembed.embedders.compact_lookup.CompactLookup`, row
gathers of width-grouped tables) and with the earlier element-wise gather
(the element-wise gather over the flat buffer, :class:`ElementLookup`); ``--slack`` adds compact graphs of other width
groupings (0: one group per width, exactly the model's bytes; inf: one table padded to D).
The serving lookup hands the head its width groups' blocks unpadded (packed embeddings: the MLP's
first layer laid out for the groups, DeepFM's FM term over the blocks); the element-gather and
plain lookups give it the ``(B, n, D)`` block. Every graph's outputs are checked against its
in-package model first.

Timing: onnxruntime with 1 and 2 threads; per trial every graph in turn (interleaved, the order
rotated each trial) runs ``--singles`` batch-1 calls (their median ms) and ``--batches`` calls at
batch 4096 (their median, as samples/s); the table gives the median over ``--trials`` trials and
ratios of those medians; the paired lines, the median over trials of each trial's own ratio. One
profiled run per lookup (``SessionOptions.enable_profiling``) lists the top operators by kernel time.

Usage::

    python benchmarks/serving_graph.py [--fields 39] [--dim 64] [--trials 7] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now  # noqa: E402

from optembed.embedders.compact import CompactEmbedder  # noqa: E402
from optembed.embedders.compact_lookup import CompactLookup  # noqa: E402
from optembed.export.bundle import onnx_scorer  # noqa: E402
from optembed.export.graph import ServingNet  # noqa: E402
from optembed.export.writers import export_program, save_onnx  # noqa: E402
from optembed.models.base import CTRModel  # noqa: E402
from optembed.models.compact import compact_model  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402

BATCH = 4096


class ElementLookup(nn.Module):
    """The earlier serving lookup: the remap, then the element-wise gather over the flat buffer."""

    def __init__(self, embedder: CompactEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.embedder
        rows = emb.ids(x)
        inside = torch.arange(emb.dim, device=x.device) < emb.field_width.unsqueeze(1)  # (n, D)
        index = (emb.field_start + rows * emb.field_width).unsqueeze(-1) + torch.arange(emb.dim, device=x.device)
        return rows, emb.flat[torch.where(inside, index, 0)] * emb.inside_f


class PlainLookup(nn.Module):
    """A plain model's lookup: the ids as they are, one row gather of the full table."""

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.embedder = model.embedder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, self.embedder.lookup(x)


def serving_net(model: CTRModel, lookup: nn.Module | None = None) -> ServingNet:
    """``ServingNet`` of ``model``; ``lookup`` replaces the embedder's own serving lookup."""
    if lookup is None:
        return ServingNet(model).eval()
    net = ServingNet.__new__(ServingNet)
    nn.Module.__init__(net)
    layout = getattr(lookup, "layout", None)
    net.lookup, net.packs = lookup, layout is not None
    net.backbone = model if layout is None else model.for_layout(layout)
    net.field_names = [f"f{i}" for i in range(model.n_fields)]
    net.n_fields = model.n_fields
    return net.eval()


def random_compact(cards: list[int], cfg: ModelConfig, seed: int, keep: tuple[float, float]) -> CTRModel:
    """A compact DeepFM from random tables: per field a kept share drawn in ``keep`` (the OOV row
    always kept), a width in 1..D, random rows and a random remap (pruned ids -> the OOV row)."""
    g = torch.Generator().manual_seed(seed)
    dim = cfg.embed_dim
    tables, remaps = [], []
    for card in cards:
        share = keep[0] + (keep[1] - keep[0]) * float(torch.rand((), generator=g))
        kept = torch.rand(card, generator=g) < share
        kept[0] = True
        ids = torch.nonzero(kept).squeeze(1)
        remap = torch.zeros(card, dtype=torch.long)
        remap[ids] = torch.arange(ids.numel())
        width = int(torch.randint(1, dim + 1, (), generator=g))
        tables.append(torch.randn(ids.numel(), width, generator=g) * 0.05)
        remaps.append(remap)
    torch.manual_seed(seed)
    return build_model(cards, cfg, "none", embedder=CompactEmbedder(tables, remaps, dim)).eval()


def profile_ops(path: Path, x: np.ndarray, threads: int, runs: int, work: Path) -> list[tuple[str, float]]:
    """Share of kernel time per operator type over ``runs`` calls on ``x``, largest first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(work / path.stem)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"ids": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1.0
    return sorted(((op, us / total) for op, us in per_op.items()), key=lambda t: -t[1])


def node_counts(path: Path) -> tuple[int, dict[str, int]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        counts[node.op_type] += 1
    return len(graph.node), dict(counts)


def time_trials(scorers: dict[str, Callable[[np.ndarray], object]], single: list[np.ndarray], big: np.ndarray,
                trials: int, batches: int) -> dict[str, dict[str, list[float]]]:
    """Per graph, per trial: median batch-1 ms and median samples/s at batch ``len(big)``; the
    graphs take turns within a trial, in an order rotated every trial."""
    out: dict[str, dict[str, list[float]]] = {name: {"ms": [], "rate": []} for name in scorers}
    names = list(scorers)
    for name in names:  # warm-up
        for xb in single[:20]:
            scorers[name](xb)
        scorers[name](big)
    for t in range(trials):
        for name in names[t % len(names):] + names[: t % len(names)]:
            score = scorers[name]
            ms = []
            for xb in single:
                start = time.perf_counter()
                score(xb)
                ms.append((time.perf_counter() - start) * 1e3)
            secs = []
            for _ in range(batches):
                start = time.perf_counter()
                score(big)
                secs.append(time.perf_counter() - start)
            out[name]["ms"].append(statistics.median(ms))
            out[name]["rate"].append(len(big) / statistics.median(secs))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", type=int, default=39, help="the first N of the 39 Criteo-shaped fields (26..39)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="400,400,400")
    ap.add_argument("--keep", default="0.05,0.55", help="range of the per-field kept share of rows")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--trials", type=int, default=7)
    ap.add_argument("--singles", type=int, default=100)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--no-old", action="store_true", help="skip the element-gather graphs")
    ap.add_argument("--slack", default="0,inf", help="extra compact graphs whose width groups may pad up to these "
                    "shares of the entries (comma-separated; 'inf': one table padded to D)")
    args = ap.parse_args(argv)
    cards = CARDINALITIES[len(CARDINALITIES) - args.fields:] if args.fields < len(CARDINALITIES) else CARDINALITIES
    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    lo, hi = (float(v) for v in args.keep.split(","))

    torch.manual_seed(0)
    plain = build_model(cards, cfg, "none").eval()
    original = compact_model(plain)
    compact = random_compact(cards, cfg, seed=1, keep=(lo, hi))
    emb: CompactEmbedder = compact.embedder  # type: ignore[assignment]
    sparsity = 1 - emb.kept_params() / (sum(cards) * args.dim)
    assert sparsity >= 0.8, f"sparsity {sparsity:.3f} < 0.8: narrow --keep"
    default = serving_net(compact)
    groups = default.lookup.tables()
    base = f"compact, default ({len(groups)} groups, +{sum(t.numel() for t in groups) / emb.kept_params() - 1:.1%})"
    nets = {
        base: (compact, default),
        "original (row gathers)": (original, serving_net(original)),
        "plain DeepFM (full table)": (plain, serving_net(plain, PlainLookup(plain))),
    }
    for slack in (float(v) for v in args.slack.split(",") if v):
        lookup = CompactLookup(emb, slack)
        extra = sum(t.numel() for t in lookup.tables()) / emb.kept_params() - 1
        nets[f"compact, slack {slack:g} ({len(lookup.widths)} groups, +{extra:.1%})"] = (compact, serving_net(compact, lookup))
    if not args.no_old:
        nets["compact (element gather)"] = (compact, serving_net(compact, ElementLookup(emb)))
        nets["original (element gather)"] = (original, serving_net(original, ElementLookup(original.embedder)))  # type: ignore[arg-type]
    x = criteo_shaped(BATCH, seed=3, cardinalities=cards).x.long()
    single = [x[i : i + 1].numpy() for i in range(args.singles)]
    print(f"{len(cards)} fields, {sum(cards):,} rows, D {args.dim}, MLP {args.mlp}; compact sparsity {sparsity:.3f}, "
          f"{len(set(emb.widths))} distinct widths, {emb.kept_params():,} kept params", flush=True)
    table: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths: dict[str, Path] = {}
        info: dict[str, tuple[int, float]] = {}
        for i, (name, (model, net)) in enumerate(nets.items()):
            path = work / f"g{i}.onnx"
            save_onnx(export_program(net, net.n_fields), path, net.n_fields)
            with torch.inference_mode():
                want = model(x).numpy()
            got = onnx_scorer(path, 1)(x.numpy())[0]
            err = float(np.abs(got - want).max())
            assert err < 1e-5, f"{name}: the graph differs from the model by {err}"
            nodes, ops = node_counts(path)
            paths[name] = path
            info[name] = (nodes, path.stat().st_size / 2**20)
            print(f"{name:36s} {nodes:3d} nodes, {path.stat().st_size / 2**20:7.1f} MiB, max |graph - model| {err:.1e}; "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(ops.items(), key=lambda t: -t[1])[:8])}", flush=True)
        for name in (base, "plain DeepFM (full table)", "compact (element gather)"):
            if name in paths:
                top = profile_ops(paths[name], x.numpy(), 1, 5, work)
                print(f"profile {name}, batch {BATCH}, 1 thread: " + ", ".join(f"{op} {share:.0%}" for op, share in top[:6]), flush=True)
        for threads in (int(t) for t in args.threads.split(",")):
            scorers = {name: onnx_scorer(path, threads) for name, path in paths.items()}
            res = time_trials(scorers, single, x.numpy(), args.trials, args.batches)
            base_ms = statistics.median(res[base]["ms"])
            base_rate = statistics.median(res[base]["rate"])
            print(f"threads {threads}: graph | batch-1 ms median [min..max] | samples/s at {BATCH} median [min..max] | "
                  f"compact speed-up at 1 / at {BATCH}")
            for name, r in res.items():
                ms, rate = statistics.median(r["ms"]), statistics.median(r["rate"])
                print(f"  {name:36s} {ms:7.3f} [{min(r['ms']):.3f}..{max(r['ms']):.3f}]  {rate:>9,.0f} "
                      f"[{min(r['rate']):,.0f}..{max(r['rate']):,.0f}]  {ms / base_ms:5.2f}x  {base_rate / rate:5.2f}x", flush=True)
            for name, r in res.items():  # per trial, the graphs ran back to back: paired ratios are steadier under load
                at1 = [m / b for m, b in zip(r["ms"], res[base]["ms"], strict=True)]
                at_big = [b / v for v, b in zip(r["rate"], res[base]["rate"], strict=True)]
                print(f"  paired per trial, {name:36s} at 1 {statistics.median(at1):.2f}x [{min(at1):.2f}..{max(at1):.2f}]  "
                      f"at {BATCH} {statistics.median(at_big):.2f}x [{min(at_big):.2f}..{max(at_big):.2f}]", flush=True)
            for name, r in res.items():
                ms, rate = statistics.median(r["ms"]), statistics.median(r["rate"])
                table.append(f"| {threads} | {name} | {info[name][0]} | {info[name][1]:.1f} | {ms:.3f} [{min(r['ms']):.3f}..{max(r['ms']):.3f}] | "
                             f"{rate:,.0f} [{min(r['rate']):,.0f}..{max(r['rate']):,.0f}] | {ms / base_ms:.2f}x | {base_rate / rate:.2f}x |")
    load = os.getloadavg()
    print(f"\nmachine: {machine()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min); {now()}")
    print("| threads | graph | nodes | MiB | batch-1 ms | samples/s, batch 4096 | compact speed-up, batch 1 | at 4096 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
