"""Fine-tuning a quantized model with its codes fixed: codebooks, float tables and the network
train with the project's one training loop (:class:`optembed.training.trainer.Trainer`): Adam
without weight decay, shuffled device batches, validation AUC after every epoch, the best state
kept (the quantized model as fitted is epoch 0), early stopping after ``patience`` epochs in a row
without a gain (0: never), and a diverging run stopped with one clear error naming
``--finetune-lr`` (see :mod:`optembed.training.stopping`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.progress import NULL, Reporter
from optembed.models.base import CTRModel
from optembed.training.config import TrainConfig
from optembed.training.evaluate import require_rankable
from optembed.training.trainer import Trainer


@dataclass
class FinetuneConfig:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 2048
    patience: int = 1  # stop after this many epochs in a row without a validation AUC gain; 0: never
    seed: int = 0
    eval_batch_size: int = 32768

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=max(self.epochs, 1), lr=self.lr, batch_size=self.batch_size, patience=self.patience,
                           seed=self.seed, eval_batch_size=self.eval_batch_size, weight_decay=0.0)


@dataclass
class FinetuneResult:
    best_epoch: int  # 0 = the quantized model as fitted, before any fine-tuning
    best_state: dict[str, Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)


def finetune(
    model: CTRModel,
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
    trainer = Trainer(model, cfg.train_config(), device, reporter, lr_option="--finetune-lr")
    if cfg.epochs <= 0 or not any(p.requires_grad for p in model.parameters()):
        start = {"epoch": 0, "loss": float("nan"), **trainer.metrics(val, test)}
        return FinetuneResult(0, {k: v.detach().clone() for k, v in model.state_dict().items()}, [start])
    result = trainer.fit(train, val, test, validate_start=True)
    model.load_state_dict(result.best_state)
    model.eval()
    kept = result.best_metrics()  # the kept checkpoint's record carries its test metrics (the epochs' do not)
    trained = [{**r, **kept} if r["epoch"] == result.best_epoch else r for r in result.history]
    history = [{"loss": float("nan"), **result.start_record}, *trained]
    return FinetuneResult(result.best_epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}, history)
