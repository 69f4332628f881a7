"""Hooks into the training loop: watch or adjust a run of :class:`~optembed.training.trainer.Trainer`
without changing it.

A callback is any object with the two methods of :class:`Callback` (subclass it to override
only one):

- ``on_epoch_start(epoch)``: before the epoch's pass over the training data (epochs count from 1;
  a resumed run starts at the first epoch it has not finished). An exception raised here stops
  the run as one raised by the epoch would (e.g. a ``KeyboardInterrupt``: the last finished
  epoch's checkpoint is what a resume starts from).
- ``on_validation(metrics) -> metrics``: after every validation (of the starting weights with
  ``fit(validate_start=True)``, inside an epoch, at its end, and of :meth:`Trainer.metrics`) with
  the metrics it measured (``val_auc``, ``val_logloss``, ..., the embedder's statistics); the
  loop keeps, reports and selects the checkpoint on the metrics returned. Callbacks run in their
  order, each given what the previous one returned. In a data-parallel run every rank calls them
  and rank 0's result is the one every rank goes on with.
"""

from __future__ import annotations

from typing import Any, Protocol


class TrainingCallback(Protocol):
    """What the trainer calls (see the module's description)."""

    def on_epoch_start(self, epoch: int) -> None: ...

    def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]: ...


class Callback:
    """A callback that does nothing: subclass it and override the hooks you need."""

    def on_epoch_start(self, epoch: int) -> None:
        return None

    def on_validation(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics
