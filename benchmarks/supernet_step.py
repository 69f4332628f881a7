"""Benchmark: what OptEmbed's masks cost per training step, against a plain model of the same shape.

The same DeepFM (Criteo-shaped synthetic data, 39 fields, ~1M table rows) is trained in four
modes - ``none`` (the plain model: no row mask, no widths), ``prune-only`` (row mask and its
threshold regulariser), ``dims-only`` (random per-sample widths) and ``optembed`` (both, the
supernet) - one training step at a time through the project's one trainer (forward, loss,
backward, every optimizer step). Trials are interleaved (mode A, B, C, D, A, B, ...) so a busy
spell of a shared machine hits every mode alike; the median of the trials is reported with the
spread, and the ratio of each mode's samples/s to the plain model's.

The embedding table uses row-wise sparse Adagrad by default (``--embedding-optimizer``) so that the
dense update of the whole table - the same in every mode - does not hide the masks' cost.

Usage::

    python benchmarks/supernet_step.py                  # D = 64, MLP 1024,512,256, batch 2,048, CPU
    python benchmarks/supernet_step.py --device cuda --batch 16384 --results
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
from _common import CARDINALITIES, criteo_shaped, machine, now, write_section  # noqa: E402

from optembed.models.config import ModelConfig  # noqa: E402
from optembed.models.registry import build_model  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from optembed.training.host import tune_allocator  # noqa: E402
from optembed.training.trainer import Trainer  # noqa: E402

MODES = ("none", "prune-only", "dims-only", "optembed")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per trial")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="1024,512,256")
    ap.add_argument("--embedding-optimizer", default="rowwise-adagrad")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator thresholds alone (the optembed command raises them)")
    ap.add_argument("--results", action="store_true", help="write the RESULTS.md section")
    args = ap.parse_args(argv)
    tuned = False if args.default_allocator else tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = criteo_shaped(args.rows, seed=1).to(device)
    cfg = ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=tuple(int(v) for v in args.mlp.split(",")))
    trainers: dict[str, tuple[Trainer, list]] = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = build_model(CARDINALITIES, cfg, mode).to(device).train()
        train_cfg = TrainConfig(batch_size=args.batch, embedding_optimizer=args.embedding_optimizer)
        trainer = Trainer(model, train_cfg, device)
        batches = [b for _, b in zip(range(args.steps), data.batches(args.batch, device, trainer.generator, shuffle=True))]
        for xb, yb in batches[:3]:  # warm-up
            trainer.step(xb, yb)
        trainers[mode] = (trainer, batches)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for trial in range(args.trials):
        for mode in MODES:
            trainer, batches = trainers[mode]
            sync(device)
            t0 = time.perf_counter()
            for xb, yb in batches:
                trainer.step(xb, yb)
            sync(device)
            times[mode].append(args.steps * args.batch / (time.perf_counter() - t0))
        print(f"trial {trial + 1}: " + ", ".join(f"{m} {times[m][-1]:,.0f}/s" for m in MODES), file=sys.stderr)
    base = statistics.median(times["none"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`python benchmarks/supernet_step.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {now()}: "
        f"{machine()}; device `{device}`, {torch.get_num_threads()} threads, load average {load:.1f} at the end; "
        f"allocator thresholds {'raised (as the command does)' if tuned else 'glibc defaults'}.",
        f"DeepFM D = {args.dim}, MLP {args.mlp} with BatchNorm, batch {args.batch:,}, embeddings "
        f"`{args.embedding_optimizer}`, Adam elsewhere; {args.steps} steps per trial, {args.trials} interleaved "
        "trials; samples/s median [min..max]; paired: the median over trials of the mode's samples/s over the "
        "plain model's in the same trial.",
        "",
        "| mode | train samples/s | vs plain model | paired |",
        "|---|---|---:|---:|",
    ]
    for mode in MODES:
        t = times[mode]
        med = statistics.median(t)
        paired = statistics.median(a / b for a, b in zip(t, times["none"], strict=True))
        lines.append(f"| {mode} | {med:,.0f} [{min(t):,.0f}..{max(t):,.0f}] | {med / base:.2f}x | {paired:.2f}x |")
    body = "\n".join(lines)
    print(body)
    if args.results:
        write_section(f"supernet step vs plain model ({device.type})", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
