"""The ``compress`` stage: quantize a retrained model's tables, then (optionally) fine-tune.

Source: a ``retrain`` artifact (OptEmbed, OptEmbed-E/-D or the Original model). Two methods (one table, :mod:`optembed.quantization.methods`):

- ``pq`` (the default): its compact model is product-quantized field by field
  (:func:`quantize_compact`) with popularity weights from the preprocess vocabulary counts, then
  fine-tuned with the codes fixed (one epoch by default);
- ``int8``: every field of width 3 or more is stored row-wise int8 (uint8 codes, one float32
  scale and bias per row, :mod:`optembed.quantization.int8`; FBGEMM's 8-bit row-wise layout),
  the others stay float. Nothing in an int8 table trains, so there is no fine-tuning by default;
  ``finetune.epochs`` > 0 trains the network around the fixed tables (the MLP and DeepFM's per-id
  linear weights, which stay float32: one column each).

The result is saved as a self-describing quantized model. The metrics compare embedding bytes
(codes, codebooks, int8 scales and biases, float tables) with the dense float32 Original table
(all rows x D x 4) and with the source's compact tables. The method enters the fingerprint only
when it is not ``pq``: product-quantized artifacts keep the fingerprints they had before int8.

A run that would code no field stops before any work with one line: for ``pq``, when every table
has ``min_rows`` rows or fewer or its codes would not be smaller (naming the largest field and
the ``--min-rows`` that would code fields); for ``int8``, when every table is narrower than 3
columns. Its result would be the source model, not a compressed model. Nothing is published,
and no cached artifact is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.errors import ArtifactError, ConfigError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params, since_default
from optembed.progress import NULL, Reporter
from optembed.models.base import CTRModel
from optembed.models.checkpoint import load_model, save_model
from optembed.quantization.compress import check_jobs, compact_row_counts
from optembed.quantization.config import DEFAULT_METHOD, QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig, finetune
from optembed.quantization.methods import (
    METHODS, QuantizeJob, QuantizerMethod, ignoring_quantizer, quantizer_method, quantizer_readers,
)
from optembed.quantization.model import memory_bytes
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


DEFAULT_MIN_ROWS = 10_000
# The CLI's names of the options that only product quantization reads (refused by the other methods).
PQ_OPTIONS = {
    "groups": "--groups", "codebook": "--codebook", "code_dtype": "--code-dtype", "sub_dim": "--sub-dim",
    "codebook_share": "--codebook-share", "popularity": "--popularity", "balance_weight": "--balance-weight",
    "contrastive_weight": "--contrastive-weight", "temperature": "--temperature", "kmeans_iters": "--kmeans-iters",
    "kmeans_sample": "--kmeans-sample", "kmeans_backend": "--kmeans-backend", "steps": "--quantizer-steps",
    "lr": "--quantizer-lr", "soft_temperature": "soft_temperature", "max_epochs": "max_epochs",
    "batch_size": "the quantizer batch size",
}


PQ_ONLY = {"inert_when": {"method": ignoring_quantizer()}}  # metadata of the options the other methods do not read


def default_finetune(method: str) -> FinetuneConfig:
    """The fine-tuning a method gets unless told otherwise (one epoch for pq, none for int8); an
    unknown method, refused by :meth:`CompressStage.validate`, gets the default one."""
    return METHODS[method].default_finetune() if method in METHODS else FinetuneConfig()


@dataclass
class CompressStage:
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)  # a retrain artifact; None = the newest one
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig, metadata=PQ_ONLY)
    min_rows: int = field(default=DEFAULT_MIN_ROWS, metadata=PQ_ONLY)
    finetune: FinetuneConfig | None = None  # None: default_finetune(method)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    # fields fitted at once (0: one per core on the CPU); not a parameter (same result up to rounding)
    jobs: int = field(default=0, metadata=UNFINGERPRINTED)
    force: bool = field(default=False, metadata=UNFINGERPRINTED)
    # pq | int8 (optembed.quantization.methods); pq artifacts were made before the method existed (no "method" key)
    method: str = field(default=DEFAULT_METHOD, metadata=since_default(DEFAULT_METHOD))

    def __post_init__(self) -> None:
        if self.finetune is None:
            self.finetune = default_finetune(self.method)

    @property
    def ft(self) -> FinetuneConfig:
        assert self.finetune is not None  # set by __post_init__
        return self.finetune

    @property
    def quantizer_method(self) -> QuantizerMethod:
        return quantizer_method(self.method)

    def validate(self) -> None:
        if not self.quantizer_method.reads_quantizer:
            self.refuse_quantizer_options()
        self.quantizer.validate()
        check_jobs(self.jobs)
        if self.min_rows < 0:
            raise ConfigError(f"--min-rows must not be negative, got {self.min_rows}")
        ft = self.ft
        if ft.epochs < 0:
            raise ConfigError(f"--finetune-epochs must be at least 0, got {ft.epochs}")
        check_positive("--finetune-lr", ft.lr)
        if ft.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {ft.batch_size}")
        if ft.eval_batch_size < 1:
            raise ConfigError(f"the evaluation batch size must be at least 1, got {ft.eval_batch_size}")
        if ft.patience < 0:
            raise ConfigError(f"--patience must not be negative (0: never stop early), got {ft.patience}")

    def refuse_quantizer_options(self) -> None:
        """A method that reads none of product quantization's options refuses one set away from its default."""
        default = QuantizerConfig()
        given = [cli for name, cli in PQ_OPTIONS.items() if getattr(self.quantizer, name) != getattr(default, name)]
        if self.min_rows != DEFAULT_MIN_ROWS:
            given.append("--min-rows")
        if self.jobs != 0:
            given.append("--jobs")
        if given:
            method = self.quantizer_method
            raise ConfigError(f"{', '.join(given)} only apply to --method {' or '.join(quantizer_readers())}; "
                              f"--method {method.name} {method.stores} and takes none of them")


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


