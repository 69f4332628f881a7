"""Self-describing model files: one format for every kind of model.

A model file holds the head's configuration, the embedder's ``spec`` (its kind and the options
and shapes that rebuild it empty, :mod:`optembed.embedders.registry`), the field layout and
names, and the whole state; :func:`load_model` rebuilds the embedder, the backbone over it and
loads the state - tensors and plain values only, never code. Files of the older formats (the
table models of version 1, ``optembed-compact`` and ``optembed-quantized`` files) still load
(:mod:`optembed.models.legacy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from optembed.embedders.registry import build_embedder
from optembed.errors import ArtifactError
from optembed.embedders.table import MODES, SupernetMode
from optembed.models.base import CTRModel
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import FIX, expect_dict, load_tensor_file, rebuild

FORMAT = "optembed-model"
VERSION = 2  # 2: every kind (the embedder's spec always present); 1: table models, or a baseline's spec
READS = (1, VERSION)


def model_payload(
    model: CTRModel,
    field_names: Sequence[str],
    mode: str = "none",
    state_dict: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "embedder": model.embedder.spec(),
        "mode": mode,
        "cardinalities": list(model.embedder.cardinalities),
        "field_names": list(field_names),
        "state_dict": {k: v.detach().cpu() for k, v in (state_dict if state_dict is not None else model.state_dict()).items()},
        "extra": extra or {},
    }


def save_model(path: Path, model: CTRModel, field_names: Sequence[str], mode: str = "none", **kwargs: Any) -> None:
    """Write ``model`` (any kind) with its field names; ``mode``: a table embedder's OptEmbed mode."""
    torch.save(model_payload(model, field_names, mode, **kwargs), path)


def read_model_payload(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checked payload of a model file (tensors and plain values only, never code), in this
    format whatever format the file has."""
    from optembed.models.legacy import LEGACY_FORMATS, convert

    payload = load_tensor_file(path, "model file", map_location=device)
    if isinstance(payload, dict) and payload.get("format") in LEGACY_FORMATS:
        payload = convert(payload, Path(path))
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed model file")
    if payload.get("version") not in READS:
        raise ArtifactError(f"{path} has model file version {payload.get('version')}, expected {VERSION}")
    expect_dict(payload, Path(path), "model file", ("model_config", "mode", "cardinalities", "field_names", "state_dict"))
    if payload["mode"] not in MODES:
        raise ArtifactError(f"{path} names an unknown supernet mode {payload['mode']!r}; {FIX}")
    return payload


def build_from_payload(payload: dict[str, Any]) -> CTRModel:
    """The model a payload describes, its state loaded (on the CPU)."""
    cfg = ModelConfig.from_dict(payload["model_config"])
    spec = payload.get("embedder")
    cards = payload["cardinalities"]
    if spec is None:  # a table model of version 1: the mode says what it learns
        model = build_model(cards, cfg, SupernetMode.parse(payload["mode"]))
    else:
        model = build_model(cards, cfg, "none", embedder=build_embedder(spec, cards, cfg))
    model.load_state_dict(payload["state_dict"])
    return model


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CTRModel, dict[str, Any]]:
    """Rebuild a model of any kind from its file alone, in evaluation mode (training sets its own
    mode); returns the model and the payload."""
    payload = read_model_payload(path)
    return rebuild(path, "model file", lambda: build_from_payload(payload).to(device).eval()), payload
