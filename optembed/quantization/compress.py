"""Quantize a compact model field by field: large tables become codes + codebooks."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from joblib import Parallel, delayed
from torch import Tensor

from optembed.errors import ConfigError
from optembed.models.base import CTRModel
from optembed.progress import NULL, Reporter
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.fit import fit_quantizer
from optembed.quantization.plan import FieldPlan, plan_field
from optembed.quantization.fields import CodedField, DenseField, FieldTable
from optembed.quantization.model import quantized_model


def compact_row_counts(compact: CTRModel, id_counts: Sequence[Tensor]) -> list[Tensor]:
    """Per field, the training count of every compact row: the counts of all original ids that
    the remap sends to it (a pruned id counts for its field's OOV row)."""
    out = []
    for f, counts in enumerate(id_counts):
        remap = compact.embedder.field_remap(f).long().cpu()  # type: ignore[operator]
        if counts.numel() != remap.numel():
            raise ValueError(f"field {f}: {counts.numel()} counts for {remap.numel()} ids")
        rows = torch.zeros(compact.embedder.field_rows()[f], dtype=torch.long)
        out.append(rows.scatter_add_(0, remap, counts.long().cpu()))
    return out


def field_decision(rows: int, width: int, cfg: QuantizerConfig, min_rows: int) -> tuple[FieldPlan, str]:
    """The plan of a ``rows`` x ``width`` table and why it stays float ("" when it is coded)."""
    plan = plan_field(rows, width, cfg)
    if rows <= min_rows:
        return plan, f"rows <= {min_rows}"
    if plan.codebook == 0:
        return plan, f"codebooks would exceed {cfg.codebook_share:g} of the codes"
    if plan.coded_bytes >= plan.float_bytes:
        return plan, "codes would not be smaller"
    return plan, ""


def field_shapes(compact: CTRModel, field_names: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(name, rows, width)`` of every table of ``compact``."""
    rows, widths = compact.embedder.field_rows(), compact.embedder.field_widths()
    return [(name, int(rows[f]), int(widths[f])) for f, name in enumerate(field_names)]


def check_jobs(jobs: int) -> None:
    """``--jobs``: 0 (automatic) or a positive number of threads."""
    if jobs < 0:
        raise ConfigError(f"--jobs must be at least 0 (0: automatic), got {jobs}")


def field_workers(jobs: int, fields: int, device: torch.device) -> int:
    """Threads fitting fields at once: ``jobs`` when positive, else one per CPU core on the CPU
    and one on a GPU (its kernels already fill it); never more than the fields to fit."""
    check_jobs(jobs)
    if jobs == 0:
        jobs = 1 if device.type != "cpu" else max(1, os.cpu_count() or 1)
    return max(1, min(jobs, fields))


def _fit_field(table: Tensor, counts: Tensor | None, cfg: QuantizerConfig,
               device: torch.device) -> tuple[Any, Tensor, Any, float]:
    started = time.perf_counter()
    pq, codes, fit = fit_quantizer(table, counts, cfg, device)
    return pq, codes, fit, time.perf_counter() - started


def quantize_compact(
    compact: CTRModel,
    field_names: Sequence[str],
    row_counts: Sequence[Tensor] | None,
    cfg: QuantizerConfig,
    min_rows: int,
    device: torch.device | str = "cpu",
    reporter: Reporter = NULL,
    jobs: int = 0,
) -> tuple[CTRModel, list[dict[str, Any]]]:
    """Fit a product quantizer on every field with more than ``min_rows`` rows whose coded form
    (sized per field by :func:`plan_field`) is smaller than its float table; the others stay
    float. Returns the model and one statistics row per field (rows, width, groups, codebook
    size K and code dtype, coded or not and why, bytes before/after, errors, code usage).
    ``jobs``: fields fitted at once (:func:`field_workers`); each field seeds its own generator, so
    the result is the same up to floating-point rounding."""
    cfg.validate()
    device = torch.device(device)
    plans = []
    for f, name in enumerate(field_names):
        table = compact.embedder.table(f).detach().float().cpu()  # type: ignore[operator]
        plan, reason = field_decision(table.shape[0], table.shape[1], cfg, min_rows)
        counts = row_counts[f] if row_counts is not None else None
        plans.append((name, table, plan, reason, counts))
    coded = [p for p in plans if not p[3]]
    workers = field_workers(jobs, len(coded), device)
    task = reporter.task("quantizing", total=len(plans), unit="field")
    fits: dict[str, tuple[Any, Tensor, Any, float]] = {}
    # The fields' fits are independent (each seeds its own generator), so they run on a pool of
    # threads: torch releases the GIL inside its kernels and a field's fit is many small ops.
    results = Parallel(n_jobs=workers, prefer="threads", return_as="generator")(
        delayed(_fit_field)(table, counts, replace(cfg, groups=plan.groups, codebook=plan.codebook, sub_dim=None,
                                                   code_dtype=plan.code_dtype), device)
        for _, table, plan, _, counts in coded
    )
    for (name, *_), result in zip(coded, results, strict=True):
        fits[name] = result
        task.advance(1)
    fields: list[FieldTable] = []
    stats: list[dict[str, Any]] = []
    for name, table, plan, reason, _ in plans:
        rows, width = table.shape
        dense_bytes = table.numel() * 4
        row: dict[str, Any] = {"field": name, "rows": rows, "width": width, "float_bytes": dense_bytes}
        if reason:
            fields.append(DenseField(table))
            row.update(coded=False, reason=reason, bytes=dense_bytes, mse=0.0, weighted_mse=0.0, codes_used=None,
                       perplexity=None, seconds=0.0, groups=None, codebook=None, code_dtype=None)
            task.advance(1)
        else:
            pq, codes, fit, seconds = fits[name]
            field = CodedField(codes.cpu(), pq.codebooks.detach().cpu(), width)
            fields.append(field)
            nbytes = sum(field.byte_counts().values())
            assert nbytes == plan.coded_bytes, (name, nbytes, plan)
            row.update(coded=True, reason="", bytes=nbytes, groups=plan.groups, codebook=plan.codebook,
                       code_dtype=plan.code_dtype, seconds=round(seconds, 3), **{
                k: v for k, v in fit.to_dict().items() if k in ("mse", "weighted_mse", "codes_used", "perplexity")
            })
        stats.append(row)
    task.close()
    return quantized_model(compact, fields), stats
