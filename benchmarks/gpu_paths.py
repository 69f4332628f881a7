"""Benchmark: the three training paths that only a CUDA device shows, with their baselines.

``staging``: a Criteo-shaped split kept in pinned host memory (as ``SplitTensors.to`` keeps a
split that does not fit on the device), one shuffled pass of batches fed to the device: through
the ring of pinned buffers (:mod:`optembed.data.pinned`), through the older pageable gather
(``x[idx]`` then a copy that waits for the host), and from device-resident data (the bound).
First the staged batches are checked equal to the device-resident ones of the same generator.
Then the DeepFM supernet step (optembed mode) is timed on each feed.

``compile``: ``Trainer(compile=True)`` with an AutoField and an AutoDim search embedder: frames
compiled by dynamo over ``--compile-steps`` steps (1 is the target: the Gumbel temperature is a
tensor, so no step's new value recompiles), seconds of the first step, samples/s after it
against the eager step, and the temperature after the steps against the schedule's formula
(0 in eager mode; a compiler that fuses the schedule's multiply and subtract may leave one
float64 rounding step, ~1e-16).

``freq-lr``: one embedding step of a ``--table-rows`` x ``--dim`` table with the frequency-
adaptive scale (:class:`RowLRScale`): dense Adam plain, scaled by the older whole-table formula
(clone, subtract, multiply, add), scaled now (snapshot copy and one ``lerp``); SparseAdam plain
and scaled (the batch's rows only). Milliseconds per step; the two dense scalings' tables are
compared after the steps.

Usage::

    python benchmarks/gpu_paths.py --device cuda                  # what gpu_checks.sh runs
    python benchmarks/gpu_paths.py --device cpu --rows 200000 --table-rows 200000 --backend eager   # a CPU dry run
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.data import pinned  # noqa: E402
from optembed.data.tensors import SplitTensors  # noqa: E402
from optembed.embedders.autodim import AutoDimEmbedder  # noqa: E402
from optembed.embedders.autofield import AutoFieldEmbedder  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.optimizers import RowLRScale  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# -- staging -------------------------------------------------------------------------------
def pageable_feed() -> object:
    """Patch the ring out: host batches gathered into pageable memory, as before it."""
    saved = pinned.host_staging
    pinned.host_staging = lambda device: None  # type: ignore[assignment]
    return saved


def feeds(host: SplitTensors, resident: SplitTensors, device: torch.device, batch: int,
          seed: int) -> dict[str, Callable[[], Iterator[tuple[Tensor, Tensor]]]]:
    def make(split: SplitTensors, ring: bool) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
        def it() -> Iterator[tuple[Tensor, Tensor]]:
            gen = torch.Generator(device=device).manual_seed(seed)
            saved = None if ring else pageable_feed()
            try:
                yield from split.batches(batch, device, gen, shuffle=True)
            finally:
                if saved is not None:
                    pinned.host_staging = saved  # type: ignore[assignment]
        return it

    return {"pinned ring": make(host, True), "pageable gather": make(host, False), "device-resident": make(resident, True)}


def staging(args: argparse.Namespace, device: torch.device) -> list[str]:
    data = criteo_shaped(args.rows, seed=1)
    pin = device.type == "cuda"
    host = SplitTensors(data.x.pin_memory() if pin else data.x, data.y.pin_memory() if pin else data.y)
    resident = SplitTensors(data.x.to(device), data.y.to(device))
    ways = feeds(host, resident, device, args.batch_size, seed=7)
    lines = [f"Host staging: {args.rows:,} Criteo-shaped rows (39 int32 fields) kept in "
             f"{'pinned ' if pin else ''}host memory, batch {args.batch_size:,}, shuffled."]
    same = all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for _, a, b in zip(range(5), ways["pinned ring"](), ways["device-resident"](), strict=False)
    )
    lines.append(f"- the ring's first 5 batches equal the device-resident gather of the same generator: {same}")
    bytes_per_row = 4 * (data.x.shape[1] + 1)
    lines += ["", "| feed | one pass: batches/s | GB/s | train step samples/s |", "|---|---:|---:|---:|"]
    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    for name, make in ways.items():
        count = 0

        def one_pass(make: Callable[[], Iterator[tuple[Tensor, Tensor]]] = make) -> None:
            nonlocal count
            for xb, _ in make():
                xb.sum()  # a device op on every batch, as a step reads it
                count += 1

        seconds = timed(device, one_pass)
        rate = count / seconds
        torch.manual_seed(0)
        model = build_model(CARDINALITIES, cfg, "optembed").to(device)
        trainer = Trainer(model, TrainConfig(batch_size=args.batch_size, lr=1e-3 * args.batch_size / 2048), device)
        batches = make()
        for _ in range(5):
            trainer.step(*next(batches))

        def steps(batches: Iterator[tuple[Tensor, Tensor]] = batches) -> None:
            for _ in range(args.steps):
                trainer.step(*next(batches))

        samples = args.steps * args.batch_size / timed(device, steps)
        batches.close()
        lines.append(f"| {name} | {rate:,.1f} | {rate * args.batch_size * bytes_per_row / 1e9:.2f} | {samples:,.0f} |")
        print(lines[-1], flush=True)
        del trainer, model
    return lines


# -- compile -------------------------------------------------------------------------------
def compile_check(args: argparse.Namespace, device: torch.device) -> list[str]:
    cfg = ModelConfig("deepfm", embed_dim=16, mlp_dims=(256, 128))
    data = criteo_shaped(args.compile_steps * args.compile_batch + 1, seed=2).to(device)
    lines = [
        f"`--compile` with the Gumbel search embedders: DeepFM D=16, MLP 256,128, batch {args.compile_batch:,}, "
        f"{args.compile_steps} steps, backend {args.backend}.", "",
        "| embedder | frames compiled | graphs | first step (s) | compiled samples/s | eager samples/s | temperature - formula |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    compile_fn = torch.compile
    if args.backend != "inductor":  # a dry run without a compiler: the trainer's torch.compile on another backend
        torch.compile = functools.partial(compile_fn, backend=args.backend)  # type: ignore[assignment]
    try:
        for kind, make in (("autofield", AutoFieldEmbedder), ("autodim", AutoDimEmbedder)):
            lines.append(compile_row(args, device, kind, make, cfg, data))
            print(lines[-1], flush=True)
    finally:
        torch.compile = compile_fn  # type: ignore[assignment]
    return lines


def compile_row(args: argparse.Namespace, device: torch.device, kind: str, make: type, cfg: ModelConfig,
                data: SplitTensors) -> str:
    """One embedder's row of the compile table: the compiled steps, then the same eager."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    rates: dict[bool, float] = {}
    frames = graphs = 0
    first, off = 0.0, float("nan")
    for compiled in (True, False):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        emb = make(CARDINALITIES, 16, temperature=1.0, temperature_decay=1e-3, min_temperature=0.01)
        model = build_model(CARDINALITIES, cfg, embedder=emb).to(device)
        trainer = Trainer(model, TrainConfig(batch_size=args.compile_batch, compile=compiled), device)
        model.train()
        batches = data.batches(args.compile_batch, device, trainer.generator, shuffle=True)
        took = timed(device, lambda: trainer.step(*next(batches)))
        rest = args.compile_steps - 1
        seconds = timed(device, lambda: [trainer.step(*next(batches)) for _ in range(rest)])
        rates[compiled] = rest * args.compile_batch / seconds
        if compiled:
            first = took
            frames, graphs = counters["frames"]["total"], counters["stats"]["unique_graphs"]
            g = emb.gumbel
            want = max(0.01, 1.0 - 1e-3 * args.compile_steps)
            off = abs(g.current_temperature() - want) if g.count() == args.compile_steps else float("inf")
        del trainer, model, batches
    return f"| {kind} | {frames} | {graphs} | {first:.1f} | {rates[True]:,.0f} | {rates[False]:,.0f} | {off:.1e} |"


