"""Self-describing model files: config, mode, field layout and weights in one ``torch.save``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from optembed.errors import ArtifactError
from optembed.models.base import CTRModel
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model

FORMAT = "optembed-model"
VERSION = 1


def model_payload(
    model: CTRModel,
    mode: str,
    field_names: Sequence[str],
    state_dict: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "mode": mode,
        "cardinalities": list(model.embedding.cardinalities),
        "field_names": list(field_names),
        "state_dict": state_dict if state_dict is not None else model.state_dict(),
        "extra": extra or {},
    }


def save_model(path: Path, model: CTRModel, mode: str, field_names: Sequence[str], **kwargs: Any) -> None:
    torch.save(model_payload(model, mode, field_names, **kwargs), path)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CTRModel, dict[str, Any]]:
    """Rebuild a model from its file alone; returns the model and the payload."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"model file missing: {path}") from None
    except Exception as exc:  # corrupt or foreign file
        raise ArtifactError(f"cannot read model file {path}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an optembed model file")
    if payload.get("version") != VERSION:
        raise ArtifactError(f"{path} has model file version {payload.get('version')}, expected {VERSION}")
    cfg = ModelConfig.from_dict(payload["model_config"])
    model = build_model(payload["cardinalities"], cfg, payload["mode"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload
