"""The ``compress`` stage: product-quantize a retrained model's large tables, then fine-tune.

Source: a ``retrain`` artifact (OptEmbed, OptEmbed-E/-D or the Original model). Its compact
model is quantized field by field (:func:`quantize_compact`) with popularity weights from the
preprocess vocabulary counts, fine-tuned with the codes fixed, and saved as a self-describing
quantized model. The metrics compare embedding bytes with the dense float32 Original table
(all rows x D x 4) and with the source's compact tables.

A run that would code no field (every table has ``min_rows`` rows or fewer, or its codes would
not be smaller) stops before any work with one line naming the largest field and the
``--min-rows`` that would code fields: its result would be the source model with a fine-tuning
epoch, not a compressed model. Nothing is published, and no cached artifact is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.errors import ConfigError
from optembed.models.compact import load_compact
from optembed.progress import NULL, Reporter
from optembed.models.compact import CompactModel
from optembed.quantization.compress import (
    check_jobs, compact_row_counts, field_decision, field_shapes, quantize_compact,
)
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig, finetune
from optembed.quantization.model import save_quantized
from optembed.training.device import resolve_device
from optembed.training.evaluate import evaluate
from optembed.validation import batch_bytes, check_memory, check_positive
from pipelines.data import load_dataset, read_id_counts, read_schema
from pipelines.readers import resolve_chain
from pipelines.calibration import record_calibration
from pipelines.stage import execute
from pipelines.store import Manifest, Store

STAGE = "compress"
VERSION = 2  # 2: per-field codebook sizes, id remaps as keep bits


@dataclass
class CompressStage:
    source: str | None = None  # a retrain artifact; None = the newest one
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    min_rows: int = 10_000
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: str = "auto"
    jobs: int = 0  # fields fitted at once (0: one per core on the CPU); not a parameter (same result up to rounding)
    force: bool = False

    def validate(self) -> None:
        self.quantizer.validate()
        check_jobs(self.jobs)
        if self.min_rows < 0:
            raise ConfigError(f"--min-rows must not be negative, got {self.min_rows}")
        ft = self.finetune
        if ft.epochs < 0:
            raise ConfigError(f"--finetune-epochs must be at least 0, got {ft.epochs}")
        check_positive("--finetune-lr", ft.lr)
        if ft.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {ft.batch_size}")
        if ft.eval_batch_size < 1:
            raise ConfigError(f"the evaluation batch size must be at least 1, got {ft.eval_batch_size}")
        if ft.patience < 0:
            raise ConfigError(f"--patience must not be negative (0: never stop early), got {ft.patience}")


def check_finetune_memory(ft: FinetuneConfig, source: Manifest, n_fields: int, device: torch.device) -> None:
    """Refuse fine-tuning batch sizes whose activations alone cannot fit the device."""
    model = source.params.get("model") or {}
    dim = int(model.get("embed_dim") or 1)
    mlp = [int(d) for d in model.get("mlp_dims") or ()]
    estimate = max(
        batch_bytes(ft.batch_size, n_fields, dim, mlp, training=True),
        batch_bytes(ft.eval_batch_size, n_fields, dim, mlp, training=False),
    )
    check_memory(f"fine-tuning with --batch-size {ft.batch_size:,}", estimate, device, "use a smaller --batch-size")


def split_counts(counts: torch.Tensor, cardinalities: list[int]) -> list[torch.Tensor]:
    return list(torch.split(counts, cardinalities))


def require_coded_field(compact: CompactModel, cfg: QuantizerConfig, min_rows: int) -> None:
    """Raise :class:`ConfigError` when no field of ``compact`` would be coded (see the module doc)."""
    shapes = field_shapes(compact)
    if any(not field_decision(rows, width, cfg, min_rows)[1] for _, rows, width in shapes):
        return
    name, rows, _ = max(shapes, key=lambda s: s[1])
    # fields that a lower floor would code, largest first
    codable = sorted(((n, r) for n, r, w in shapes if not field_decision(r, w, cfg, 0)[1]), key=lambda s: -s[1])
    head = f"compress would code no field: no field has more than --min-rows {min_rows} rows"
    if rows > min_rows:
        head += " and codes smaller than its float table"
    head += f" (the largest, {name}, has {rows:,})"
    if not codable:
        hint = (f"no --min-rows would code one with --groups/--sub-dim and --codebook-share {cfg.codebook_share:g} "
                "(fewer groups or a larger share might)")
    elif len(codable) == 1 or codable[-1][1] == codable[0][1]:
        hint = f"--min-rows {codable[0][1] - 1} would code {', '.join(n for n, _ in codable)}"
    else:
        hint = (f"--min-rows {codable[0][1] - 1} would code {codable[0][0]}, "
                f"--min-rows {codable[-1][1] - 1} all {len(codable)} fields that can be coded")
    raise ConfigError(f"{head}; {hint}; nothing was published")


def run(config: CompressStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    source = store.resolve(config.source, "retrain")
    chain = resolve_chain(store, source)
    pre = chain["preprocess"]
    schema = read_schema(pre)
    cards = [int(f["cardinality"]) for f in schema["fields"]]
    counts = None
    if config.quantizer.popularity != "none":
        counts = split_counts(read_id_counts(pre, purpose="compress --popularity"), cards)
    compact, _ = load_compact(source.output("compact"), "cpu")
    if compact.field_names != [f["name"] for f in schema["fields"]]:
        raise ConfigError(f"retrain artifact {source.fingerprint} does not match its preprocess schema")
    require_coded_field(compact, config.quantizer, config.min_rows)
    device = resolve_device(config.device)
    check_finetune_memory(config.finetune, source, len(cards), device)
    params: dict[str, Any] = {
        "quantizer": config.quantizer.to_dict(),
        "min_rows": config.min_rows,
        "finetune": vars(config.finetune).copy(),
    }
    upstream = {"retrain": source, "preprocess": pre}

    def build(tmp: Path, manifest: Manifest) -> None:
        data = load_dataset(pre, device)
        val, test = data.splits["val"], data.splits["test"]
        before_test = evaluate(compact.to(device), test, device, config.finetune.eval_batch_size)
        compact.cpu()  # Module.to / .cpu move the model in place
        row_counts = compact_row_counts(compact, counts) if counts is not None else None
        started = time.perf_counter()
        model, stats = quantize_compact(
            compact, row_counts, config.quantizer, config.min_rows, device, reporter, jobs=config.jobs
        )
        quantizer_seconds = time.perf_counter() - started
        result = finetune(model, config.finetune, data.splits["train"], val, test, device, reporter)
        best = next(r for r in result.history if r["epoch"] == result.best_epoch)
        fitted = result.history[0]
        mem = model.memory_bytes()
        dim = compact.dim
        original_bytes = sum(cards) * dim * 4
        source_bytes = compact.flat.numel() * compact.flat.element_size()
        save_quantized(tmp / "model.pt", model.cpu(), extra={"source": source.fingerprint, "preprocess": pre.fingerprint,
                                                             "variant": source.metrics.get("variant", "retrain")})
        pq.write_table(pa.Table.from_pylist(stats), tmp / "fields.parquet")
        pq.write_table(pa.Table.from_pylist(result.history), tmp / "curves.parquet")
        manifest.outputs = {"model": "model.pt", "fields": "fields.parquet", "curves": "curves.parquet"}
        coded = [s for s in stats if s["coded"]]
        manifest.metrics = {
            "variant": source.metrics.get("variant", "retrain"),
            "source_test_auc": before_test["auc"],
            "source_test_logloss": before_test["logloss"],
            "quantized_test_auc": fitted.get("test_auc"),
            "test_auc": best.get("test_auc"),
            "test_logloss": best.get("test_logloss"),
            "val_auc": best["val_auc"],
            "val_logloss": best.get("val_logloss"),
            "auc_delta": best.get("test_auc", float("nan")) - before_test["auc"],
            "best_epoch": result.best_epoch,
            "coded_fields": len(coded),
            "field_codebooks": {s["field"]: s["codebook"] for s in coded},
            "fields": len(stats),
            "embedding_bytes": mem["embedding"],
            "code_bytes": mem["codes"],
            "codebook_bytes": mem["codebooks"],
            "float_table_bytes": mem["float_tables"],
            "remap_bytes": mem["remaps"],
            "network_bytes": mem["network"],
            "total_bytes": mem["total"],
            "original_embedding_bytes": original_bytes,
            "source_embedding_bytes": source_bytes,
            "ratio_vs_original": original_bytes / max(mem["embedding"], 1),
            "ratio_vs_source": source_bytes / max(mem["embedding"], 1),
            "quantizer_seconds": round(quantizer_seconds, 3),
            "file_bytes": (tmp / "model.pt").stat().st_size,
            "device": str(device),
        }
        record_calibration(manifest, pre)

    return execute(store, STAGE, VERSION, params, upstream, build, force=config.force)
