"""The variants a chain trains and compares, and the supernet mode each one needs: one table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str  # as ``run --variants`` takes it and ``retrain`` labels its result
    mode: str | None  # the supernet's --mode it is searched on; None: no supernet (the Original)
    rows: bool  # the re-trained model keeps a row mask
    widths: bool  # the re-trained model keeps searched widths
    retrained: bool = True  # False: the searched supernet itself ("no retrain")


VARIANTS: tuple[Variant, ...] = (
    Variant("original", None, rows=False, widths=False),
    Variant("optembed-e", "prune-only", rows=True, widths=False),
    Variant("optembed-d", "dims-only", rows=False, widths=True),
    Variant("optembed", "optembed", rows=True, widths=True),
    Variant("optembed-noretrain", "optembed", rows=True, widths=True, retrained=False),
)
NAMES: tuple[str, ...] = tuple(v.name for v in VARIANTS)
SUPERNET_MODE: dict[str, str] = {v.name: v.mode for v in VARIANTS if v.mode is not None}


def of_mode(mode: str) -> str:
    """The re-trained variant searched on a supernet of ``mode`` (``none``: the Original)."""
    for v in VARIANTS:
        if v.retrained and (v.mode or "none") == mode:
            return v.name
    raise ValueError(f"no variant is trained in supernet mode {mode!r}")


def of_masks(rows: bool, widths: bool) -> str:
    """The re-trained variant that keeps a row mask (``rows``) and/or searched widths."""
    return next(v.name for v in VARIANTS if v.retrained and (v.rows, v.widths) == (rows, widths))
