"""The training loop: learning a planted signal, determinism, resume, NaN guard."""

from __future__ import annotations

import math

import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.errors import TrainingError
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.device import resolve_device
from optembed.training.trainer import Trainer

CPU = torch.device("cpu")
CARDS = [30, 30, 30, 30]


def planted(n: int, seed: int) -> SplitTensors:
    """Fields 0 and 1 decide the label through per-value effects; fields 2 and 3 are noise."""
    g = torch.Generator().manual_seed(seed)
    effects = torch.randn(2, 30, generator=torch.Generator().manual_seed(99)) * 1.5
    x = torch.randint(0, 30, (n, 4), generator=g, dtype=torch.int32)
    logit = effects[0, x[:, 0].long()] + effects[1, x[:, 1].long()] - 1.0
    y = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return SplitTensors(x, y)


def fit(mode: str = "none", epochs: int = 3, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(16,)), mode)
    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, patience=5, seed=seed)
    trainer = Trainer(model, cfg, CPU)
    return model, trainer.fit(planted(6000, 1), planted(2000, 2), planted(2000, 3), **kwargs)


def test_learns_planted_signal_and_keeps_best() -> None:
    _, result = fit(epochs=4)
    assert result.best_val_auc > 0.75
    assert all(r["test_auc"] > 0.7 for r in result.history[1:])
    assert result.best_val_auc == max(r["val_auc"] for r in result.history)
    assert result.history[result.best_epoch - 1]["val_auc"] == result.best_val_auc


def test_same_seed_same_run() -> None:
    _, a = fit(mode="optembed", epochs=2)
    _, b = fit(mode="optembed", epochs=2)
    keys = ("train_loss", "val_auc", "val_logloss")
    assert [[r[k] for k in keys] for r in a.history] == [[r[k] for k in keys] for r in b.history]
    _, c = fit(mode="optembed", epochs=2, seed=1)
    assert [r["val_auc"] for r in c.history] != [r["val_auc"] for r in a.history]


def test_resume_continues_exactly() -> None:
    _, full = fit(mode="optembed", epochs=3)
    saved: list[dict] = []

    def crash_after_first(state: dict) -> None:
        saved.append(state)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(mode="optembed", epochs=3, checkpoint=crash_after_first)
    assert saved[0]["epoch"] == 1
    _, resumed = fit(mode="optembed", epochs=3, seed=0, resume=saved[0])
    assert [r["val_auc"] for r in resumed.history] == [r["val_auc"] for r in full.history]
    for k, v in full.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_thresholds_learn_in_prune_mode() -> None:
    model, _ = fit(mode="prune-only", epochs=2)
    assert model.pruner.threshold.abs().sum() > 0
    model, _ = fit(mode="none", epochs=1)
    assert model.pruner.threshold.abs().sum() == 0


def test_nan_loss_stops_with_clear_error() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(16,)), "none")
    with torch.no_grad():
        model.embedding.weight[5] = math.nan
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=256, check_every=2), CPU)
    with pytest.raises(TrainingError, match=r"became nan at epoch 1, step \d+.*lower --lr"):
        trainer.fit(planted(3000, 1), planted(500, 2))


def test_empty_train_split() -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    empty = SplitTensors(torch.zeros((0, 4), dtype=torch.int32), torch.zeros(0))
    with pytest.raises(TrainingError, match="empty"):
        Trainer(model, TrainConfig(epochs=1), CPU).fit(empty, planted(100, 2))


def test_cuda_missing_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(Exception, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
