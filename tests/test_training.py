"""The training loop: learning a planted signal, determinism, resume, divergence guard, patience."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.errors import TrainingError
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.device import resolve_device
from optembed.training.stopping import FLOOR, loss_limit, patience_exhausted
from optembed.training.trainer import Trainer
from trainer_hooks import PlantedValidation

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
    assert result.best_metrics()["test_auc"] > 0.7  # the kept checkpoint's, evaluated once after training
    assert not any(k.startswith("test_") for r in result.history for k in r)  # the epochs never see the test split
    score = TrainConfig().score  # the default monitor: validation AUC minus logloss
    assert result.best_score == max(score(r) for r in result.history)
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
    assert model.embedder.pruner.threshold.abs().sum() > 0
    model, _ = fit(mode="none", epochs=1)
    assert model.embedder.pruner.threshold.abs().sum() == 0


def test_nan_loss_stops_with_clear_error() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(16,)), "none")
    with torch.no_grad():
        model.embedder.embedding.weight[5] = math.nan
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


def train_once(lr: float, name: str = "fnn", mode: str = "none", **cfg: object):
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig(name, embed_dim=8, mlp_dims=(16,)), mode)
    config = TrainConfig(epochs=2, batch_size=256, lr=lr, patience=0, **cfg)  # type: ignore[arg-type]
    return Trainer(model, config, CPU).fit(planted(3000, 1), planted(1000, 2))


def test_divergence_limit() -> None:
    assert FLOOR == pytest.approx(20 * math.log(2))
    assert loss_limit(0.69) == FLOOR and loss_limit(3.0) == 30.0


def test_a_huge_learning_rate_stops_with_one_clear_error() -> None:
    with pytest.raises(TrainingError, match=r"training diverged at epoch 1, step 5: the mean loss of the last 5 steps is "
                                            r"\S+, over the limit 13\.86 .* try a lower --lr \(now 1e\+06\)"):
        train_once(1e6, check_every=5)


@pytest.mark.parametrize(("name", "mode"), [("fnn", "none"), ("deepfm", "optembed"), ("dcn", "prune-only")])
def test_high_but_sane_learning_rates_are_not_stopped(name: str, mode: str) -> None:
    for lr in (1e-2, 3e-2):
        result = train_once(lr, name, mode, check_every=3, amp="none")
        assert len(result.history) == 2 and result.best_val_auc > 0.75


def test_an_exploding_loss_is_caught_at_the_next_check_point(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Trainer.step
    calls = [0]

    def exploding(self: Trainer, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = real(self, xb, yb)
        return loss * 1e4 if calls[0] > 12 else loss

    monkeypatch.setattr(Trainer, "step", exploding)
    # 3000 rows / 256 = 12 steps per epoch: epoch 2 explodes from its first step, checked after 4
    with pytest.raises(TrainingError, match=r"diverged at epoch 2, step 4: the mean loss of the last 4 steps"):
        train_once(1e-3, check_every=4)


def test_a_non_finite_gradient_is_caught_while_the_loss_is_finite() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(16,)), "none")
    calls = [0]

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return grad + math.inf if calls[0] == 3 else grad

    model.embedder.embedding.weight.register_hook(poison)
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=256, check_every=3), CPU)
    with pytest.raises(TrainingError, match=r"a gradient became NaN or infinite at epoch 1, step 3 \(mean loss 0\.\d+"):
        trainer.fit(planted(3000, 1), planted(500, 2))


# no gain in epochs 3 and 4, a gain in 5, none from 6 on
AUCS = [0.6, 0.7, 0.65, 0.66, 0.71, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize(("patience", "epochs_run"), [(1, 3), (2, 4), (3, 8), (0, 10)])
def test_patience_stops_after_that_many_epochs_without_gain(patience: int, epochs_run: int) -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    cfg = TrainConfig(epochs=10, batch_size=1024, patience=patience)
    result = Trainer(model, cfg, CPU, callbacks=[PlantedValidation(AUCS)]).fit(planted(1000, 1), planted(300, 2))
    assert len(result.history) == epochs_run
    assert result.stopped_early == (epochs_run < 10)
    assert result.best_epoch == (2 if epochs_run < 5 else 5)


def test_resume_obeys_the_same_patience_rule() -> None:
    assert not patience_exhausted(1, 2) and patience_exhausted(2, 2) and not patience_exhausted(9, 0)
    aucs = PlantedValidation([0.7, 0.6, 0.6, 0.6])  # shared: the resumed runs go on with the next numbers
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    saved: list[dict] = []
    Trainer(model, TrainConfig(epochs=2, batch_size=1024, patience=0), CPU, callbacks=[aucs]).fit(
        planted(1000, 1), planted(300, 2), checkpoint=saved.append
    )
    assert saved[-1]["epoch"] == 2 and saved[-1]["bad_epochs"] == 1
    done = Trainer(model, TrainConfig(epochs=4, batch_size=1024, patience=1), CPU, callbacks=[aucs]).fit(
        planted(1000, 1), planted(300, 2), resume=saved[-1]
    )
    assert len(done.history) == 2 and done.stopped_early  # one epoch without gain already: nothing more
    more = Trainer(model, TrainConfig(epochs=4, batch_size=1024, patience=2), CPU, callbacks=[aucs]).fit(
        planted(1000, 1), planted(300, 2), resume=saved[-1]
    )
    assert len(more.history) == 3 and more.stopped_early  # one more epoch without gain, then stop


def test_evals_per_epoch_auto_rule() -> None:
    cfg = TrainConfig()
    assert cfg.evals_for(1) == 1 and cfg.evals_for(2000) == 1 and cfg.evals_for(2001) == 2
    assert cfg.evals_for(18_000) == 9 and cfg.evals_for(10**6) == 10
    assert TrainConfig(evals_per_epoch=4).evals_for(100) == 4 and TrainConfig(evals_per_epoch=4).evals_for(3) == 3


def test_mid_epoch_validation_keeps_the_best_checkpoint_inside_an_epoch() -> None:
    """Three validations per epoch (after steps 2, 4 and at the end, 6 steps per epoch); the best
    comes at epoch 1 step 4: its weights are kept, its metrics reported, and patience counts
    epochs (epoch 1 gained inside, epochs 2 and 3 did not)."""
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshots(PlantedValidation):
        def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return super().on_validation(metrics)

    cfg = TrainConfig(epochs=5, batch_size=200, patience=2, evals_per_epoch=3)
    watched = Snapshots([0.60, 0.80, 0.70, 0.50, 0.50, 0.50, 0.79, 0.50, 0.50])
    result = Trainer(model, cfg, CPU, callbacks=[watched]).fit(planted(1200, 1), planted(300, 2))
    assert len(snapshots) == 9 and len(result.history) == 3 and result.stopped_early
    assert result.best_epoch == 1 and result.best_val_auc == 0.80
    assert result.best_metrics()["step"] == 4 and result.best_metrics()["val_auc"] == 0.80
    for key, value in snapshots[1].items():
        assert torch.equal(result.best_state[key], value), key
    assert not torch.equal(result.best_state["embedding.weight"], snapshots[2]["embedding.weight"])


def test_validate_start_keeps_trained_starting_weights_when_no_epoch_beats_them() -> None:
    aucs = PlantedValidation([0.9, 0.8, 0.85])  # the start, epoch 1, epoch 2
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = Trainer(model, TrainConfig(epochs=2, batch_size=500, patience=0), CPU, callbacks=[aucs]).fit(
        planted(1000, 1), planted(300, 2), validate_start=True
    )
    assert result.best_epoch == 0 and result.best_val_auc == 0.9 and result.best_metrics()["epoch"] == 0
    assert all(torch.equal(result.best_state[k], v) for k, v in start.items())
    assert len(result.history) == 2


def test_epoch_lines_show_no_test_auc_and_the_kept_checkpoint_is_tested_once() -> None:
    from optembed.progress import NullReporter
    from optembed.training.evaluate import evaluate

    lines: list[str] = []

    class Lines(NullReporter):
        def message(self, text: str) -> None:
            lines.append(text)

    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=8, mlp_dims=(16,)), "none")
    cfg = TrainConfig(epochs=3, batch_size=256, lr=3e-3, patience=5, seed=0, evals_per_epoch=2)
    test = planted(2000, 3)
    result = Trainer(model, cfg, CPU, Lines()).fit(planted(6000, 1), planted(2000, 2), test)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) >= 6  # a mid-epoch and an end-of-epoch line per epoch
    assert all("val AUC" in line for line in epoch_lines)
    assert not any("test" in line.lower() for line in lines)
    # the test metrics are the kept checkpoint's, as a fresh evaluation of its weights gives them
    model.load_state_dict(result.best_state)
    again = evaluate(model, test, CPU)
    kept = result.best_metrics()
    assert kept["test_auc"] == pytest.approx(again["auc"], abs=1e-9)
    assert kept["test_logloss"] == pytest.approx(again["logloss"], abs=1e-9)


def test_callbacks_hear_every_epoch_start_and_validation_in_order() -> None:
    """With the starting weights validated and two validations per epoch: one validation, then per
    epoch its start and two validations; callbacks run in their order, each given the previous
    one's metrics, and the loop keeps what the last one returned."""
    from optembed.training.callbacks import Callback

    events: list[str] = []

    class Log(Callback):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_epoch_start(self, epoch: int) -> None:
            events.append(f"{self.name} start {epoch}")

        def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]:
            events.append(f"{self.name} val {metrics.get('seen', 0)}")
            return {**metrics, "seen": metrics.get("seen", 0) + 1}

    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "none")
    cfg = TrainConfig(epochs=2, batch_size=250, patience=0, evals_per_epoch=2)
    result = Trainer(model, cfg, CPU, callbacks=[Log("a"), Log("b")]).fit(planted(1000, 1), planted(300, 2),
                                                                         validate_start=True)
    per_validation = ["a val 0", "b val 1"]
    epochs = [[f"a start {e}", f"b start {e}", *per_validation, *per_validation] for e in (1, 2)]
    assert events == [*per_validation, *epochs[0], *epochs[1]]
    assert result.start_record["seen"] == 2 and all(r["seen"] == 2 for r in result.history)
