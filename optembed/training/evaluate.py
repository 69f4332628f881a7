"""Evaluation under ``torch.inference_mode`` with large batches, metrics computed on device."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.errors import TrainingError
from optembed.metrics import auc, logloss

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
    """Logits for every row of ``split`` (in order), as a float32 tensor on ``device``. With a
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
    out = torch.empty(len(split), dtype=torch.float32, device=device)
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
    numbers on every rank of a data-parallel ``runtime``)."""
    logits = predict(model, split, device, batch_size, widths, amp, runtime)
    labels = split.y.to(device, non_blocking=True)
    return {"auc": auc(labels, logits), "logloss": logloss(labels, logits)}


def autocast(device: torch.device, amp: str) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def require_rankable(val: SplitTensors, purpose: str = "pick the best epoch") -> None:
    """Raise :class:`TrainingError` unless validation AUC is defined on ``val`` (both classes)."""
    if len(val) == 0:
        raise TrainingError("the validation split is empty")
    if not val.has_both_classes():
        only = "positive" if bool((val.y > 0.5).all()) else "negative"
        raise TrainingError(
            f"the validation split ({len(val):,} rows) has only {only} labels, so its AUC, which is used to "
            f"{purpose}, is undefined; use more data or a larger validation share (--split)"
        )
