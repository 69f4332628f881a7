"""The evolutionary loop: score a random population, then keep the best and breed from them.

Scores are computed once per distinct candidate (remembered across generations) and every
generation's new candidates go to the scorer in a single call, so a batched scorer can
evaluate them together. A population is always held as widths, scores and origins indexed
by one ordering, so a ranking can never drift away from the scores it came from.

With ``max_auc_drop`` set the search is accuracy-bounded: a candidate is *feasible* when its
score is within ``max_auc_drop`` of the best score seen so far; elites are the feasible
candidates with the fewest parameters (then the infeasible ones by score), and the result is the
smallest candidate ever scored within the tolerance of the best one ever scored. Without it, the
paper's rule: elites and result by score alone.

A scorer of several tasks gives ``(C, T)`` scores: then every task has its tolerance, measured
from the reference candidate's score on that task (the one whose worst task is nearest that
task's best score seen; with one task, the best candidate), a candidate is feasible only when
each task is within its tolerance, and the max-AUC search ranks by the mean of the tasks' scores
(:mod:`optembed.evolution.objectives`).
The records keep the primary task's score under ``val_auc`` (``best_auc``, ...) and every task's
under ``val_auc_<task>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optembed.errors import ConfigError
from optembed.evolution.config import EvolutionConfig
from optembed.evolution.objectives import as_matrix, feasible, rank_value, reference_scores, resolve_tolerances
from optembed.evolution.operators import crossover, mutate, params_of, random_candidates, shrink_to_budget

Scorer = Callable[[np.ndarray], Any]  # (C, n) widths -> C scores (or (C, T)), or (scores, standard errors)
GenerationHook = Callable[[dict[str, Any]], None]
MAX_ROUNDS = 20  # rejection rounds before over-budget or duplicate offspring are repaired instead


@dataclass
class SearchResult:
    best: np.ndarray  # (n_fields,) widths
    best_score: float  # the primary task's score of ``best``
    best_params: int
    history: list[dict[str, Any]] = field(default_factory=list)  # every member of every generation
    convergence: list[dict[str, Any]] = field(default_factory=list)  # one row per generation
    evaluations: int = 0
    max_score: float = float("nan")  # the best score of any candidate scored (the primary task's)
    front: list[dict[str, Any]] = field(default_factory=list)  # every scored candidate no other beats in both size and score
    tasks: list[str] = field(default_factory=list)  # the tasks' names (several tasks only)
    best_scores: list[float] = field(default_factory=list)  # every task's score of ``best``
    max_scores: list[float] = field(default_factory=list)  # every task's best score of any candidate
    reference_scores: list[float] = field(default_factory=list)  # every task's score of the tolerances' reference


def task_columns(prefix: str, values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``{prefix_<task>: value}`` for several tasks; nothing for one (its value is the plain key)."""
    if len(values) < 2:
        return {}
    return {f"{prefix}_{name}": float(v) for name, v in zip(names, values, strict=True)}


def rank_order(
    scores: np.ndarray, params: np.ndarray, max_drop: float | Sequence[float] | None, ref: float | Sequence[float] | np.ndarray,
    margin: np.ndarray | None = None,
) -> np.ndarray:
    """Indices from best to worst. Without ``max_drop``: by score (NaN last), stable. With it:
    candidates scoring at least ``ref - max_drop`` (after subtracting their noise ``margin``) first,
    fewest parameters first (then by score), then the rest by score.

    ``scores`` (and ``margin``) are ``(P,)`` for one task or ``(P, T)`` for several; ``max_drop``
    and ``ref`` are then one value per task (or one for all), and a candidate is feasible when
    every task is within its tolerance; "by score" is by :func:`~optembed.evolution.objectives.rank_value`
    (the mean AUC without a tolerance, the worst task's slack with one)."""
    key = np.asarray(scores, dtype=np.float64)
    cut = None if margin is None else np.asarray(margin, dtype=np.float64)
    if key.ndim == 1:
        key = key[:, None]
        cut = None if cut is None else cut.reshape(-1, 1)
    tasks = key.shape[1]
    if max_drop is None:
        return np.argsort(-rank_value(key, np.zeros(tasks), None), kind="stable")
    tol = np.broadcast_to(np.asarray(max_drop, dtype=np.float64), (tasks,))
    best = np.broadcast_to(np.asarray(ref, dtype=np.float64), (tasks,))
    ok = feasible(key, cut, best, tol)
    return np.lexsort((-rank_value(key, best, tol), np.where(ok, params, 0), ~ok))