# -- freq-lr -------------------------------------------------------------------------------
class WholeTableScale:
    """The older dense scaling, the baseline: a fresh clone, then subtract, multiply, add."""

    def __init__(self, optimizer: torch.optim.Optimizer, scales: dict[nn.Parameter, Tensor]) -> None:
        self.optimizer, self.scales = optimizer, scales

    @torch.no_grad()
    def step(self) -> None:
        saved = [(p, s, p.detach().clone()) for p, s in self.scales.items()]
        self.optimizer.step()
        for p, s, old in saved:
            p.sub_(old).mul_(s.unsqueeze(1)).add_(old)


def freq_lr(args: argparse.Namespace, device: torch.device) -> list[str]:
    rows, dim = args.table_rows, args.dim
    gen = torch.Generator(device="cpu").manual_seed(3)
    w0 = (torch.randn(rows, dim, generator=gen) * 0.01).to(device)
    scale = torch.rand(rows, generator=gen).to(device)
    ids = [torch.randint(0, rows, (args.batch_size * 39,), generator=gen).to(device) for _ in range(4)]
    upstream = torch.randn(args.batch_size * 39, dim, generator=gen).to(device)
    fused = device.type == "cuda" or None
    lines = [
        f"`--freq-lr` scaling of one embedding step: table {rows:,} x {dim}, {args.batch_size * 39:,} ids a step "
        f"(batch {args.batch_size:,} x 39 fields); {args.freq_steps} timed steps after 3.", "",
        "| step | ms per step |", "|---|---:|",
    ]
    finals: dict[str, Tensor] = {}
    cases: list[tuple[str, bool, Callable[[nn.Parameter], object]]] = [
        ("dense Adam", False, lambda w: torch.optim.Adam([w], lr=1e-3, weight_decay=1e-4, fused=fused)),
        ("dense Adam + whole-table scale (before)", False,
         lambda w: WholeTableScale(torch.optim.Adam([w], lr=1e-3, weight_decay=1e-4, fused=fused), {w: scale})),
        ("dense Adam + RowLRScale (snapshot + lerp)", False,
         lambda w: RowLRScale(torch.optim.Adam([w], lr=1e-3, weight_decay=1e-4, fused=fused), {w: scale})),
        ("SparseAdam", True, lambda w: torch.optim.SparseAdam([w], lr=1e-3)),
        ("SparseAdam + RowLRScale (batch rows)", True, lambda w: RowLRScale(torch.optim.SparseAdam([w], lr=1e-3), {w: scale})),
    ]
    for name, sparse, make in cases:
        w = nn.Parameter(w0.clone())
        opt = make(w)
        k = 0

        def one() -> None:
            nonlocal k
            w.grad = None
            (F.embedding(ids[k % len(ids)], w, sparse=sparse) * upstream).sum().backward()
            opt.step()  # type: ignore[attr-defined]
            k += 1

        for _ in range(3):
            one()
        ms = 1000 * timed(device, lambda: [one() for _ in range(args.freq_steps)]) / args.freq_steps
        finals[name] = w.detach()
        lines.append(f"| {name} | {ms:.2f} |")
        print(lines[-1], flush=True)
        del opt
    a, b = finals["dense Adam + whole-table scale (before)"], finals["dense Adam + RowLRScale (snapshot + lerp)"]
    lines.append(f"\nDense scalings after the same steps: max |difference| {float((a - b).abs().max()):.2e} "
                 f"(table values ~{float(a.abs().mean()):.1e}).")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="staging,compile,freq-lr", help="comma-separated parts")
    ap.add_argument("--rows", type=int, default=2_000_000, help="staging: rows kept on the host")
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=50, help="staging: timed train steps per feed")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--compile-steps", type=int, default=60)
    ap.add_argument("--compile-batch", type=int, default=4096)
    ap.add_argument("--backend", default="inductor", help="compile: the dynamo backend (eager for a dry run)")
    ap.add_argument("--table-rows", type=int, default=5_000_000)
    ap.add_argument("--freq-steps", type=int, default=30)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    parts = set(args.only.split(","))
    head = [f"- Machine: {machine()}; device `{device}`. Date: {now()}.",
            f"- Command: `python benchmarks/gpu_paths.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    for part, run in (("staging", staging), ("compile", compile_check), ("freq-lr", freq_lr)):
        if part not in parts:
            continue
        body = "\n".join(head + run(args, device))
        print(body, flush=True)
        if not args.no_write:
            write_section(f"GPU paths: {part} ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
