"""Benchmark: ``compress`` on an Original and an OptEmbed model of Criteo-scale synthetic data.

1. A Parquet file with Criteo's 39 fields and dictionary sizes (``_criteo_scale``: ~0.95M table
   rows from 1M data rows, min-count 1) -> preprocess -> the chain (Original and OptEmbed,
   D = 64, row-wise Adagrad embeddings);
2. ``compress`` of both retrained models (product quantization with per-field codebook sizes,
   fine-tuning with codes fixed);
3. memory against the dense float32 Original table and AUC against the uncompressed model;
4. the quantizer's training time on one 1M-row x 64 field (random rows, Zipf counts).

Writes the ``## compress`` section of RESULTS.md.

Usage::

    python benchmarks/compress.py                      # CPU-sized defaults (~15 minutes on 2 cores)
    python benchmarks/compress.py --device cuda --rows 4000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, now, write_section  # noqa: E402
import _criteo_scale  # noqa: E402

from optembed.data.preprocess import PreprocessConfig  # noqa: E402
from optembed.models.config import ModelConfig  # noqa: E402
from optembed.quantization import QuantizerConfig, fit_quantizer  # noqa: E402
from optembed.quantization.finetune import FinetuneConfig  # noqa: E402
from optembed.quantization.plan import plan_field  # noqa: E402
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
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic data rows (80%% train)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mlp", default="128,64")
    ap.add_argument("--supernet-epochs", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="retrain epochs (best validation AUC kept)")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--embedding-lr", type=float, default=0.01, help="row-wise Adagrad rate of the tables")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--sub-dim", type=int, default=22, help="columns per sub-vector (0: --groups per field)")
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--codebook-share", type=float, default=1.0)
    ap.add_argument("--popularity", default="linear", help="reconstruction weights: log, linear or none")
    ap.add_argument("--kmeans-iters", type=int, default=25)
    ap.add_argument("--quantizer-steps", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--min-rows", type=int, default=1000)
    ap.add_argument("--timing-rows", type=int, default=1_000_000, help="rows of the field timed alone (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the data and the store here (default: a temporary folder); a rerun with other "
                         "quantizer options reuses the cached chain")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    mlp = tuple(int(v) for v in args.mlp.split(","))
    qcfg = QuantizerConfig(groups=args.groups, codebook=args.codebook, steps=args.quantizer_steps,
                           sub_dim=args.sub_dim or None, codebook_share=args.codebook_share,
                           popularity=args.popularity, kmeans_iters=args.kmeans_iters)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        data = tmp / f"criteo_scale_{args.rows}.parquet"
        if not data.exists():  # an existing file keeps its identity, so cached stages stay valid
            _criteo_scale.write(data, args.rows, seed=0)
        store = Store(Path(tmp) / "artifacts")
        train = dict(batch_size=args.batch_size, embedding_optimizer="rowwise-adagrad", embedding_lr=args.embedding_lr)
        cfg = chain.ChainConfig(
            data=data, preprocess=PreprocessConfig(fmt="parquet", label="label", min_count=1),
            model=ModelConfig("deepfm", embed_dim=args.dim, mlp_dims=mlp),
            supernet=TrainConfig(epochs=args.supernet_epochs, alpha=1e-4, **train),
            retrain=TrainConfig(epochs=args.epochs, patience=1, **train),
            search={"population": 20, "generations": 5, "topk": 8}, variants=("original", "optembed"),
            device=str(device), latency=False,
        )
        done = chain.run(cfg, store)
        print("chain done", round(time.perf_counter() - started), "s", flush=True)
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
            print(variant, {k: m.metrics[k] for k in ("source_test_auc", "test_auc", "embedding_bytes", "ratio_vs_original",
                                                      "code_bytes", "codebook_bytes", "float_table_bytes", "remap_bytes")},
                  round(time.perf_counter() - started), "s", flush=True)
    pipeline_s = time.perf_counter() - started
    timing = None
    if args.timing_rows:
        plan = plan_field(args.timing_rows, args.dim, qcfg)
        timing = quantizer_time(args.timing_rows, args.dim, replace(qcfg, groups=plan.groups, codebook=plan.codebook,
                                                                    sub_dim=None), device)
    print(f"quantizer on {args.timing_rows:,} x {args.dim}: {timing}")
    if not args.no_write:
        write_section("compress", render(args, device, results, timing, pipeline_s))
        print("wrote the '## compress' section of benchmarks/RESULTS.md")


def _breakdown(m: dict) -> str:
    parts = [("codes", m["code_bytes"]), ("codebooks", m["codebook_bytes"]), ("uncoded float tables", m["float_table_bytes"])]
    emb = m["embedding_bytes"]
    inner = ", ".join(f"{name} {v:,} ({100 * v / max(emb, 1):.0f}%)" for name, v in parts)
    sizes = sorted(set(m["field_codebooks"].values()), reverse=True)
    per_k = ", ".join(f"{sum(1 for k in m['field_codebooks'].values() if k == size)} x K={size}" for size in sizes)
    return f"embedding {emb:,} bytes = {inner}; id remap {m['remap_bytes']:,}; coded fields: {per_k}"


def render(args: argparse.Namespace, device: torch.device, results: list, timing: float | None, seconds: float) -> str:
    groups = f"sub-vectors of {args.sub_dim} columns" if args.sub_dim else f"{args.groups} groups"
    lines = [
        f"`optembed compress` ({groups} per field, codebooks of at most {args.codebook} entries sized per field "
        f"(--codebook-share {args.codebook_share:g}: a field's codebooks cost at most that fraction of its codes), "
        f"popularity weights `{args.popularity}`, {args.kmeans_iters} weighted k-means iterations then "
        f"{args.quantizer_steps} quantizer steps per field at most, fields over {args.min_rows:,} rows considered, "
        f"{args.finetune_epochs} fine-tuning epoch(s) with codes fixed) on the retrained Original and OptEmbed DeepFM "
        f"(D = {args.dim}, MLP {args.mlp}, supernet {args.supernet_epochs} epoch(s), retrain up to {args.epochs} epochs, "
        f"row-wise Adagrad tables at lr {args.embedding_lr:g}, Adam elsewhere, batch {args.batch_size:,}).",
        "",
        f"Data: {args.rows:,} rows from `benchmarks/_criteo_scale.py` (seed 0): Criteo's 39 fields with Criteo-like "
        "dictionary sizes (1,046,633 values in all), ids from a 50/50 mixture of a Zipf(1)-like head and a uniform "
        "tail, labels from a planted logit (first-order effects + rank-4 pairwise interactions of two fields in three, "
        "~25% positives); `preprocess --format parquet --min-count 1`, split 80/10/10, so the tables hold every value "
        "seen in the training split.",
        "",
        f"- Machine: {machine()}; device `{device}`. Date: {now()}. Whole run: {seconds:.0f} s.",
        f"- Command: `python benchmarks/compress.py {' '.join(sys.argv[1:])}`",
        "",
        "| source | rows kept | coded fields | source test AUC | compressed test AUC | AUC change | embedding bytes | "
        "dense Original bytes | ratio vs Original | ratio vs source tables | id remap bytes | ratio incl. remap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts, details = [], []
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
            f"{m['ratio_vs_original']:.1f}x smaller than the dense float32 Original table (target {target:.0f}x; "
            f"{incl:.1f}x counting the id remap too), test AUC change {m['auc_delta']:+.5f} against its uncompressed "
            f"model (target: within {AUC_TOLERANCE})."
        )
        details.append(f"- {variant}: {_breakdown(m)}.")
    lines += ["", "Targets:", "", *verdicts, "", "Byte breakdown (exact, from the tensors held):", "", *details, ""]
    lines += [
        "Embedding bytes = codes + codebooks + the float tables of the fields left uncoded. The id remap of a pruned "
        "model (original id -> kept row) is counted apart: a keep bit per original id plus an int32 rank per 256 ids "
        "and two int64 per field (~1.13 bits per id, against 32 for an int32 remap); an Original model needs none.",
        "",
    ]
    if timing is not None:
        plan = plan_field(args.timing_rows, args.dim, QuantizerConfig(
            groups=args.groups, codebook=args.codebook, sub_dim=args.sub_dim or None, codebook_share=args.codebook_share))
        steps = min(args.quantizer_steps, 10 * args.timing_rows // 4096)
        lines.append(
            f"Quantizer training time for one {args.timing_rows:,}-row x {args.dim} field ({plan.groups} groups, "
            f"codebook {plan.codebook}, {steps} steps of 4,096 rows + encoding every row): **{timing:.1f} s on {device}**."
            + ("" if device.type == "cuda" else " GPU: not measured (no GPU was lent to this run).")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
