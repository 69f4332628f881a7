"""Benchmark: ``compress`` on an Original and an OptEmbed model of synthetic Criteo-format data.

1. ``optembed synth`` data -> preprocess -> the chain (Original and OptEmbed, D = 64);
2. ``compress`` of both retrained models (product quantization, fine-tuning with codes fixed);
3. memory against the dense float32 Original table and AUC against the uncompressed model;
4. the quantizer's training time on one 1M-row x 64 field (random rows, Zipf counts).

Writes the ``## compress`` section of RESULTS.md.

Usage::

    python benchmarks/compress.py                      # CPU-sized defaults (~10 minutes on 2 cores)
    python benchmarks/compress.py --device cuda --rows 2000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, now, write_section  # noqa: E402

from optembed.data.preprocess import PreprocessConfig  # noqa: E402
from optembed.data.synth import generate  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.quantization import QuantizerConfig, fit_quantizer  # noqa: E402
from optembed.quantization.finetune import FinetuneConfig  # noqa: E402
from optembed.training.config import TrainConfig  # noqa: E402
from optembed.training.device import resolve_device  # noqa: E402
from pipelines import chain, compress  # noqa: E402
from pipelines.store import Store  # noqa: E402

AUC_TOLERANCE = 0.002
TARGET_ORIGINAL = 50.0
TARGET_OPTEMBED = 100.0


def quantizer_time(rows: int, dim: int, cfg: QuantizerConfig, device: torch.device) -> float:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(rows, dim, generator=g) * 0.05
    counts = (1e6 / torch.arange(1, rows + 1).double()).round()  # Zipf(1) traffic
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit_quantizer(table, counts, cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic Criteo rows")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="256,128")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--quantizer-steps", type=int, default=150)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--min-rows", type=int, default=1000)
    ap.add_argument("--timing-rows", type=int, default=1_000_000, help="rows of the field timed alone (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    mlp = tuple(int(v) for v in args.mlp.split(","))
    qcfg = QuantizerConfig(groups=args.groups, codebook=args.codebook, steps=args.quantizer_steps)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth.txt"
        generate(data, args.rows, fmt="criteo", seed=0)
        store = Store(Path(tmp) / "artifacts")
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, alpha=1e-4)
        cfg = chain.ChainConfig(
            data=data, preprocess=PreprocessConfig(), model=ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=mlp),
            supernet=train, retrain=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
            search={"population": 20, "generations": 5, "topk": 8}, variants=("original", "optembed"),
            device=str(device), latency=False,
        )
        done = chain.run(cfg, store)
        results = []
        for variant in ("original", "optembed"):
            source = done[f"retrain {variant}"]
            m = compress.run(
                compress.CompressStage(
                    source=source.fingerprint, quantizer=qcfg, min_rows=args.min_rows,
                    finetune=FinetuneConfig(epochs=args.finetune_epochs, batch_size=args.batch_size), device=str(device),
                ),
                store,
            )
            results.append((variant, source.metrics, m.metrics))
            print(variant, {k: m.metrics[k] for k in ("source_test_auc", "test_auc", "embedding_bytes", "ratio_vs_original")})
    pipeline_s = time.perf_counter() - started
    timing = quantizer_time(args.timing_rows, args.dim, qcfg, device) if args.timing_rows else None
    print(f"quantizer on {args.timing_rows:,} x {args.dim}: {timing}")
    if not args.no_write:
        write_section("compress", render(args, device, results, timing, pipeline_s))
        print("wrote the '## compress' section of benchmarks/RESULTS.md")


def render(args: argparse.Namespace, device: torch.device, results: list, timing: float | None, seconds: float) -> str:
    lines = [
        f"`optembed compress` (groups {args.groups}, codebook {args.codebook} -> uint8 codes, {args.quantizer_steps} "
        f"quantizer steps per field at most, fields over {args.min_rows:,} rows coded, {args.finetune_epochs} fine-tuning "
        f"epochs with codes fixed) on the retrained Original and OptEmbed DeepFM (D = {args.dim}, MLP {args.mlp}, "
        f"{args.epochs} epochs) of {args.rows:,} synthetic Criteo rows (`optembed synth`, seed 0).",
        "",
        f"- Machine: {machine()}; device `{device}`. Date: {now()}. Whole run: {seconds:.0f} s.",
        f"- Command: `python benchmarks/compress.py {' '.join(sys.argv[1:])}`",
        "",
        "| source | rows kept | coded fields | source test AUC | compressed test AUC | AUC change | embedding bytes | "
        "dense Original bytes | ratio vs Original | ratio vs source tables | id remap bytes | ratio incl. remap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for variant, src, m in results:
        incl = m["original_embedding_bytes"] / (m["embedding_bytes"] + m["remap_bytes"])
        lines.append(
            f"| {variant} | {src['kept_rows']:,} / {src['total_rows']:,} | {m['coded_fields']} / {m['fields']} | "
            f"{m['source_test_auc']:.5f} | {m['test_auc']:.5f} | {m['auc_delta']:+.5f} | {m['embedding_bytes']:,} | "
            f"{m['original_embedding_bytes']:,} | {m['ratio_vs_original']:.1f}x | {m['ratio_vs_source']:.1f}x | "
            f"{m['remap_bytes']:,} | {incl:.1f}x |"
        )
        target = TARGET_ORIGINAL if variant == "original" else TARGET_OPTEMBED
        ok_ratio = m["ratio_vs_original"] >= target
        ok_auc = abs(m["auc_delta"]) <= AUC_TOLERANCE or m["auc_delta"] > 0
        verdicts.append(
            f"- **{'PASS' if ok_ratio and ok_auc else 'FAIL'}** — {variant} + compress: embedding memory "
            f"{m['ratio_vs_original']:.1f}x smaller than the dense float32 Original table (target {target:.0f}x), "
            f"test AUC change {m['auc_delta']:+.5f} against its uncompressed model (target: within {AUC_TOLERANCE})."
        )
    lines += ["", "Targets:", "", *verdicts, ""]
    lines += [
        "Embedding bytes = codes + codebooks + the float tables of the fields left uncoded (exact, from the "
        "tensors held). The id remap (original id -> kept row, int32) of a pruned model is counted apart; an "
        "Original model needs none.",
        "",
    ]
    if timing is not None:
        lines.append(
            f"Quantizer training time for one {args.timing_rows:,}-row x {args.dim} field (groups {args.groups}, "
            f"codebook {args.codebook}, {min(args.quantizer_steps, 10 * args.timing_rows // 4096)} steps of 4,096 rows "
            f"+ encoding every row): **{timing:.1f} s on {device}**."
            + ("" if device.type == "cuda" else " GPU: not measured (no GPU was lent to this run).")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
