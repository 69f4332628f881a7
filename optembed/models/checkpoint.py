"""Self-describing model files: config, mode, field layout and weights in one ``torch.save``.

A model over another embedder than OptEmbed's table also stores the embedder's ``spec`` (its
kind and options) under ``embedder``; files without it hold a table model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from optembed.embedders.registry import build_embedder
from optembed.errors import ArtifactError
from optembed.models.base import CTRModel
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.safe_load import expect_dict, load_tensor_file, rebuild

FORMAT = "optembed-model"
VERSION = 1


def model_payload(
    model: CTRModel,
    mode: str,
    field_names: Sequence[str],
    state_dict: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "mode": mode,
        "cardinalities": list(model.embedder.cardinalities),
        "field_names": list(field_names),
        "state_dict": state_dict if state_dict is not None else model.state_dict(),
        "extra": extra or {},
    }
    if model.embedder.kind != "table":
        payload["embedder"] = model.embedder.spec()
    return payload


def save_model(path: Path, model: CTRModel, mode: str, field_names: Sequence[str], **kwargs: Any) -> None:
    torch.save(model_payload(model, mode, field_names, **kwargs), path)


def read_model_payload(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checked payload of a model file (tensors and plain values only, never code)."""
    payload = load_tensor_file(path, "model file", map_location=device)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed model file")
    if payload.get("version") != VERSION:
        raise ArtifactError(f"{path} has model file version {payload.get('version')}, expected {VERSION}")
    expect_dict(payload, Path(path), "model file", ("model_config", "mode", "cardinalities", "field_names", "state_dict"))
    return payload


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CTRModel, dict[str, Any]]:
    """Rebuild a model from its file alone; returns the model and the payload."""
    payload = read_model_payload(path, device)

    def build() -> CTRModel:
        cfg = ModelConfig.from_dict(payload["model_config"])
        spec = payload.get("embedder")
        embedder = None if spec is None else build_embedder(spec, payload["cardinalities"], cfg)
        model = build_model(payload["cardinalities"], cfg, payload["mode"], embedder=embedder)
        model.load_state_dict(payload["state_dict"])
        return model.to(device)

    return rebuild(path, "model file", build), payload
