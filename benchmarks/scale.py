"""Scaling benchmarks: the streaming data path against the in-memory one, and ``--nproc`` 1 vs 2.

(a) ``--rows 2000000,20000000``: a Criteo-shaped encoded split (39 int32 fields + label, row
groups of 122,880 rows as ``preprocess`` writes them) is trained on by a supernet-style DeepFM
(optembed mode: learned thresholds, sampled widths) in a fresh process per (rows, path):
``--steps`` timed optimizer steps (samples/s), then the rest of the epoch's batches are read
without training, so the peak RSS (``ru_maxrss``) covers a whole epoch's pass over the data.
``memory`` reads the split whole (``read_split``); ``stream`` reads it in chunks
(``StreamSplit``, ``--shuffle-buffer`` rows).

(b) ``--nproc-rows N``: ``optembed synth`` + ``preprocess`` of N rows, then one ``supernet`` epoch
with ``--nproc 1`` and ``--nproc 2`` (gloo on the CPU); samples/s from the manifests.

Usage: python benchmarks/scale.py [--device cpu|cuda] [--rows 2000000] [--steps 300] [--nproc-rows 200000]
Results go to the "scale" sections of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GROUP_ROWS = 122_880


def write_split(path: Path, rows: int) -> None:
    """A Criteo-shaped encoded split, written block by block (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from _common import CARDINALITIES, criteo_shaped

    names = [f"f{i}" for i in range(len(CARDINALITIES))]
    schema = pa.schema([("label", pa.int8()), *((n, pa.int32()) for n in names)])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        done, block = 0, 10 * GROUP_ROWS
        while done < rows:
            n = min(block, rows - done)
            s = criteo_shaped(n, seed=done)
            cols = [pa.array(s.y.numpy().astype("int8"))] + [pa.array(s.x[:, j].numpy().astype("int32")) for j in range(len(names))]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=GROUP_ROWS)
            done += n


def child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process; prints one JSON line."""
    import torch

    from _common import CARDINALITIES
    from optembed.data.stream import StreamSplit
    from optembed.data.tensors import read_split
    from optembed.models.config import ModelConfig
    from optembed.models.registry import build_model
    from optembed.training.config import TrainConfig
    from optembed.training.trainer import Trainer

    device = torch.device(args.device)
    names = [f"f{i}" for i in range(len(CARDINALITIES))]
    started = time.perf_counter()
    if args.path_kind == "memory":
        split = read_split(Path(args.file), names).to(device)
    else:
        split = StreamSplit(Path(args.file), names, buffer_rows=args.shuffle_buffer)
    load_s = time.perf_counter() - started
    torch.manual_seed(0)
    model = build_model(CARDINALITIES, ModelConfig("deepfm", embed_dim=16, mlp_dims=(128, 64)), "optembed")
    trainer = Trainer(model, TrainConfig(batch_size=args.batch_size, seed=1), device)
    steps, trained, t0, t_train = 0, 0, None, 0.0
    passed = 0
    pass_start = time.perf_counter()
    for xb, yb in split.batches(args.batch_size, device, trainer.generator, shuffle=True):
        if steps < args.steps:
            if steps == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            trainer.step(xb, yb)
            steps += 1
            if steps > args.warmup:
                trained += xb.shape[0]
            if steps == args.steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t_train = time.perf_counter() - (t0 or time.perf_counter())
        passed += xb.shape[0]
    pass_s = time.perf_counter() - pass_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "rows": passed, "path": args.path_kind, "peak_rss_gb": rss / 2**30, "load_s": load_s,
        "train_samples_per_s": trained / t_train if t_train else 0.0, "epoch_pass_s": pass_s,
    }))


def measure(file: Path, kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--path-kind", kind, "--file", str(file), "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--shuffle-buffer", str(args.shuffle_buffer)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def streaming(args: argparse.Namespace, work: Path) -> str:
    from _common import machine, now

    rows_list = [int(r) for r in args.rows.split(",")]
    lines = [
        f"{now()}, {machine()}, device {args.device}; {load_line()} at the start.",
        f"DeepFM D=16, MLP 128,64, optembed mode, batch {args.batch_size}; {args.steps - args.warmup} timed steps "
        f"after {args.warmup} warm-up steps, then the rest of the epoch read without training; shuffle buffer "
        f"{args.shuffle_buffer:,} rows; one fresh process per line.",
        "",
        "| rows | path | peak RSS (GB) | load (s) | train samples/s | epoch pass (s) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for rows in rows_list:
        file = work / f"train-{rows}.parquet"
        if not file.exists():
            write_split(file, rows)
        for kind in args.modes.split(","):
            r = measure(file, kind, args)
            print(r, flush=True)
            lines.append(
                f"| {rows:,} | {kind} | {r['peak_rss_gb']:.2f} | {r['load_s']:.1f} | {r['train_samples_per_s']:,.0f} | "
                f"{r['epoch_pass_s']:.1f} |"
            )
    lines.append(f"\n{load_line()} at the end.")
    return "\n".join(lines)


def nproc_scaling(args: argparse.Namespace, work: Path) -> str:
    from _common import machine, now

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPTEMBED_NO_PROGRESS": "1"}
    data = work / "nproc.txt"
    store = work / "artifacts"
    cli = [sys.executable, "-m", "optembed_cli"]
    subprocess.run([*cli, "synth", str(data), "--rows", str(args.nproc_rows)], check=True, env=env, capture_output=True)
    subprocess.run([*cli, "preprocess", str(data), "--artifacts", str(store)], check=True, env=env, capture_output=True)
    lines = [
        f"{now()}, {machine()}; {load_line()} at the start.",
        f"`optembed supernet --epochs 1 --embed-dim 16 --mlp 128,64 --batch-size {args.batch_size} --device cpu` "
        f"on {args.nproc_rows:,} synthetic rows (80% train), gloo; samples/s of the epoch from the manifest.",
        "",
        "| --nproc | train samples/s | wall (s) |",
        "|---:|---:|---:|",
    ]
    for n in (1, 2):
        start = time.perf_counter()
        out = subprocess.run(
            [*cli, "supernet", "--epochs", "1", "--embed-dim", "16", "--mlp", "128,64", "--batch-size",
             str(args.batch_size), "--device", "cpu", "--nproc", str(n), "--force", "--json", "--artifacts", str(store)],
            check=True, env=env, capture_output=True, text=True,
        )
        wall = time.perf_counter() - start
        m = json.loads(out.stdout)
        print(n, m["metrics"]["train_samples_per_s"], flush=True)
        lines.append(f"| {n} | {m['metrics']['train_samples_per_s']:,.0f} | {wall:.0f} |")
    lines.append(f"\n{load_line()} at the end.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="2000000")
    p.add_argument("--modes", default="memory,stream")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--shuffle-buffer", type=int, default=1 << 20)
    p.add_argument("--nproc-rows", type=int, default=0, help="also run the --nproc 1/2 comparison on this many rows")
    p.add_argument("--work", default=None, help="folder for the generated data (default: a temporary one)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path-kind", default="memory", help=argparse.SUPPRESS)
    p.add_argument("--file", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from _common import write_section

    with tempfile.TemporaryDirectory(prefix="optembed-scale-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.rows:
            body = streaming(args, work)
            print(body)
            if not args.no_write:
                write_section(f"scale: streaming vs in-memory ({args.device})", body)
        if args.nproc_rows:
            body = nproc_scaling(args, work)
            print(body)
            if not args.no_write:
                write_section("scale: --nproc 1 vs 2 (cpu)", body)


if __name__ == "__main__":
    main()
