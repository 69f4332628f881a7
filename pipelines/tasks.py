"""Several tasks in the stages: the model predicts as many labels as the data holds, and the
manifests and ``metrics.json`` rows carry each task's numbers beside the primary task's.

A one-label artifact gives one task and nothing here changes its model, fingerprint or metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor

from optembed.data.labels import label_columns
from optembed.errors import ConfigError
from optembed.metrics import auc, logloss
from optembed.models.config import ModelConfig
from optembed.training.tasks import split_columns, task_names

METRICS = ("val_auc", "val_logloss", "test_auc", "test_logloss")


def with_data_tasks(model: ModelConfig, schema: dict[str, Any]) -> ModelConfig:
    """``model`` predicting one logit per label of the preprocess ``schema`` (unchanged for one label)."""
    tasks = len(label_columns(schema))
    if model.tasks == tasks:
        return model
    if model.tasks != 1:
        raise ConfigError(f"the model predicts {model.tasks} tasks but the data has {tasks} label column(s)")
    return replace(model, tasks=tasks)


def per_task(record: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{task: {"val_auc", "val_logloss", "test_auc", "test_logloss"}}`` of a training record
    (the keys it has); empty for one task."""
    if len(names) < 2:
        return {}
    return {
        name: {key: record[f"{key}_{name}"] for key in METRICS if f"{key}_{name}" in record}
        for name in names
    }


def task_test_metrics(labels: Tensor, logits: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{task: {"test_auc", "test_logloss"}}`` of ``(N, T)`` labels and logits; empty for one task."""
    if labels.dim() == 1:
        return {}
    ys, zs = split_columns(labels), split_columns(logits)
    return {
        name: {"test_auc": auc(y, z), "test_logloss": logloss(y, z)}
        for name, y, z in zip(task_names(names, len(ys)), ys, zs, strict=True)
    }


def primary(values: Tensor) -> Tensor:
    """The primary task's column of ``(N,)`` or ``(N, T)`` labels or logits."""
    return values if values.dim() == 1 else values[:, 0]
