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
  ``L2_SMALL * (rows / ROWS_SMALL) ** slope``, and stays at ``L2_LARGE`` above them. Below
  ``ROWS_SMALL`` it grows as ``1 / rows`` (``L2_SMALL * ROWS_SMALL / rows``, at most ``L2_MAX``):
  the same table memorises a smaller sample sooner. Measured with the Original (3 seeds each):
  at 0.05 an 8k-row Criteo sample reached 0.741 test AUC / 0.484 logloss and a 16k-row planted
  set 0.631 / 0.525 (above its base rate on one seed); at 1.0 and 0.2-1.0 they reached
  0.753 / 0.450 and 0.69-0.70 / 0.50-0.51; Frappe's 69k rows went from 0.9615 / 0.2305 to
  0.9620 / 0.2232 at 0.1.
  A model trained under a teacher (``distill`` > 0) takes at most ``L2_SMALL``: the teacher's
  probabilities already keep it from memorising the labels (Frappe, OptEmbed distilled, 3 seeds: the
  same mean test AUC at 0.05 as at 0.14, logloss 0.2241 against 0.2276; criteo_10k within noise,
  0.7519 / 0.4586 at 0.05 against 0.7505 / 0.4544 at 1.0).

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
L2_MAX = 1.0  # the embedding L2 of the smallest samples


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
    rows = max(rows, 1)
    if rows < ROWS_SMALL:
        value = min(L2_MAX, L2_SMALL * ROWS_SMALL / rows)
    else:
        slope = math.log(L2_LARGE / L2_SMALL) / math.log(ROWS_LARGE / ROWS_SMALL)
        value = max(L2_LARGE, L2_SMALL * (rows / ROWS_SMALL) ** slope)
    return float(f"{value:.2g}")


def resolve(cfg: TrainConfig, rows: int) -> tuple[TrainConfig, str | None]:
    """``cfg`` with an auto batch size and an auto embedding L2 sized from ``rows`` training
    rows, and a one-line note of what was chosen (None when nothing was auto)."""
    chosen = []
    changes: dict[str, object] = {}
    if cfg.batch_size == AUTO:
        changes["batch_size"] = auto_batch_size(rows)
        chosen.append(f"batch size {changes['batch_size']:,}")
    capped = ""
    if cfg.embedding_l2 is None:  # sparse-adam applies none: 0 rather than a number it ignores
        l2 = auto_embedding_l2(rows)
        if cfg.embedding_optimizer == "sparse-adam":
            l2 = 0.0
        elif cfg.distill > 0 and l2 > L2_SMALL:
            l2, capped = L2_SMALL, f", at most {L2_SMALL:g} under a teacher"
        changes["embedding_l2"] = l2
        chosen.append(f"embedding L2 {l2:g}")
    if not changes:
        return cfg, None
    note = f"auto: {', '.join(chosen)} (sized from {rows:,} training rows{capped})"
    return replace(cfg, **changes), note
