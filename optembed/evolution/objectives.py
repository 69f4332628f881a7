"""Several tasks in the search: one tolerance per task, and how per-task AUCs rank candidates.

A supernet of ``T`` tasks gives every candidate ``T`` validation AUCs (the primary task's first).
The accuracy bound then holds for every task, measured from one *reference* candidate:

- the reference is the scored candidate whose worst task is nearest that task's best AUC seen:
  it maximises ``min_t(AUC_t - best_t)``, ``best_t`` the best AUC any candidate reached on task
  ``t`` (:func:`reference_index`). With one task it is the best candidate. With several, a
  candidate that gains on one task what it costs another is no reference: the tasks' bests may
  come from different candidates, which no single model reaches together (a narrowing that helps
  the dense task and ruins the sparse one would otherwise leave no candidate, not even the full
  width, within every task's tolerance);
- a candidate is *feasible* when, for each task ``t``, its AUC on ``t`` (less its noise margin) is
  at least ``ref_t - tol_t`` (``ref_t`` the reference's AUC on ``t``);
- among candidates of equal size, and among the infeasible ones, the larger *slack*
  ``min_t(AUC_t - ref_t + tol_t)`` (how far the candidate's worst task is from its bound) ranks
  first: the most nearly feasible breed on.

The paper's max-AUC search (no tolerance) maximises the mean of the tasks' AUCs (equal weights).

One task is the single-objective search exactly: the reference is the best AUC seen, feasibility
is ``AUC >= best - tol``, and the plain AUC orders ties and infeasible candidates, as it always did
(:func:`rank_value`).
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


def reference_index(scores: np.ndarray) -> int | None:
    """The row of ``(M, T)`` scores that maximises ``min_t(score_t - best_t)`` (``best_t`` the
    column's best finite score; the first such row); ``None`` when a task has no finite score.
    With one task: the first row of the best score."""
    key = np.where(np.isfinite(scores), scores, -np.inf)
    if key.shape[0] == 0:
        return None
    top = key.max(axis=0)
    if not np.isfinite(top).all():
        return None
    return int(np.argmax((key - top[None, :]).min(axis=1)))


def reference_scores(scores: np.ndarray) -> np.ndarray:
    """Every task's score of the reference row (:func:`reference_index`); without one, each
    task's best finite score (0 where it has none)."""
    i = reference_index(scores)
    if i is not None:
        return np.asarray(scores[i], dtype=np.float64)
    key = np.where(np.isfinite(scores), scores, -np.inf)
    top = key.max(axis=0) if key.shape[0] else np.zeros(scores.shape[1])
    return np.where(np.isfinite(top), top, 0.0)
