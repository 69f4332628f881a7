"""Candidate generation for the width search: random draws, crossover, mutation, a size budget.

A candidate is one width per field, an ``int64`` row of values in ``1..dim``; a population is a
``(count, n_fields)`` array. Every operator returns new arrays and never edits its inputs.
"""

from __future__ import annotations

import numpy as np


def random_candidates(rng: np.random.Generator, count: int, n_fields: int, dim: int) -> np.ndarray:
    """``count`` candidates with every width drawn uniformly from ``1..dim``."""
    return rng.integers(1, dim + 1, size=(count, n_fields), dtype=np.int64)


def crossover(
    rng: np.random.Generator, parents: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-point crossover of two distinct parents.

    Child ``c`` takes fields ``[0, cut)`` from parent ``pairs[c, 0]`` and ``[cut, n)`` from
    ``pairs[c, 1]``, with ``cut`` in ``1..n-1`` (a field cut, never a column of the
    embedding). Returns ``(children, pairs, cuts)``. Needs at least two parents; with a single
    field the child is a copy of its first parent.
    """
    k, n = parents.shape
    if k < 2:
        raise ValueError("crossover needs at least two parents")
    first = rng.integers(0, k, size=count)
    second = (first + rng.integers(1, k, size=count)) % k  # uniform over the other parents
    cuts = rng.integers(1, n, size=count) if n > 1 else np.ones(count, dtype=np.int64)
    take_first = np.arange(n)[None, :] < cuts[:, None]
    children = np.where(take_first, parents[first], parents[second])
    return children, np.stack([first, second], axis=1), cuts


def mutate(
    rng: np.random.Generator, parents: np.ndarray, count: int, prob: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of random parents with each width redrawn from ``1..dim`` with probability ``prob``.

    Returns ``(mutants, parent_index)``.
    """
    k, n = parents.shape
    which = rng.integers(0, k, size=count)
    mutants = parents[which].copy()
    redraw = rng.random((count, n)) < prob
    mutants[redraw] = rng.integers(1, dim + 1, size=int(redraw.sum()))
    return mutants, which


def params_of(candidates: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Embedding parameters of each candidate: ``sum_i kept_rows_i * width_i``."""
    return candidates.astype(np.int64) @ kept.astype(np.int64)


def shrink_to_budget(candidates: np.ndarray, kept: np.ndarray, budget: int) -> np.ndarray:
    """Scale the widths of over-budget candidates down (keeping their shape) until they fit.

    Each over-budget candidate ``w`` becomes ``max(1, floor(w * s))`` with the largest ``s`` in
    ``(0, 1]`` (to bisection precision) that meets ``budget``. Needs ``sum(kept) <= budget``.
    """
    if int(kept.sum()) > budget:
        raise ValueError("no candidate can meet the budget")
    out = candidates.copy()
    over = params_of(out, kept) > budget
    if not over.any():
        return out
    w = candidates[over].astype(np.float64)
    lo, hi = np.zeros(len(w)), np.ones(len(w))
    for _ in range(50):
        mid = (lo + hi) / 2
        fits = params_of(np.maximum(1, np.floor(w * mid[:, None])).astype(np.int64), kept) <= budget
        lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid)
    out[over] = np.maximum(1, np.floor(w * lo[:, None])).astype(np.int64)
    return out
