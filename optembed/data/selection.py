"""A selection split: training rows held out of the supernet's training for the search to score on.

The search makes hundreds of choices (row levels, widths) by their validation AUC; when the same
validation split then early-stops the re-training and reports its score, that score has been
fitted twice. With a selection split the supernet trains on the training rows less a random
``fraction`` of them, the search scores its candidates on those held-out rows, and the validation
split stays out of the search's choices: the re-training (which trains on every training row)
is early-stopped and reported on data that no choice has seen.

The rows are drawn once, by a seeded permutation, and stored with the supernet (its
``selection.pt``), so the search reads exactly the rows the supernet did not train on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError

MAX_FRACTION = 0.5


def check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= MAX_FRACTION:
        raise ConfigError(f"--selection must be a fraction of the training rows in [0, {MAX_FRACTION:g}], got {fraction:g}")


def held_count(n: int, fraction: float) -> int:
    """How many of ``n`` training rows a ``fraction`` holds out: ``round(n * fraction)``, at least
    one when ``fraction`` > 0, and one row always left to train on (0 below two rows)."""
    if fraction == 0.0 or n < 2:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


def choose_rows(n: int, fraction: float, seed: int) -> Tensor:
    """Sorted ``int64`` indices of ``round(n * fraction)`` of ``n`` training rows (at least one
    when ``fraction`` > 0, and one row always left to train on), drawn by a permutation seeded
    with ``seed``; empty for ``fraction`` 0."""
    check_fraction(fraction)
    k = held_count(n, fraction)
    if k == 0:
        return torch.empty(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(n, generator=generator)[:k]).values


def split_off(split: SplitTensors, rows: Tensor) -> tuple[SplitTensors, SplitTensors]:
    """``(rest, selected)``: the rows of ``split`` not in ``rows`` and those in it, each in their
    original order."""
    n = len(split)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ConfigError(f"the selection rows reach row {int(rows.max()):,} of a {n:,}-row training split")
    chosen = torch.zeros(n, dtype=torch.bool, device=split.x.device)
    chosen[rows.to(split.x.device)] = True
    return take(split, ~chosen), take(split, chosen)


def take(split: SplitTensors, which: Tensor) -> SplitTensors:
    """The rows of ``split`` that ``which`` (a boolean mask or indices) selects."""
    out = SplitTensors(split.x[which], split.y[which], split.tasks)
    if split.x.device.type == "cpu" and split.x.is_pinned():  # a split kept in pinned host memory stays there
        out = SplitTensors(out.x.pin_memory(), out.y.pin_memory(), out.tasks)
    return out
