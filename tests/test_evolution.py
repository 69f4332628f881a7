"""The evolutionary search: operators and the loop, against the reference code's known defects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from optembed.errors import ConfigError
from optembed.evolution import EvolutionConfig, evolve
from optembed.evolution.operators import crossover, mutate, params_of, random_candidates, shrink_to_budget


def test_random_candidates_cover_one_to_dim() -> None:
    rng = np.random.default_rng(0)
    c = random_candidates(rng, 2000, 5, 7)
    assert c.shape == (2000, 5) and c.min() == 1 and c.max() == 7
    assert set(np.unique(c)) == set(range(1, 8))


@pytest.mark.parametrize("n_fields", [2, 3, 39])
def test_crossover_cuts_fields_and_uses_distinct_parents(n_fields: int) -> None:
    rng = np.random.default_rng(1)
    dim = 64  # far more columns than fields: a cut drawn in 1..D would show up
    parents = random_candidates(rng, 5, n_fields, dim)
    before = parents.copy()
    children, pairs, cuts = crossover(rng, parents, 3000)
    assert np.array_equal(parents, before)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert cuts.min() == 1 and cuts.max() == n_fields - 1
    for child, (a, b), cut in zip(children, pairs, cuts):
        assert np.array_equal(child[:cut], parents[a][:cut])
        assert np.array_equal(child[cut:], parents[b][cut:])
    # every ordered pair of distinct parents occurs
    assert {tuple(p) for p in pairs} == set(itertools.permutations(range(5), 2))


def test_crossover_needs_two_parents() -> None:
    with pytest.raises(ValueError):
        crossover(np.random.default_rng(0), np.ones((1, 4), dtype=np.int64), 2)


def test_mutation_copies_and_redraws_at_the_given_rate() -> None:
    rng = np.random.default_rng(2)
    parents = np.full((4, 50), 3, dtype=np.int64)
    before = parents.copy()
    mutants, which = mutate(rng, parents, 4000, 0.2, 10)
    assert np.array_equal(parents, before)  # elites are never edited in place
    assert mutants.min() >= 1 and mutants.max() <= 10
    changed = (mutants != 3).mean()
    assert abs(changed - 0.2 * 0.9) < 0.01  # a redraw lands on the old width 1 time in 10
    assert set(which) == {0, 1, 2, 3}


def test_shrink_to_budget_fits_and_keeps_shape() -> None:
    rng = np.random.default_rng(3)
    kept = rng.integers(0, 100, size=12)
    cands = random_candidates(rng, 50, 12, 32)
    budget = int(params_of(cands, kept).mean() / 3)
    fixed = shrink_to_budget(cands, kept, budget)
    assert (params_of(fixed, kept) <= budget).all()
    assert fixed.min() >= 1 and (fixed <= cands).all()
    ok = params_of(cands, kept) <= budget
    assert np.array_equal(fixed[ok], cands[ok])
    with pytest.raises(ValueError):
        shrink_to_budget(cands, kept, int(kept.sum()) - 1)


def _planted_score(target: np.ndarray):
    """A deterministic fitness peaked at ``target``; counts how many candidates it scores."""
    calls = {"rows": 0, "batches": 0}

    def score(c: np.ndarray) -> np.ndarray:
        calls["rows"] += len(c)
        calls["batches"] += 1
        return -np.abs(c - target).sum(axis=1).astype(float) + 1e-6 * c[:, 0]

    return score, calls


def test_evolve_finds_planted_optimum_and_keeps_ranking_with_scores() -> None:
    rng = np.random.default_rng(4)
    n, dim = 10, 8
    target = rng.integers(1, dim + 1, size=n)
    score, calls = _planted_score(target)
    cfg = EvolutionConfig(max_auc_drop=None, population=30, generations=40, topk=10, mutation_prob=0.15, seed=0)
    res = evolve(score, np.ones(n, dtype=np.int64), dim, cfg)
    # one scorer call per generation at most; elites and repeats are never rescored
    assert calls["batches"] <= cfg.generations + 1 and calls["rows"] == res.evaluations
    assert res.evaluations <= cfg.population + cfg.generations * (cfg.population - cfg.topk)
    assert np.array_equal(res.best, target)
    assert res.best_score == pytest.approx(score(target[None])[0])
    # every recorded candidate carries its own score, ranks are in score order, widths in 1..D
    for gen in range(cfg.generations + 1):
        rows = [r for r in res.history if r["generation"] == gen]
        assert len(rows) == cfg.population
        widths = np.array([r["widths"] for r in rows])
        assert widths.min() >= 1 and widths.max() <= dim
        np.testing.assert_allclose([r["val_auc"] for r in rows], score(widths))
        assert [r["rank"] for r in rows] == list(range(cfg.population))
        got = [r["val_auc"] for r in rows]
        assert got == sorted(got, reverse=True)
        assert sum(r["origin"] == "elite" for r in rows) == (cfg.topk if gen else 0)
    best = [r["best_auc"] for r in res.convergence]
    assert best == sorted(best)  # the best score never drops


def test_elites_survive_unchanged() -> None:
    n, dim = 6, 5
    score, _ = _planted_score(np.full(n, 3))
    res = evolve(score, np.ones(n, dtype=np.int64), dim, EvolutionConfig(max_auc_drop=None, population=12, generations=5, topk=4, seed=1))
    for gen in range(1, 6):
        previous_top = [tuple(r["widths"]) for r in res.history if r["generation"] == gen - 1 and r["rank"] < 4]
        elites = [tuple(r["widths"]) for r in res.history if r["generation"] == gen and r["origin"] == "elite"]
        assert sorted(previous_top) == sorted(elites)


def test_same_seed_same_search() -> None:
    score, _ = _planted_score(np.arange(1, 9))
    cfg = EvolutionConfig(max_auc_drop=None, population=16, generations=6, topk=6, seed=9)
    a = evolve(score, np.ones(8, dtype=np.int64), 8, cfg)
    b = evolve(score, np.ones(8, dtype=np.int64), 8, cfg)
    assert a.history == b.history


def test_budget_is_respected_and_infeasible_budget_is_refused() -> None:
    kept = np.array([100, 10, 1000, 0, 50])
    dim = 16
    score = lambda c: c.sum(axis=1).astype(float)  # bigger is better: pushes against the budget
    cfg = EvolutionConfig(max_auc_drop=None, population=20, generations=10, topk=6, param_budget=4000, seed=0)
    res = evolve(score, kept, dim, cfg)
    assert all(r["params"] <= 4000 for r in res.history)
    assert res.best_params <= 4000
    sparse = EvolutionConfig(population=10, generations=3, topk=4, target_sparsity=0.9, seed=0)
    res = evolve(score, kept, dim, sparse, total_rows=2000)
    assert all(r["params"] <= 0.1 * 2000 * dim for r in res.history)
    with pytest.raises(ConfigError, match="budget"):
        evolve(score, kept, dim, EvolutionConfig(population=4, generations=1, topk=2, param_budget=int(kept.sum()) - 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"population": 0},
        {"topk": 50},
        {"topk": 1, "crossover": 3},
        {"mutation_prob": 0.0},
        {"target_sparsity": 1.0},
        {"param_budget": 0},
        {"population": 5, "topk": 5},
    ],
)
def test_bad_configs(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        EvolutionConfig(**kwargs).validate()
