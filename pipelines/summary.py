"""The short result a stage's progress line ends with: each split's AUC with its logloss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (label, AUC key, logloss key) in the order they are said; the first pair found per label wins
PAIRS = (
    ("val", "val_auc", "val_logloss"),
    ("val", "best_val_auc", "best_val_logloss"),
    ("test", "test_auc", "test_logloss"),
    ("best test", "best_test_auc", "best_test_logloss"),
)


def result_summary(metrics: Mapping[str, Any]) -> str:
    """``val AUC 0.7801 logloss 0.4612, test AUC 0.7790 logloss 0.4622`` from a manifest's
    metrics (a split without a numeric AUC is left out; a missing logloss reads ``-``); empty
    for a stage that reports no AUC."""
    said: dict[str, str] = {}
    for label, auc_key, loss_key in PAIRS:
        value = metrics.get(auc_key)
        if label in said or not _number(value):
            continue
        loss = metrics.get(loss_key)
        said[label] = f"{label} AUC {value:.4f} logloss {loss:.4f}" if _number(loss) else f"{label} AUC {value:.4f} logloss -"
    return ", ".join(said.values())


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
