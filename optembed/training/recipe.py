"""The training options sized from the data when left to ``auto``.

Two options depend on how much data there is, and a fixed default is wrong at one end of the
10k-50M-row range or the other:

- the batch size: the largest power of two in ``[MIN_AUTO_BATCH, MAX_AUTO_BATCH]`` that still
  gives an epoch ``MIN_STEPS`` optimizer steps (a 10k-row sample trained with batches of 4,096
  takes two steps an epoch and never converges before early stopping);
- the embedding L2 (``--embedding-l2``): a whole-table L2 is what keeps small data from
  overfitting (FuxiCTR's published recipes use 0.05 on Frappe's ~0.2M training rows) and what
  starves the rare rows of large data (its Criteo recipes use 1e-5 on ~36M rows). Between those
  two published points it follows the straight line through them on log-log axes,
  ``L2_SMALL * (rows / ROWS_SMALL) ** slope``, clipped to ``[L2_LARGE, L2_SMALL]``.

:func:`resolve` returns the configuration with both filled in and one line that says what was
chosen; explicit values are kept as given.
"""

from __future__ import annotations

import math
from dataclasses import replace

from optembed.training.config import TrainConfig

AUTO = 0  # batch_size 0: sized from the training rows
MIN_STEPS = 50
MIN_AUTO_BATCH = 128
MAX_AUTO_BATCH = 4096
ROWS_SMALL, L2_SMALL = 2.0e5, 0.05
ROWS_LARGE, L2_LARGE = 3.6e7, 1e-5


def auto_batch_size(rows: int) -> int:
    """The largest power of two in ``[MIN_AUTO_BATCH, MAX_AUTO_BATCH]`` with at least
    ``MIN_STEPS`` steps per epoch over ``rows`` training rows (``MIN_AUTO_BATCH`` when none has)."""
    batch = MAX_AUTO_BATCH
    while batch > MIN_AUTO_BATCH and rows < MIN_STEPS * batch:
        batch //= 2
    return batch


def auto_embedding_l2(rows: int) -> float:
    """The embedding L2 for ``rows`` training rows (see the module docstring), rounded to two
    significant digits so that it reads well and nearby sizes share fingerprints."""
    slope = math.log(L2_LARGE / L2_SMALL) / math.log(ROWS_LARGE / ROWS_SMALL)
    value = L2_SMALL * (max(rows, 1) / ROWS_SMALL) ** slope
    value = min(L2_SMALL, max(L2_LARGE, value))
    return float(f"{value:.2g}")


def resolve(cfg: TrainConfig, rows: int) -> tuple[TrainConfig, str | None]:
    """``cfg`` with an auto batch size and an auto embedding L2 sized from ``rows`` training
    rows, and a one-line note of what was chosen (None when nothing was auto)."""
    chosen = []
    changes: dict[str, object] = {}
    if cfg.batch_size == AUTO:
        changes["batch_size"] = auto_batch_size(rows)
        chosen.append(f"batch size {changes['batch_size']:,}")
    if cfg.embedding_l2 is None:  # sparse-adam applies none: 0 rather than a number it ignores
        changes["embedding_l2"] = 0.0 if cfg.embedding_optimizer == "sparse-adam" else auto_embedding_l2(rows)
        chosen.append(f"embedding L2 {changes['embedding_l2']:g}")
    if not changes:
        return cfg, None
    note = f"auto: {', '.join(chosen)} (sized from {rows:,} training rows)"
    return replace(cfg, **changes), note
