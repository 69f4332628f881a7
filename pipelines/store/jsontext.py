"""The JSON forms of the store: canonical text for hashing, strict text for writing.

Canonical JSON (sorted keys, no spaces) is what fingerprints and manifest hashes are taken of, so
the same content always hashes the same. Strict JSON has no NaN/Infinity tokens, so that any
JSON parser reads a manifest.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, other objects as their strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def strict_json_value(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, tuples as lists and other objects as strings,
    so that ``json.dumps(..., allow_nan=False)`` succeeds and strict parsers accept the result."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): strict_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        with contextlib.suppress(Exception):
            return strict_json_value(value.item())
    return str(value)


def strict_dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN/Infinity tokens) of ``value``."""
    return json.dumps(strict_json_value(value), indent=indent, allow_nan=False)
