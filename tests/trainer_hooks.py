"""Callbacks the tests give the training loop, and a way to give them to the Trainer a stage builds."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pytest

from optembed.training.callbacks import Callback


class PlantedValidation(Callback):
    """Each validation reports the next of ``aucs`` (and a logloss of 0.5): the loop's real
    training and evaluation still run, its decisions follow the planted numbers. One instance may
    serve several trainers in turn (a run and its resumption): the numbers go on."""

    def __init__(self, aucs: Iterable[float]) -> None:
        self.aucs = iter(aucs)

    def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**metrics, "val_auc": next(self.aucs), "val_logloss": 0.5}


class Epochs(Callback):
    """Records the epochs the loop starts; raises ``KeyboardInterrupt`` (a Ctrl-C) as epoch
    ``interrupt_at`` starts."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.started: list[int] = []
        self.interrupt_at = interrupt_at

    def on_epoch_start(self, epoch: int) -> None:
        self.started.append(epoch)
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt


def hook_trainer(monkeypatch: pytest.MonkeyPatch, module: ModuleType, *callbacks: Any) -> None:
    """Make every Trainer that ``module`` builds (its name ``Trainer``) call ``callbacks`` too."""
    built = module.Trainer  # an AttributeError when the module builds no Trainer by that name

    class Hooked(built):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.callbacks.extend(callbacks)

    monkeypatch.setattr(module, "Trainer", Hooked)
