"""The base rate of a trained artifact's splits and the warning when its model does worse.

The base rate of a split is the logloss of the constant prediction at the training positive
rate, on that split's rows; both ratios come from the preprocess artifact's ``schema.json``. A
trained stage records the base rates and the warning lines in its manifest's metrics
(:func:`calibration_metrics`); :mod:`pipelines.diagnostics` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from optembed.metrics import constant_logloss
from optembed.quantization.config import DEFAULT_METHOD
from optembed.training.diagnostics import worse_than_base_rate
from pipelines.store import Manifest

SPLITS = ("val", "test")


def base_rates(pre: Manifest) -> dict[str, Any]:
    """``{split}_base_rate_logloss`` for the validation and test splits of the preprocess
    artifact ``pre`` (the primary task's); with several labels also ``task_base_rates``,
    ``{task: {split}_base_rate_logloss}``. Empty when its schema cannot be read or lacks the ratios."""
    try:
        schema = json.loads(pre.output("schema").read_text())
        out: dict[str, Any] = _rates(schema["positive_ratio"])
        labels = schema.get("labels", [])
        if len(labels) > 1:
            out["task_base_rates"] = {str(entry["name"]): _rates(entry["positive_rate"]) for entry in labels}
        return out
    except Exception:  # noqa: BLE001 - an unreadable schema means no base rate, never a failure
        return {}


def _rates(ratios: Mapping[str, Any]) -> dict[str, float]:
    train = float(ratios["train"])
    return {f"{s}_base_rate_logloss": constant_logloss(float(ratios[s]), train) for s in SPLITS if s in ratios}


def calibration_warnings(variant: str, metrics: Mapping[str, Any]) -> list[str]:
    """The warning (at most one line) when ``metrics``' validation or test logloss is above its
    split's base rate (``{split}_logloss`` against ``{split}_base_rate_logloss``); with several
    tasks (``tasks`` and ``task_base_rates`` in ``metrics``) one line per task that does worse."""
    tasks, rates = metrics.get("tasks"), metrics.get("task_base_rates")
    if isinstance(tasks, Mapping) and isinstance(rates, Mapping) and len(tasks) > 1:
        judged = [(f"{variant}, task {name}", values, rates.get(name, {})) for name, values in tasks.items()]
    else:
        judged = [(variant, metrics, metrics)]
    lines = [
        worse_than_base_rate(label, {s: (values.get(f"{s}_logloss"), base.get(f"{s}_base_rate_logloss")) for s in SPLITS})
        for label, values, base in judged
        if isinstance(values, Mapping) and isinstance(base, Mapping)
    ]
    return [line for line in lines if line]


def calibration_metrics(pre: Manifest, variant: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a trained stage adds to its manifest's ``metrics``: the base rates of ``pre``'s
    splits and ``calibration_warnings`` (a list of lines, empty when the model beats them)."""
    rates = base_rates(pre)
    return {**rates, "calibration_warnings": calibration_warnings(variant, {**metrics, **rates})}


def record_calibration(manifest: Manifest, pre: Manifest, metrics: Mapping[str, Any] | None = None) -> None:
    """Add :func:`calibration_metrics` to a trained ``manifest`` whose metrics are filled;
    ``metrics`` (default: the manifest's) holds the ``{split}_logloss`` values to judge."""
    judged = manifest.metrics if metrics is None else metrics
    manifest.metrics.update(calibration_metrics(pre, trained_variant(manifest), judged))


# How the model of a trained artifact is named, by stage, from its manifest and its variant; every
# other stage's model goes by its variant (a baseline's: its method)
LABELS: dict[str, Callable[[Manifest, str], str]] = {
    "supernet": lambda m, variant: f"supernet ({m.params.get('mode', '?')})",
    "search": lambda m, variant: "the searched widths on the supernet",
    "compress": lambda m, variant: f"{variant} + {m.metrics.get('method', DEFAULT_METHOD)}",  # its source's variant
}


def trained_variant(manifest: Manifest) -> str:
    """The name a trained artifact's model goes by in warnings and comparison tables."""
    variant = str(manifest.metrics.get("variant") or manifest.params.get("method") or manifest.stage)
    label = LABELS.get(manifest.stage)
    return variant if label is None else label(manifest, variant)
