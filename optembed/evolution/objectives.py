"""Several tasks in the search: one tolerance per task, and how per-task AUCs rank candidates.

A supernet of ``T`` tasks gives every candidate ``T`` validation AUCs (the primary task's first).
The accuracy bound then holds for every task:

- a candidate is *feasible* when, for each task ``t``, its AUC on ``t`` (less its noise margin) is
  at least ``best_t - tol_t``, where ``best_t`` is the best AUC any scored candidate reached on
  task ``t`` (the bests of different tasks may come from different candidates: every task is held
  to what the supernet showed it can reach, so no task pays for another's gain);
- among candidates of equal size, and among the infeasible ones, the larger *slack*
  ``min_t(AUC_t - best_t + tol_t)`` (how far the candidate's worst task is from its bound) ranks
  first: the most nearly feasible breed on.

The paper's max-AUC search (no tolerance) maximises the mean of the tasks' AUCs (equal weights).

One task is the single-objective search exactly: feasibility is ``AUC >= best - tol`` and the
plain AUC orders ties and infeasible candidates, as it always did (:func:`rank_value`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optembed.errors import ConfigError

Tolerance = float | tuple[float, ...]


def resolve_tolerances(max_auc_drop: Tolerance | Sequence[float] | None, tasks: int, what: str = "") -> tuple[float, ...] | None:
    """One tolerance per task: a single value for all of them, or a list of exactly ``tasks``
    values (the primary task's first); ``None`` stays ``None`` (the max-AUC search). ``what``
    names the model in the message of a count mismatch."""
    if max_auc_drop is None:
        return None
    if isinstance(max_auc_drop, int | float):
        return (float(max_auc_drop),) * tasks
    values = tuple(float(v) for v in max_auc_drop)
    if len(values) == 1:
        return values * tasks
    if len(values) != tasks:
        model = f"{what} predicts" if what else "the model predicts"
        raise ConfigError(
            f"--max-auc-drop gives {len(values)} tolerances but {model} {tasks} task{'s' if tasks != 1 else ''}: "
            f"give one value for every task, or {tasks} comma-separated values (the primary task's first)"
        )
    return values


def parse_tolerances(text: str) -> Tolerance:
    """``--max-auc-drop`` as written: one number, or comma-separated numbers (one per task); a
    single number stays a float (the one-task configuration, fingerprinted as it always was)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"--max-auc-drop takes a number or comma-separated numbers (one per task), got {text!r}")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--max-auc-drop takes a number or comma-separated numbers (one per task), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def as_matrix(values: np.ndarray | Sequence[float], count: int) -> np.ndarray:
    """A scorer's answer for ``count`` candidates as ``(count, T)`` float64: ``(C,)`` is one task."""
    out = np.asarray(values, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != count:
        raise ValueError(f"the scorer returned shape {out.shape} for {count} candidates")
    return out


def rank_value(scores: np.ndarray, ref: np.ndarray, tol: np.ndarray | None) -> np.ndarray:
    """``(P, T)`` AUCs -> ``(P,)`` values that order candidates (higher first; NaN counts as
    ``-inf``): the AUC itself for one task; for several, the slack ``min_t(AUC_t - ref_t + tol_t)``
    with a tolerance, the mean AUC without one."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    if key.shape[1] == 1:
        return key[:, 0]
    if tol is None:
        return key.mean(axis=1)
    with np.errstate(invalid="ignore"):
        return (key - np.asarray(ref)[None, :] + np.asarray(tol)[None, :]).min(axis=1)


def feasible(scores: np.ndarray, margin: np.ndarray | None, ref: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """``(P,)``: every task's AUC, less its ``margin`` (noise), is at least ``ref_t - tol_t``."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    low = key if margin is None else key - np.nan_to_num(margin, nan=0.0)
    return (low >= np.asarray(ref)[None, :] - np.asarray(tol)[None, :]).all(axis=1)
