"""The parameters a configuration contributes to an artifact's fingerprint, read from its fields.

Every field of a configuration dataclass is fingerprinted unless its metadata says otherwise, so a
new field changes the fingerprints of the artifacts it changes without further code:

- ``{"fingerprint": False}``: the field does not change the result (a device, a batch size of
  evaluation, a speed knob, where to read or write): left out;
- ``{"since_default": X}``: the field came after artifacts that were made without it, which then
  behaved as if it held ``X`` (not necessarily today's default): left out while it holds ``X``,
  so those artifacts keep their fingerprints;
- ``{"inert_when": {"other": (v, ...)}}``: the field does nothing while the field ``other``
  holds one of the values: left out then;
- ``{"resolved_by": "method"}``: fingerprinted as ``cfg.method()`` (a value resolved from it);
- ``{"flatten": True}``: a nested configuration whose parameters join its parent's.

Nested dataclasses give nested dicts; tuples become lists and dicts are sorted by key (the
fingerprint's canonical JSON sorts keys anyway; this keeps the recorded parameters equal to it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields, is_dataclass
from typing import Any

FINGERPRINT = "fingerprint"
SINCE_DEFAULT = "since_default"
INERT_WHEN = "inert_when"
RESOLVED_BY = "resolved_by"
FLATTEN = "flatten"

UNFINGERPRINTED: dict[str, Any] = {FINGERPRINT: False}  # metadata of a field that does not change the result


def since_default(value: Any) -> dict[str, Any]:
    """Metadata of a field added later: left out of the parameters while it holds ``value``."""
    return {SINCE_DEFAULT: value}


def fingerprint_params(cfg: Any, omit: Collection[str] = ()) -> dict[str, Any]:
    """The fingerprinted parameters of the dataclass instance ``cfg``, in field order; ``omit``:
    names of fields the caller leaves out (for this instance: fields that act only in some runs)."""
    if not is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"fingerprint_params needs a dataclass instance, got {type(cfg).__name__}")
    params: dict[str, Any] = {}
    for f in fields(cfg):
        meta = f.metadata
        if f.name in omit or not meta.get(FINGERPRINT, True):
            continue
        value = getattr(cfg, f.name)
        if SINCE_DEFAULT in meta and value == meta[SINCE_DEFAULT]:
            continue
        inert = meta.get(INERT_WHEN, {})
        if any(getattr(cfg, other) in values for other, values in inert.items()):
            continue
        if RESOLVED_BY in meta:
            value = getattr(cfg, meta[RESOLVED_BY])()
        if meta.get(FLATTEN):
            params.update(fingerprint_params(value))
        else:
            params[f.name] = _plain(value)
    return params


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return fingerprint_params(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return dict(sorted(value.items()))
    return value
