"""Choosing the compute device."""

from __future__ import annotations

import torch

from optembed.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is a clear error."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available (use --device cpu or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        return torch.device(name)
    raise ConfigError(f"unknown device '{name}'; choose auto, cpu or cuda")
