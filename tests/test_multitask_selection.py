"""Several tasks: which task's validation score keeps the checkpoint (``--select``), the task
weights from the command line, and the warnings judged task by task."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError, TrainingError
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.callbacks import Callback
from optembed.training.config import TrainConfig
from optembed.training.diagnostics import overfitting, training_warnings
from optembed.training.selection import check_select, selection_name, selection_score
from optembed.training.trainer import Trainer
from optembed_cli.training_options import parse_task_weights
from pipelines.calibration import calibration_warnings

CPU = torch.device("cpu")
CARDS = [8, 8, 8]
RECORD = {"val_auc": 0.7, "val_logloss": 0.5, "val_auc_a": 0.7, "val_logloss_a": 0.5, "val_auc_b": 0.6, "val_logloss_b": 0.1}


@pytest.mark.parametrize(
    ("monitor", "select", "expected"),
    [
        ("auc", "primary", 0.7),
        ("auc", "a", 0.7),
        ("auc", "b", 0.6),
        ("auc", "mean", 0.65),
        ("auc-logloss", "primary", 0.2),
        ("auc-logloss", "b", 0.5),
        ("auc-logloss", "mean", 0.35),  # ((0.7 - 0.5) + (0.6 - 0.1)) / 2
    ],
)
def test_selection_score_by_hand(monitor: str, select: str, expected: float) -> None:
    assert selection_score(RECORD, monitor, select, ("a", "b")) == pytest.approx(expected)
    assert TrainConfig(monitor=monitor, select=select).score(RECORD, ("a", "b")) == pytest.approx(expected)


def test_one_task_is_always_its_plain_keys() -> None:
    plain = {"val_auc": 0.8, "val_logloss": 0.3}
    for select in ("primary", "mean", "label"):
        assert selection_score(plain, "auc", select, ("label",)) == 0.8
    assert selection_name("auc", "mean", ("label",)) == "AUC"
    assert selection_name("auc-logloss", "mean", ("a", "b")) == "mean AUC - logloss over the tasks"
    assert selection_name("auc", "b", ("a", "b")) == "AUC of b"


def test_select_checked() -> None:
    check_select("b", ("a", "b"))
    check_select("anything", ())  # the tasks are not known before the data is read
    with pytest.raises(ConfigError, match="unknown --select 'c'; choose primary, mean or a task: a, b"):
        check_select("c", ("a", "b"))
    with pytest.raises(ConfigError, match="--select must be"):
        TrainConfig(select=" ").validate()


def test_single_task_fingerprint_without_select() -> None:
    assert "select" not in TrainConfig().to_params()
    assert TrainConfig(select="mean").to_params()["select"] == "mean"


def test_task_weights_option_parsed() -> None:
    assert parse_task_weights("1, 0.5") == (1.0, 0.5)
    assert parse_task_weights(None) == () and parse_task_weights("") == ()
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        parse_task_weights("1,x")


# -- the training loop's choice --------------------------------------------------------------
class PlantedTasks(Callback):
    """Each validation reports the next planted AUC of task ``a`` (the primary) and of ``b``."""

    def __init__(self, aucs: list[tuple[float, float]]) -> None:
        self.aucs = iter(aucs)

    def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]:
        a, b = next(self.aucs)
        return {**metrics, "val_auc": a, "val_auc_a": a, "val_auc_b": b,
                "val_logloss": 0.5, "val_logloss_a": 0.5, "val_logloss_b": 0.5}


def two_task_split(n: int, seed: int) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 8, (n, 3), generator=g, dtype=torch.int32)
    y = (torch.rand(n, 2, generator=g) < 0.3).float()
    return SplitTensors(x, y, ("a", "b"))


# primary (a) peaks at epoch 2, b at epoch 3, their mean at epoch 1
PLANTED = [(0.70, 0.64), (0.72, 0.55), (0.66, 0.66)]


@pytest.mark.parametrize(("select", "best"), [("primary", 2), ("a", 2), ("b", 3), ("mean", 1)])
def test_the_kept_epoch_follows_select(select: str, best: int) -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), tasks=2))
    cfg = TrainConfig(epochs=3, batch_size=512, patience=0, monitor="auc", select=select)
    result = Trainer(model, cfg, CPU, callbacks=[PlantedTasks(PLANTED)]).fit(two_task_split(1000, 1), two_task_split(300, 2))
    assert result.best_epoch == best


def test_unknown_task_refused_before_training() -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), tasks=2))
    with pytest.raises(ConfigError, match="unknown --select 'convert'"):
        Trainer(model, TrainConfig(epochs=1, select="convert"), CPU).fit(two_task_split(500, 1), two_task_split(200, 2))


def test_selecting_a_task_without_both_classes_refused() -> None:
    val = two_task_split(200, 2)
    val.y[:, 1] = 0.0  # no conversion in the validation split
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), tasks=2))
    with pytest.raises(TrainingError, match="one class only in task b"):
        Trainer(model, TrainConfig(epochs=1, select="b"), CPU).fit(two_task_split(500, 1), val)
    # the primary task is still rankable: training on it works
    Trainer(model, TrainConfig(epochs=1, batch_size=256, select="primary"), CPU).fit(two_task_split(500, 1), val)


# -- warnings, task by task -------------------------------------------------------------------
HISTORY = [
    {"epoch": 1, "train_loss": 0.50, "val_logloss": 0.40, "val_logloss_click": 0.40, "val_logloss_convert": 0.10},
    {"epoch": 2, "train_loss": 0.45, "val_logloss": 0.38, "val_logloss_click": 0.38, "val_logloss_convert": 0.12},
    {"epoch": 3, "train_loss": 0.40, "val_logloss": 0.37, "val_logloss_click": 0.37, "val_logloss_convert": 0.13},
]


def test_overfitting_judged_per_task() -> None:
    assert overfitting(HISTORY) is None  # the primary task keeps improving
    line = overfitting(HISTORY, task="convert")
    assert line is not None and "from epoch 1 to 2 task convert's validation logloss rose (0.10000 -> 0.12000)" in line
    found = training_warnings(HISTORY, 100_000, 256, ("click", "convert"))
    assert len(found) == 1 and "task convert" in found[0]
    assert training_warnings(HISTORY, 100_000, 256) == []  # one task: the plain keys only


def test_base_rate_warning_per_task() -> None:
    metrics = {
        "val_logloss": 0.40, "test_logloss": 0.41,
        "tasks": {"click": {"val_logloss": 0.40, "test_logloss": 0.41}, "convert": {"val_logloss": 0.09, "test_logloss": 0.07}},
        "task_base_rates": {
            "click": {"val_base_rate_logloss": 0.60, "test_base_rate_logloss": 0.60},
            "convert": {"val_base_rate_logloss": 0.08, "test_base_rate_logloss": 0.08},
        },
    }
    lines = calibration_warnings("original", metrics)
    assert len(lines) == 1 and lines[0].startswith("original, task convert: validation logloss 0.0900 (base rate 0.0800)")
    one = {"val_logloss": 0.7, "val_base_rate_logloss": 0.6}
    assert calibration_warnings("original", one)[0].startswith("original: validation logloss 0.7000")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--task-weights", "1,x"), "--task-weights must be comma-separated numbers"),
        (("--task-weights", "1,-2"), "--task-weights must be finite non-negative numbers"),
        (("--select", " "), "--select must be primary, mean or a task's name"),
    ],
)
def test_cli_task_options_one_line(cli, tmp_path, args: tuple[str, ...], message: str) -> None:
    for command in (("supernet",), ("retrain",), ("baseline", "--method", "qr")):
        res = cli(*command, *args, "--artifacts", str(tmp_path / "a"))
        assert res.exit_code == 2, (command, res.output)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (command, res.stderr)