def stage_params(config: CompressStage) -> dict[str, Any]:
    """The fingerprinted parameters. pq's are what they were before the method existed (no
    ``method`` key), so its artifacts keep their fingerprints; a method that reads no quantizer
    option does not fingerprint them."""
    return fingerprint_params(config)


def run(config: CompressStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    ft = config.ft
    method = config.quantizer_method
    source = store.resolve(config.source, "retrain")
    chain = resolve_chain(store, source)
    pre = chain["preprocess"]
    schema = read_schema(pre)
    cards = [int(f["cardinality"]) for f in schema["fields"]]
    counts = None
    if method.uses_counts(config.quantizer):
        counts = split_counts(read_id_counts(pre, purpose="compress --popularity"), cards)
    compact, payload = load_model(source.output("compact"), "cpu")
    field_names = payload["field_names"]
    if field_names != [f["name"] for f in schema["fields"]]:
        raise ConfigError(f"retrain artifact {source.fingerprint} does not match its preprocess schema")
    method.require_coded_field(compact, field_names, config.quantizer, config.min_rows)
    device = resolve_device(config.device)
    check_finetune_memory(ft, source, len(cards), device)
    params = stage_params(config)
    upstream = {"retrain": source, "preprocess": pre}

    def quantize() -> tuple[CTRModel, list[dict[str, Any]]]:
        row_counts = compact_row_counts(compact, counts) if counts is not None else None
        job = QuantizeJob(compact, field_names, config.quantizer, config.min_rows, row_counts, device, reporter, config.jobs)
        try:
            return method.build(job)
        except method.source_errors as exc:
            raise ArtifactError(f"{source.output('compact')}: {exc}; re-run retrain") from None

    def build(tmp: Path, manifest: Manifest) -> None:
        data = load_dataset(pre, device)
        val, test = data.splits["val"], data.splits["test"]
        before_test = evaluate(compact.to(device), test, device, ft.eval_batch_size)
        compact.cpu()  # Module.to / .cpu move the model in place
        started = time.perf_counter()
        model, stats = quantize()
        quantizer_seconds = time.perf_counter() - started
        result = finetune(model, ft, data.splits["train"], val, test, device, reporter)
        best = next(r for r in result.history if r["epoch"] == result.best_epoch)
        fitted = result.history[0]
        mem = memory_bytes(model)
        dim = compact.embed_dim
        original_bytes = sum(cards) * dim * 4
        source_bytes = compact.embedder.memory_bytes()["embedding"]
        save_model(tmp / "model.pt", model.cpu(), field_names, extra={"source": source.fingerprint, "preprocess": pre.fingerprint,
                                                                      "variant": source.metrics.get("variant", "retrain")})
        pq.write_table(pa.Table.from_pylist(stats), tmp / "fields.parquet")
        pq.write_table(pa.Table.from_pylist(result.history), tmp / "curves.parquet")
        manifest.outputs = {"model": "model.pt", "fields": "fields.parquet", "curves": "curves.parquet"}
        coded = [s for s in stats if s["coded"]]
        manifest.metrics = {
            "variant": source.metrics.get("variant", "retrain"),
            "method": config.method,
            "source_test_auc": before_test["auc"],
            "source_test_logloss": before_test["logloss"],
            "quantized_test_auc": fitted.get("test_auc"),
            "quantized_test_logloss": fitted.get("test_logloss"),
            "test_auc": best.get("test_auc"),
            "test_logloss": best.get("test_logloss"),
            "val_auc": best["val_auc"],
            "val_logloss": best.get("val_logloss"),
            "auc_delta": best.get("test_auc", float("nan")) - before_test["auc"],
            "best_epoch": result.best_epoch,
            "coded_fields": len(coded),
            **method.coded_metrics(coded),
            "fields": len(stats),
            "embedding_bytes": mem["embedding"],
            "code_bytes": mem["codes"],
            "codebook_bytes": mem["codebooks"],
            "scale_bytes": mem["scales"],
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