def pareto_front(params: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of the candidates no other candidate beats with fewer-or-equal parameters and a
    higher score (ties: the first of equal pairs), ordered by parameters.

    With ``(P, T)`` scores (several tasks) a candidate is left out when a smaller-or-equal one
    scores at least as high on every task (ties between equal sizes ordered by the mean AUC)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    key = np.where(np.isnan(values), -np.inf, values)
    if key.ndim == 2:
        order = np.lexsort((-key.mean(axis=1), params))
        kept: list[int] = []
        for i in order:
            if not kept or not (key[kept] >= key[i]).all(axis=1).any():
                kept.append(int(i))
        return np.asarray(kept, dtype=np.int64)
    order = np.lexsort((-key, params))
    front, best = [], -np.inf
    for i in order:
        if key[i] > best:
            front.append(int(i))
            best = key[i]
    return np.asarray(front, dtype=np.int64)


@dataclass
class _Population:
    widths: np.ndarray  # (P, n)
    scores: np.ndarray  # (P, T): every task's score
    origins: list[str]

    def ranked(self, order: np.ndarray | None = None) -> _Population:
        if order is None:
            order = rank_order(self.scores, np.zeros(len(self.scores)), None, 0.0)
        return _Population(self.widths[order], self.scores[order], [self.origins[i] for i in order])

    def top(self, k: int, order: np.ndarray | None = None) -> _Population:
        ranked = self.ranked(order)
        return _Population(ranked.widths[:k].copy(), ranked.scores[:k].copy(), ["elite"] * min(k, len(ranked.origins)))


def evolve(
    score: Scorer,
    kept: np.ndarray,
    dim: int,
    cfg: EvolutionConfig,
    total_rows: int | None = None,
    on_generation: GenerationHook | None = None,
    tasks: Sequence[str] = (),
) -> SearchResult:
    """Search one width in ``1..dim`` per field maximising ``score``.

    ``kept`` holds the rows each field keeps under the row mask (the parameter count of a
    candidate is ``kept @ widths``); ``total_rows`` (default ``kept.sum()``) is the table's
    full row count, the base of ``cfg.target_sparsity``. ``score`` maps ``(C, n)`` widths to
    ``C`` scores (higher is better), or a pair ``(scores, standard errors)``: then, in the
    accuracy-bounded search, a candidate is feasible only when its score less ``cfg.noise_z``
    standard errors is within the tolerance (a measured AUC is no better than its noise).
    Scores (and errors) of shape ``(C, T)`` are ``T`` tasks' (the primary's first), each held to
    its own tolerance (``cfg.max_auc_drop``: one for all tasks or one per task); ``tasks`` names
    them in the records (default ``task0``, ``task1``, ...).
    """
    cfg.validate()
    kept = np.asarray(kept, dtype=np.int64)
    if dim < 1 or kept.ndim != 1 or len(kept) == 0:
        raise ConfigError("the search needs at least one field and a positive embedding width")
    total = int(kept.sum()) if total_rows is None else int(total_rows)
    budget = cfg.budget(total, dim)
    if budget is not None and int(kept.sum()) > budget:
        raise ConfigError(
            f"no candidate can meet the budget: even width 1 everywhere needs {int(kept.sum()):,} "
            f"embedding parameters, above the budget of {budget:,}"
        )
    rng = np.random.default_rng(cfg.seed)
    memo: dict[bytes, np.ndarray] = {}  # every task's score of every candidate scored
    noise: dict[bytes, np.ndarray] = {}  # standard errors, when the scorer gives them
    shape: dict[str, Any] = {}  # the number of tasks, their names and tolerances, once the scorer answered

    def tolerances() -> np.ndarray | None:
        tol = resolve_tolerances(cfg.max_auc_drop, shape["tasks"])
        return None if tol is None else np.asarray(tol, dtype=np.float64)

    def margins(widths: np.ndarray) -> np.ndarray:
        zero = np.zeros(shape["tasks"])
        return np.array([cfg.noise_z * noise.get(row.tobytes(), zero) for row in widths], dtype=np.float64).reshape(
            len(widths), shape["tasks"]
        )

    def best_seen() -> np.ndarray:
        """Every task's score of the reference candidate so far (one task: the best finite score,
        0 while there is none)."""
        return reference_scores(np.stack(list(memo.values())))

    def order_of(pop: _Population) -> np.ndarray:
        return rank_order(pop.scores, params_of(pop.widths, kept), shape["tol"], best_seen(), margins(pop.widths))

    n_c, n_m = cfg.counts()
    result = SearchResult(best=np.empty(0, np.int64), best_score=float("nan"), best_params=0)

    def scored(widths: np.ndarray, origins: list[str]) -> tuple[_Population, int]:
        fresh = [i for i, row in enumerate(widths) if row.tobytes() not in memo]
        unique: dict[bytes, int] = {}
        for i in fresh:
            unique.setdefault(widths[i].tobytes(), i)
        if unique:
            rows = np.stack([widths[i] for i in unique.values()])
            answer = score(rows)
            errors = None
            if isinstance(answer, tuple):
                answer, errors = answer
            values = as_matrix(answer, len(rows))
            if shape and values.shape[1] != shape["tasks"]:
                raise ValueError(f"the scorer gave {values.shape[1]} tasks' scores after {shape['tasks']}")
            if not shape:
                shape["tasks"] = values.shape[1]
                shape["names"] = list(tasks) if len(tasks) == values.shape[1] else [f"task{k}" for k in range(values.shape[1])]
                shape["tol"] = tolerances()
            memo.update(zip(unique.keys(), values))
            if errors is not None:
                noise.update(zip(unique.keys(), as_matrix(errors, len(rows))))
        scores = np.stack([memo[row.tobytes()] for row in widths])
        return _Population(widths, scores, origins), len(unique)

    def offspring(make: Callable[[int], np.ndarray], count: int, taken: set[bytes]) -> np.ndarray:
        """``count`` new candidates within the budget and not already in the population."""
        accepted: list[np.ndarray] = []
        for _ in range(MAX_ROUNDS):
            need = count - len(accepted)
            if need <= 0:
                break
            batch = make(2 * need)
            ok = np.ones(len(batch), bool) if budget is None else params_of(batch, kept) <= budget
            for row in batch[ok]:
                key = row.tobytes()
                if key not in taken:
                    taken.add(key)
                    accepted.append(row)
                    if len(accepted) == count:
                        break
        need = count - len(accepted)
        if need > 0:  # the budget or a converged population left too few: repair instead of reject
            repaired = make(need)
            if budget is not None:
                repaired = shrink_to_budget(repaired, kept, budget)
            accepted.extend(repaired)
        return np.stack(accepted) if accepted else np.empty((0, len(kept)), np.int64)

    def summary(values: np.ndarray, how: Callable[..., Any]) -> float:
        return float(how(values)) if not np.isnan(values).all() else float("nan")

    def record(generation: int, pop: _Population, evaluated: int, started: float) -> None:
        ranked = pop.ranked(order_of(pop))
        params = params_of(ranked.widths, kept)
        names = shape["names"]
        for rank, (w, s, o, p) in enumerate(zip(ranked.widths, ranked.scores, ranked.origins, params)):
            result.history.append(
                {"generation": generation, "rank": rank, "origin": o, "widths": w.tolist(), "params": int(p),
                 "val_auc": float(s[0]), **task_columns("val_auc", s, names)}
            )
        primary = ranked.scores[:, 0]
        row = {
            "generation": generation,
            "best_auc": float(primary[0]),
            "mean_auc": summary(primary, np.nanmean),
            "best_params": int(params[0]),
            "best_sparsity": 1.0 - int(params[0]) / (total * dim),
            "max_auc": summary(primary, np.nanmax),
            "evaluated": evaluated,
            "seconds": time.perf_counter() - started,
        }
        if shape["tasks"] > 1:
            row.update(task_columns("best_auc", ranked.scores[0], names))
            row.update(task_columns("max_auc", np.array([summary(c, np.nanmax) for c in ranked.scores.T]), names))
        result.convergence.append(row)
        result.evaluations += evaluated
        if on_generation is not None:
            on_generation(row)

    started = time.perf_counter()
    taken: set[bytes] = set()
    full = np.full((1, len(kept)), dim, dtype=np.int64)
    seeded = cfg.max_auc_drop is not None and (budget is None or int(params_of(full, kept)[0]) <= budget)
    if seeded:  # the accuracy-bounded search measures its tolerance from at least the full widths
        taken.add(full[0].tobytes())
    initial = offspring(lambda c: random_candidates(rng, c, len(kept), dim), cfg.population - int(seeded), taken)
    if seeded:
        initial = np.concatenate([full, initial])
    pop, evaluated = scored(initial, ["random"] * len(initial))
    record(0, pop, evaluated, started)
    for generation in range(1, cfg.generations + 1):
        started = time.perf_counter()
        elites = pop.top(cfg.topk, order_of(pop))
        taken = {row.tobytes() for row in elites.widths}
        children = offspring(lambda c: crossover(rng, elites.widths, c)[0], n_c, taken) if n_c else elites.widths[:0]
        mutants = (
            offspring(lambda c: mutate(rng, elites.widths, c, cfg.mutation_prob, dim)[0], n_m, taken)
            if n_m
            else elites.widths[:0]
        )
        widths = np.concatenate([elites.widths, children, mutants])
        origins = elites.origins + ["crossover"] * len(children) + ["mutation"] * len(mutants)
        pop, evaluated = scored(widths, origins)
        record(generation, pop, evaluated, started)
    everything = np.stack([np.frombuffer(k, dtype=np.int64) for k in memo])
    every_score = np.stack(list(memo.values()))
    every_params = params_of(everything, kept)
    names = shape["names"]
    result.max_scores = [float(c[np.isfinite(c)].max()) if np.isfinite(c).any() else float("nan") for c in every_score.T]
    result.max_score = result.max_scores[0]
    if shape["tol"] is None:
        best = pop.ranked()
        result.best = best.widths[0].copy()
        chosen = best.scores[0]
    else:
        result.reference_scores = reference_scores(every_score).tolist()
        i = int(rank_order(every_score, every_params, shape["tol"], np.asarray(result.reference_scores), margins(everything))[0])
        result.best = everything[i].copy()
        chosen = every_score[i]
    result.best_score = float(chosen[0])
    result.best_params = int(params_of(result.best[None, :], kept)[0])
    if shape["tasks"] > 1:
        result.tasks, result.best_scores = list(names), [float(v) for v in chosen]
    else:
        result.max_scores, result.reference_scores = [], []
    result.front = [
        {"widths": everything[i].tolist(), "params": int(every_params[i]), "val_auc": float(every_score[i, 0]),
         **task_columns("val_auc", every_score[i], names)}
        for i in pareto_front(every_params, every_score)
    ]
    return result
