"""Fine-tuning a quantized model with its codes fixed: codebooks, float tables and the network
train; the retrain loop's rules apply (Adam, shuffled device batches, validation AUC after every
epoch, best state kept, early stopping after ``patience`` epochs in a row without a gain, 0:
never; a diverging run stops with a clear error, checked every ``CHECK_EVERY`` steps and at the
end of every epoch: see :mod:`optembed.training.stopping`)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.progress import NULL, Reporter
from optembed.quantization.model import QuantizedModel
from optembed.training.evaluate import evaluate, require_rankable
from optembed.training.stopping import DivergenceGuard, patience_exhausted

CHECK_EVERY = 50  # steps between divergence checks (each one syncs the device)


@dataclass
class FinetuneConfig:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 2048
    patience: int = 1  # stop after this many epochs in a row without a validation AUC gain; 0: never
    seed: int = 0
    eval_batch_size: int = 32768


@dataclass
class FinetuneResult:
    best_epoch: int  # 0 = the quantized model as fitted, before any fine-tuning
    best_state: dict[str, Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)


def _metrics(model: QuantizedModel, val: SplitTensors, test: SplitTensors | None, device: torch.device, batch: int) -> dict[str, float]:
    v = evaluate(model, val, device, batch)
    out = {"val_auc": v["auc"], "val_logloss": v["logloss"]}
    if test is not None:
        t = evaluate(model, test, device, batch)
        out.update(test_auc=t["auc"], test_logloss=t["logloss"])
    return out


def finetune(
    model: QuantizedModel,
    cfg: FinetuneConfig,
    train: SplitTensors,
    val: SplitTensors,
    test: SplitTensors | None,
    device: torch.device,
    reporter: Reporter = NULL,
) -> FinetuneResult:
    """Train for up to ``cfg.epochs`` epochs; the returned state is the best by validation AUC
    (possibly the starting point, epoch 0)."""
    require_rankable(val)
    model = model.to(device)
    history = [{"epoch": 0, "loss": float("nan"), **_metrics(model, val, test, device, cfg.eval_batch_size)}]
    best_epoch, best_auc = 0, history[0]["val_auc"]
    best_state = copy.deepcopy(model.state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.epochs <= 0 or not params:
        return FinetuneResult(best_epoch, best_state, history)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator(device=train.x.device).manual_seed(cfg.seed)
    guard = DivergenceGuard(model, device, "--finetune-lr", cfg.lr)
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        task = reporter.task(f"fine-tune epoch {epoch}", total=len(train), unit="samples")
        guard.start_epoch()
        seen, step, started = 0, 0, time.perf_counter()
        for xb, yb in train.batches(cfg.batch_size, device, generator=gen, shuffle=True):
            loss = F.binary_cross_entropy_with_logits(model(xb), yb.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            guard.add(loss.detach(), weight=xb.shape[0])
            seen += xb.shape[0]
            step += 1
            task.advance(xb.shape[0])
            if step % CHECK_EVERY == 0:
                guard.check(epoch, step)
        guard.check(epoch, step)
        task.close()
        row = {"epoch": epoch, "loss": guard.epoch_mean(), **_metrics(model, val, test, device, cfg.eval_batch_size)}
        row["samples_per_s"] = seen / max(time.perf_counter() - started, 1e-9)
        history.append(row)
        reporter.message(
            f"fine-tune epoch {epoch} | loss {row['loss']:.5f} | val AUC {row['val_auc']:.5f}"
            + (f" | test AUC {row['test_auc']:.5f}" if "test_auc" in row else "")
        )
        if row["val_auc"] > best_auc:
            best_epoch, best_auc, stale = epoch, row["val_auc"], 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if patience_exhausted(stale, cfg.patience):
                break
    model.load_state_dict(best_state)
    model.eval()
    return FinetuneResult(best_epoch, best_state, history)
