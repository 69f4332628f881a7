"""The ways ``compress`` stores a compact model's tables: one table of quantizer methods.

A :class:`QuantizerMethod` says everything the stage needs about its method: which options it
reads (product quantization's :class:`QuantizerConfig`, ``min_rows`` and ``jobs``, or none), the
fine-tuning it gets by default, whether it weights rows by their training counts, the check that
it would code at least one field (its refusal names the fix), how it builds the quantized
model, and the metrics only it has. The stage looks a method up by name and names none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optembed.errors import ConfigError
from optembed.models.base import CTRModel
from optembed.progress import Reporter
from optembed.quantization.compress import field_decision, field_shapes, quantize_compact
from optembed.quantization.compress_int8 import int8_codable, quantize_compact_int8
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig

Stats = list[dict[str, Any]]


@dataclass(frozen=True)
class QuantizeJob:
    """What a method's builder gets: the compact model and every option a method may read."""

    compact: CTRModel
    field_names: list[str]
    quantizer: QuantizerConfig
    min_rows: int
    row_counts: list[Tensor] | None  # per field, the training count of every compact row (or None)
    device: torch.device
    reporter: Reporter
    jobs: int


@dataclass(frozen=True)
class QuantizerMethod:
    name: str  # as --method takes it
    stores: str  # what it does to the tables (its refusal of the options it does not read says it)
    reads_quantizer: bool  # reads QuantizerConfig, min_rows and jobs
    weights_rows: bool  # fits with popularity weights from the training counts (--popularity)
    finetune_epochs: int  # fine-tuning epochs unless told otherwise
    require_coded_field: Callable[[CTRModel, list[str], QuantizerConfig, int], None]  # ConfigError when none would be
    build: Callable[[QuantizeJob], tuple[CTRModel, Stats]]
    source_errors: tuple[type[Exception], ...] = ()  # what the builder raises on a bad source table
    coded_metrics: Callable[[Stats], dict[str, Any]] = lambda coded: {}  # metrics of the coded fields' stats

    def default_finetune(self) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.finetune_epochs)

    def uses_counts(self, cfg: QuantizerConfig) -> bool:
        """Whether quantizing with ``cfg`` needs the training counts of every id."""
        return self.weights_rows and cfg.popularity != "none"


def require_pq_field(compact: CTRModel, field_names: list[str], cfg: QuantizerConfig, min_rows: int) -> None:
    """Raise :class:`ConfigError` when product quantization would code no field of ``compact``,
    naming the largest field and the ``--min-rows`` that would code fields."""
    shapes = field_shapes(compact, field_names)
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


def require_int8_field(compact: CTRModel, field_names: list[str], cfg: QuantizerConfig, min_rows: int) -> None:
    """Raise :class:`ConfigError` when no field of ``compact`` is wide enough to store int8."""
    if int8_codable(compact):
        return
    widest = max(field_shapes(compact, field_names), key=lambda s: s[2])
    raise ConfigError(
        f"compress --method int8 would store no field: every table is narrower than 3 columns, where int8 rows "
        f"(D + 8 bytes) are not smaller than float32 (the widest, {widest[0]}, has {widest[2]}); nothing was published"
    )


def _build_pq(job: QuantizeJob) -> tuple[CTRModel, Stats]:
    return quantize_compact(job.compact, job.field_names, job.row_counts, job.quantizer, job.min_rows, job.device,
                            job.reporter, jobs=job.jobs)


def _build_int8(job: QuantizeJob) -> tuple[CTRModel, Stats]:
    return quantize_compact_int8(job.compact, job.field_names, job.reporter)


def _codebooks(coded: Stats) -> dict[str, Any]:
    return {"field_codebooks": {s["field"]: s["codebook"] for s in coded}}


METHODS: dict[str, QuantizerMethod] = {m.name: m for m in (
    QuantizerMethod("pq", "codes every large field with per-field codebooks", reads_quantizer=True,
                    weights_rows=True, finetune_epochs=FinetuneConfig().epochs, require_coded_field=require_pq_field,
                    build=_build_pq, coded_metrics=_codebooks),
    QuantizerMethod("int8", "stores every field of width 3 or more row-wise int8", reads_quantizer=False,
                    weights_rows=False, finetune_epochs=0, require_coded_field=require_int8_field,
                    build=_build_int8, source_errors=(ValueError,)),
)}



def quantizer_method(name: str) -> QuantizerMethod:
    """The method ``--method name`` picks; a :class:`ConfigError` naming the choices for any other."""
    if name not in METHODS:
        raise ConfigError(f"unknown --method '{name}'; choose {' or '.join(METHODS)}")
    return METHODS[name]


def quantizer_readers() -> tuple[str, ...]:
    """The methods that read the product quantizer's options."""
    return tuple(m.name for m in METHODS.values() if m.reads_quantizer)


def ignoring_quantizer() -> tuple[str, ...]:
    """The methods that read none of the product quantizer's options (they do not fingerprint them)."""
    return tuple(m.name for m in METHODS.values() if not m.reads_quantizer)

