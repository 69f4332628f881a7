"""Evaluation under ``torch.inference_mode`` with large batches, metrics computed on device.

A model of several tasks gives ``(N, T)`` logits; its metrics are the primary task's under the
plain keys (``auc``, ``logloss``: what selection and every report read) and each task's under
``auc_<task>`` and ``logloss_<task>`` (the task names the split carries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.errors import TrainingError
from optembed.metrics import auc, logloss
from optembed.training.tasks import split_columns, task_names

if TYPE_CHECKING:
    from optembed.training.runtime import Runtime


def predict(
    model: torch.nn.Module,
    split: SplitTensors,
    device: torch.device,
    batch_size: int = 32768,
    widths: Tensor | None = None,
    amp: str = "none",
    runtime: Runtime | None = None,
) -> Tensor:
    """Logits for every row of ``split`` (in order), as a float32 tensor on ``device`` (``(N,)``,
    or ``(N, T)`` for a model of several tasks). With a
    data-parallel ``runtime`` every rank predicts its contiguous part of the rows and every rank
    gets all the rows' logits, gathered."""
    if runtime is not None and runtime.distributed:
        lo, hi = runtime.part(len(split))
        return runtime.gather_cat(_logits(model, split.slice(lo, hi), device, batch_size, widths, amp))
    return _logits(model, split, device, batch_size, widths, amp)


@torch.inference_mode()
def _logits(model: torch.nn.Module, split: SplitTensors, device: torch.device, batch_size: int, widths: Tensor | None,
            amp: str) -> Tensor:
    was_training = model.training
    model.eval()
    tasks = int(getattr(getattr(model, "cfg", None), "tasks", 1))
    out = torch.empty((len(split), tasks) if tasks > 1 else len(split), dtype=torch.float32, device=device)
    try:
        start = 0
        for xb, _ in split.batches(batch_size, device):
            with autocast(device, amp):
                logits = model(xb) if widths is None else model(xb, widths)
            out[start : start + xb.shape[0]] = logits.float()
            start += xb.shape[0]
    finally:
        model.train(was_training)
    return out


def evaluate(
    model: torch.nn.Module, split: SplitTensors, device: torch.device, batch_size: int = 32768, *,
    widths: Tensor | None = None, amp: str = "none", runtime: Runtime | None = None,
) -> dict[str, float]:
    """``{"auc", "logloss"}`` of the model on one split, from :func:`predict`'s logits (the same
    numbers on every rank of a data-parallel ``runtime``); with several tasks the primary task's,
    and every task's as ``auc_<task>``, ``logloss_<task>``."""
    logits = predict(model, split, device, batch_size, widths, amp, runtime)
    labels = split.y.to(device, non_blocking=True)
    return task_metrics(labels, logits, getattr(split, "tasks", ()))


def task_metrics(labels: Tensor, logits: Tensor, names: tuple[str, ...] | list[str] = ()) -> dict[str, float]:
    """AUC and logloss of ``(N,)`` (or ``(N, T)``: per task, the primary's under the plain keys) logits."""
    if labels.shape != logits.shape:
        raise TrainingError(
            f"the model gives {tuple(logits.shape[1:]) or 'one'} logit(s) per row but the split has "
            f"{tuple(labels.shape[1:]) or 'one'} label(s) per row"
        )
    ys, zs = split_columns(labels), split_columns(logits)
    out = {"auc": auc(ys[0], zs[0]), "logloss": logloss(ys[0], zs[0])}
    if len(ys) > 1:
        for name, y, z in zip(task_names(names, len(ys)), ys, zs, strict=True):
            out[f"auc_{name}"] = auc(y, z)
            out[f"logloss_{name}"] = logloss(y, z)
    return out


def autocast(device: torch.device, amp: str) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def require_rankable(val: SplitTensors, purpose: str = "pick the best epoch") -> None:
    """Raise :class:`TrainingError` unless validation AUC is defined on ``val`` (both classes)."""
    if len(val) == 0:
        raise TrainingError("the validation split is empty")
    if not val.has_both_classes():
        only = "positive" if bool((val.primary_y > 0.5).all()) else "negative"
        raise TrainingError(
            f"the validation split ({len(val):,} rows) has only {only} labels, so its AUC, which is used to "
            f"{purpose}, is undefined; use more data or a larger validation share (--split)"
        )
