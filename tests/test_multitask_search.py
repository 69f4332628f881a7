"""The row and width search of a multi-task supernet: every task scored, every task held to its
own tolerance, the one-task search unchanged.

The planted model is set by hand: a logistic regression over the embeddings whose dense task (a
click) reads field ``a`` and, as harmful noise, the last column of field ``b``, which is the only
signal of the sparse task (a conversion). Narrowing (or pruning) ``b`` raises the click's AUC and
destroys the conversion's: a search held to both tasks must keep ``b``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError
from optembed.evolution import EvolutionConfig, evolve
from optembed.evolution.fitness import BatchedScorer, NaiveScorer, PairedScorer
from optembed.evolution.objectives import parse_tolerances, resolve_tolerances
from optembed.evolution.row_levels import RowMaskScorer, field_rankings, level_keep, search_row_levels
from optembed.evolution.search import pareto_front, rank_order
from optembed.fingerprint import fingerprint_params
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.registry import build_model

CPU = torch.device("cpu")


def brute_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Every positive-negative pair compared (ties one half)."""
    y, s = labels.numpy() > 0.5, scores.double().numpy()
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg)))


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# -- one task: the search as it was -------------------------------------------------------------
TABLE = np.random.default_rng(11).uniform(0.0, 0.004, size=(6, 9))  # a score per field and width
TABLE[0] = np.linspace(0.0, 0.012, 9)  # fields 0 and 1 gain with width
TABLE[1] = np.linspace(0.0, 0.008, 9)
ERRORS = np.random.default_rng(12).uniform(0.0002, 0.0008, size=9)
KEPT = np.array([50, 20, 7, 100, 3, 40], dtype=np.int64)


def _table_fitness(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 0.7 + TABLE[np.arange(6), widths].sum(axis=1), ERRORS[widths[:, 3]]


def _summary(res) -> dict:
    conv = [{k: v for k, v in r.items() if k != "seconds"} for r in res.convergence]
    return {"best": res.best.tolist(), "best_params": res.best_params, "best_score": res.best_score,
            "max_score": res.max_score, "evaluations": res.evaluations, "history": _digest(res.history),
            "conv": _digest(conv), "front": _digest(res.front)}


# recorded with the search as it was before it scored several tasks (same configurations, same fitness)
PINNED = {
    "bounded": ({"population": 16, "generations": 8, "topk": 5, "seed": 3, "max_auc_drop": 0.002},
                {"best": [8, 8, 2, 1, 8, 4], "best_params": 858, "best_score": 0.7350032696222998,
                 "max_score": 0.7350032696222998, "evaluations": 80, "history": "502b21825faf785b",
                 "conv": "0d61d13d5c9790f4", "front": "9b7375c6a22de360"}),
    "bounded_z0": ({"population": 16, "generations": 8, "topk": 5, "seed": 4, "max_auc_drop": 0.001, "noise_z": 0.0},
                   {"best": [8, 8, 2, 6, 2, 4], "best_params": 1340, "best_score": 0.7350988996071021,
                    "max_score": 0.7351177126479316, "evaluations": 76, "history": "e131536474c338fa",
                    "conv": "0104e17bb1befaf8", "front": "ef275ff18181b2f6"}),
    "paper": ({"population": 16, "generations": 8, "topk": 5, "seed": 5, "max_auc_drop": None},
              {"best": [8, 7, 4, 1, 8, 4], "best_params": 852, "best_score": 0.7322945365165714,
               "max_score": 0.7322945365165714, "evaluations": 91, "history": "d7ee2284229a1079",
               "conv": "250cf4e4ae08c58c", "front": "85aafa1b52954df1"}),
    "budget": ({"population": 12, "generations": 5, "topk": 4, "seed": 6, "max_auc_drop": 0.003, "param_budget": 900},
               {"best": [7, 7, 2, 1, 8, 4], "best_params": 788, "best_score": 0.7325032696222997,
                "max_score": 0.7335032696222997, "evaluations": 43, "history": "5bff3db27add5975",
                "conv": "a37836f71e250036", "front": "a6f74aa8a205ed3f"}),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_one_task_search_unchanged(name: str) -> None:
    """A one-task search gives exactly the records it gave before several tasks were searched,
    whether its scorer answers ``(C,)`` or a ``(C, 1)`` column."""
    kwargs, want = PINNED[name]
    cfg = EvolutionConfig(**kwargs)  # type: ignore[arg-type]
    plain = _table_fitness if cfg.max_auc_drop is not None else (lambda c: _table_fitness(c)[0])
    got = evolve(plain, KEPT, 8, cfg, total_rows=300)
    assert _summary(got) == want
    assert got.tasks == [] and got.best_scores == [] and got.max_scores == []
    assert all("val_auc_task0" not in r for r in got.history)

    def column(c: np.ndarray):
        answer = plain(c)
        return tuple(a[:, None] for a in answer) if isinstance(answer, tuple) else answer[:, None]

    assert _summary(evolve(column, KEPT, 8, cfg, total_rows=300)) == want


def _hand_built_one_task() -> tuple:
    """A DeepFM with seeded weights, field 3 without signal and field 1's rows past 10 alike, and
    labels drawn from its own logits (the model the pinned row and width numbers came from)."""
    torch.manual_seed(0)
    cards = [12, 30, 9, 25]
    model = build_model(cards, ModelConfig("deepfm", embed_dim=8, mlp_dims=(16,), dropout=0.0), "optembed").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        emb = model.embedder.embedding
        for f, first in ((3, 0), (1, 10)):
            start, size = int(emb.offsets[f]), cards[f]
            emb.weight[start + first : start + size] = emb.weight[start + first]
            model.linear.weight[start + first : start + size] = model.linear.weight[start + first]
    n = 4000
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], 1)
    with torch.no_grad():
        z = model(x)
        z = (z - z.mean()) / z.std() * 2
    y = (torch.rand(n, generator=g) < torch.sigmoid(z)).float()
    return model, SplitTensors(x.int(), y), cards


def test_one_task_rows_and_scores_unchanged() -> None:
    """Row levels, batched and paired scores and a search over them, on a hand-built one-task
    model: as recorded before several tasks were searched."""
    model, val, cards = _hand_built_one_task()
    rows = search_row_levels(model, val, CPU, torch.ones(sum(cards), dtype=torch.bool), 0.003, levels=(0.5, 0.25, 0.0))
    assert rows.levels == [1.0, 0.25, 1.0, 0.5] and int(rows.keep.sum()) == 49
    assert (rows.base_auc, rows.final_auc, rows.best_auc) == pytest.approx(
        (0.8605337355337356, 0.8604146104146104, 0.8605368605368605), abs=1e-9)
    assert [s["accepted"] for s in rows.steps] == [s["accepted"] for s in rows.steps]  # plain keys only
    assert all(set(s) == {"field", "level", "val_auc", "accepted", "reference", "lower_bound"} for s in rows.steps)
    scorer = BatchedScorer(model, val, CPU, rows_per_pass=2000, group=5)
    cands = np.random.default_rng(0).integers(1, 9, size=(7, 4))
    cands[0] = 8
    want = [0.8605337355337356, 0.8597369847369848, 0.859927984927985, 0.8608224858224858, 0.8608513608513608,
            0.8598377348377348, 0.8601692351692352]
    assert scorer(cands).shape == (7,) and scorer(cands).tolist() == pytest.approx(want, abs=1e-9)
    scores, errors = PairedScorer(scorer, cands[0])(cands)
    assert errors.tolist() == pytest.approx([0.0, 0.0009015449883313776, 0.0007433446229957901, 0.00041600406976582255,
                                             0.0005450729076939941, 0.0007875417808449438, 0.0006649654170409717], abs=1e-9)
    res = evolve(PairedScorer(scorer, cands[0]), np.array(cards), 8,
                 EvolutionConfig(population=10, generations=3, topk=4, seed=0, max_auc_drop=0.002))
    assert res.best.tolist() == [7, 4, 2, 1] and res.best_params == 247 and res.evaluations == 27


def test_one_task_fingerprint_params_unchanged() -> None:
    from pipelines import search

    default = search.stage_params(search.SearchStage(), True)
    assert default["evolution"]["max_auc_drop"] == 0.001
    one = EvolutionConfig(max_auc_drop=parse_tolerances("0.001"))
    assert search.stage_params(search.SearchStage(evolution=one), True) == default
    two = search.stage_params(search.SearchStage(evolution=EvolutionConfig(max_auc_drop=parse_tolerances("0.001,0.004"))), True)
    assert two["evolution"]["max_auc_drop"] == [0.001, 0.004]
    assert {k: v for k, v in two["evolution"].items() if k != "max_auc_drop"} == {
        k: v for k, v in default["evolution"].items() if k != "max_auc_drop"}


# -- tolerances ---------------------------------------------------------------------------------
def test_tolerance_parsing_and_counts() -> None:
    assert parse_tolerances("0.002") == 0.002 and isinstance(parse_tolerances("0.002"), float)
    assert parse_tolerances(" 0.001, 0.005 ") == (0.001, 0.005)
    for bad in ("", "a", "0.1,", "0.1,,0.2", "0.1;0.2"):
        with pytest.raises(ConfigError, match="--max-auc-drop"):
            parse_tolerances(bad)
    assert resolve_tolerances(0.002, 3) == (0.002, 0.002, 0.002)
    assert resolve_tolerances((0.001, 0.01), 2) == (0.001, 0.01)
    assert resolve_tolerances((0.003,), 2) == (0.003, 0.003)
    assert resolve_tolerances(None, 2) is None
    with pytest.raises(ConfigError, match="gives 3 tolerances but supernet ab12 predicts 2 tasks"):
        resolve_tolerances((0.001, 0.002, 0.003), 2, "supernet ab12")
    with pytest.raises(ConfigError, match="predicts 1 task:"):
        resolve_tolerances((0.001, 0.002), 1)
    EvolutionConfig(max_auc_drop=(0.001, 0.2)).validate()
    for bad_drop in ((0.001, 0.5), (0.001, -0.1), (0.001, float("nan")), ()):
        with pytest.raises(ConfigError, match="--max-auc-drop"):
            EvolutionConfig(max_auc_drop=bad_drop).validate()  # type: ignore[arg-type]
    # the search itself refuses a count that does not match its scorer's tasks
    two = lambda c: np.stack([np.full(len(c), 0.7), np.full(len(c), 0.6)], axis=1)  # noqa: E731
    with pytest.raises(ConfigError, match="3 tolerances"):
        evolve(two, np.ones(3, np.int64), 4, EvolutionConfig(population=4, generations=1, topk=2, max_auc_drop=(0.1, 0.1, 0.1)))


def test_toml_search_table_takes_one_tolerance_per_task() -> None:
    from pipelines.chain import search_stage

    stage = search_stage({"max_auc_drop": [0.001, 0.01], "population": 6, "topk": 3}, "x", "cpu", "run.toml")
    assert stage.evolution.max_auc_drop == (0.001, 0.01)
    assert search_stage({"max_auc_drop": 0.002}, "x", "cpu").evolution.max_auc_drop == 0.002
    with pytest.raises(ConfigError, match="max_auc_drop"):
        search_stage({"max_auc_drop": "0.1"}, "x", "cpu", "run.toml")


# -- ranking several tasks ----------------------------------------------------------------------
def test_rank_order_of_several_tasks_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        scores = np.round(rng.uniform(0.6, 0.7, size=(14, 2)), 3)
        scores[rng.integers(0, 14), rng.integers(0, 2)] = np.nan
        margin = np.round(rng.uniform(0.0, 0.004, size=(14, 2)), 4)
        params = rng.integers(1, 6, size=14) * 10
        tol = np.array([0.01, 0.03])
        ref = np.nanmax(scores, axis=0)
        order = rank_order(scores, params, tol, ref, margin)
        key = np.nan_to_num(scores, nan=-np.inf)

        def ok(i: int) -> bool:
            return all(key[i, t] - margin[i, t] >= ref[t] - tol[t] for t in range(2))

        def slack(i: int) -> float:
            return min(key[i, t] - ref[t] + tol[t] for t in range(2))

        want = sorted(range(14), key=lambda i: (not ok(i), params[i] if ok(i) else 0, -slack(i)))
        assert [(ok(i), params[i] if ok(i) else 0, slack(i)) for i in order] == [
            (ok(i), params[i] if ok(i) else 0, slack(i)) for i in want]
        # the max-AUC search: by the mean AUC (NaN last)
        plain = rank_order(scores, params, None, 0.0)
        means = [np.mean(key[i]) for i in plain]
        assert means == sorted(means, reverse=True)


def test_pareto_front_of_several_tasks_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        params = rng.integers(1, 6, size=16)
        scores = np.round(rng.uniform(0, 1, size=(16, 2)), 1)
        scores[3] = scores[5]
        params[3] = params[5]  # an exact duplicate
        front = pareto_front(params, scores).tolist()
        assert sorted(params[front].tolist()) == params[front].tolist()

        def dominated(i: int) -> bool:
            return any(
                params[j] <= params[i] and (scores[j] >= scores[i]).all()
                and (params[j] < params[i] or (scores[j] > scores[i]).any())
                for j in range(16)
            )

        undominated = [i for i in range(16) if not dominated(i)]
        groups = {(int(params[i]), *scores[i].tolist()) for i in undominated}
        assert len(front) == len(groups) and {(int(params[i]), *scores[i].tolist()) for i in front} == groups


def test_evolve_of_several_tasks_against_brute_force_small_space() -> None:
    """Over a space small enough to score completely: the smallest candidate that is within each
    task's tolerance of that task's best, and the max-AUC search's highest mean AUC."""
    n, dim = 3, 3
    rng = np.random.default_rng(7)
    space = list(product(range(1, dim + 1), repeat=n))
    table = {w: rng.uniform(0.70, 0.72, size=2) for w in space}

    def score(widths: np.ndarray) -> np.ndarray:
        return np.stack([table[tuple(int(v) for v in w)] for w in widths])

    kept = np.array([5, 3, 1], dtype=np.int64)
    tol = (0.004, 0.012)
    res = evolve(score, kept, dim, EvolutionConfig(population=27, generations=6, topk=8, seed=0, max_auc_drop=tol),
                 tasks=("click", "convert"))
    seen = {tuple(r["widths"]) for r in res.history}
    best = np.max([table[w] for w in seen], axis=0)
    feasible = [w for w in seen if all(table[w][t] >= best[t] - tol[t] for t in range(2))]
    smallest = min(int(kept @ np.array(w)) for w in feasible)
    assert res.best_params == smallest and tuple(res.best.tolist()) in feasible
    assert res.max_scores == pytest.approx(best.tolist()) and res.tasks == ["click", "convert"]
    assert res.best_scores == pytest.approx(table[tuple(res.best.tolist())].tolist())
    assert res.best_score == res.best_scores[0] and res.max_score == res.max_scores[0]
    for r in res.history:  # every record carries each task's AUC, the primary's under the plain key
        w = tuple(r["widths"])
        assert (r["val_auc"], r["val_auc_click"], r["val_auc_convert"]) == (table[w][0], table[w][0], table[w][1])
    last = res.convergence[-1]
    assert {"best_auc_click", "best_auc_convert", "max_auc_click", "max_auc_convert"} <= set(last)
    assert all({"val_auc_click", "val_auc_convert"} <= set(f) for f in res.front)
    paper = evolve(score, kept, dim, EvolutionConfig(population=27, generations=2, topk=8, seed=0, max_auc_drop=None))
    top = max(space, key=lambda w: table[w].mean())
    assert tuple(paper.best.tolist()) == top


# -- scores of several tasks equal the masked model ---------------------------------------------
CARDS = [7, 11, 5, 9]


def _planted_two_task(name: str, n: int = 1500, seed: int = 0) -> tuple:
    """A two-task model with seeded weights and labels drawn from its own (sharpened) logits."""
    torch.manual_seed(seed)
    cfg = ModelConfig(name, embed_dim=6, mlp_dims=(8,), dropout=0.0, cross_layers=1, batch_norm=False, tasks=2)
    model = build_model(CARDS, cfg, "optembed").eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1)
    with torch.no_grad():
        z = model(x)
        z = (z - z.mean(0)) / z.std(0) * 1.5
    y = (torch.rand(n, 2, generator=g) < torch.sigmoid(z - torch.tensor([0.0, 1.5]))).float()
    return model, SplitTensors(x.int(), y, ("click", "convert"))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scores_of_several_tasks_equal_each_task_of_the_masked_model(name: str) -> None:
    model, val = _planted_two_task(name)
    cands = np.random.default_rng(2).integers(1, 7, size=(6, len(CARDS)))
    cands[0] = 6
    want = []
    with torch.no_grad():
        for w in cands:
            z = model(val.x, torch.as_tensor(w))
            want.append([brute_auc(val.y[:, t], z[:, t]) for t in range(2)])
    want = np.array(want)
    assert want.std(axis=0).min() > 1e-3  # the candidates differ on both tasks
    # another summation order in float32 may swap a few near-tied pairs, no more
    pos = val.y.sum(0).numpy()
    pairs = 4.0 / (pos * (len(val) - pos))
    for block, rows in ((16, 4096), (4, 700), (None, 900)):
        got = BatchedScorer(model, val, CPU, rows_per_pass=rows, group=4, block=block)(cands)
        assert got.shape == (6, 2)
        assert (np.abs(got - want) <= pairs).all(), (block, got - want)
    np.testing.assert_allclose(NaiveScorer(model, val, CPU, batch_size=500)(cands), want, atol=1e-12)
    scores, errors = PairedScorer(BatchedScorer(model, val, CPU, rows_per_pass=4096), cands[0])(cands)
    assert scores.shape == errors.shape == (6, 2)
    assert (np.abs(scores - want) <= pairs).all()
    assert errors[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-12) and (errors[1:] > 0).all()
    from optembed.metrics import auc_components, paired_auc_se

    z_ref, z_one = (model(val.x, torch.as_tensor(cands[i])).detach() for i in (0, 3))
    for t in range(2):  # each task's error is the paired error of that task's logits
        se = paired_auc_se(auc_components(val.y[:, t], z_one[:, t]), auc_components(val.y[:, t], z_ref[:, t]))
        assert errors[3, t] == pytest.approx(se, rel=1e-4)


@pytest.mark.parametrize("name", ["deepfm", "fnn"])
def test_row_mask_scores_of_several_tasks_equal_the_masked_model(name: str) -> None:
    """Candidate row masks scored on two tasks equal each task's AUC of the model with the mask
    applied as retrain applies it (pruned ids read the OOV row), folded or not."""
    from optembed.masks.fold import fold_pruned_rows, id_counts

    model, val = _planted_two_task(name, seed=3)
    emb = model.embedder.embedding
    base = torch.ones(emb.num_rows, dtype=torch.bool)
    rankings = field_rankings(model, base)
    picks = [(-1, None)] + [(f, level_keep(rankings[f], emb.cardinalities[f], q)) for f, q in ((1, 0.5), (3, 0.0), (0, 0.25))]
    counts = id_counts(val.x, emb)
    for fold in (False, True):
        scorer = RowMaskScorer(model, val, CPU, batch_size=1000, group=3, counts=counts if fold else None)
        scorer.set_base(base)
        got = scorer(picks)
        assert got.shape == (4, 2) and len(scorer.task_components) == 4
        for (f, local), row in zip(picks, got, strict=True):
            other = build_model(CARDS, model.cfg, "optembed").eval()
            other.load_state_dict(model.state_dict())
            keep = base.clone()
            if f >= 0:
                keep[int(emb.offsets[f]) : int(emb.offsets[f]) + emb.cardinalities[f]] = local
            if fold:
                fold_pruned_rows([other.embedder.embedding, *other.additive_id_tables()], keep, counts)
            other.embedder.set_row_mask(keep)
            other.embedder.set_fixed_masks(keep, None)
            with torch.no_grad():
                z = other(val.x)
            for t in range(2):
                pos = float(val.y[:, t].sum())
                assert row[t] == pytest.approx(brute_auc(val.y[:, t], z[:, t]), abs=4.0 / (pos * (len(val) - pos))), (fold, f, t)


# -- the sparse task's field is kept --------------------------------------------------------------
PLANT_CARDS = [10, 10, 5]  # a: the click's signal; b: the conversion's (noise to the click); c: nothing


def _planted_conflict(tasks: int = 2, n: int = 8000) -> tuple:
    """The hand-set logistic regression of the module docstring and labels drawn from it: the click
    follows a's first column, the sparse conversion b's last; the click's head also reads b's last
    column, so at full width the click's logit carries the conversion's signal as noise. With
    ``tasks=1`` the same model predicting the click alone."""
    cfg = ModelConfig("fnn", embed_dim=4, mlp_dims=(), dropout=0.0, batch_norm=False, tasks=tasks)
    model = build_model(PLANT_CARDS, cfg, "optembed").eval()
    alpha = torch.linspace(-2.0, 2.0, 9)
    beta = torch.linspace(-3.0, 3.0, 9)[torch.tensor([4, 0, 8, 2, 6, 1, 7, 3, 5])]
    emb = model.embedder.embedding
    with torch.no_grad():
        emb.weight.zero_()
        a0, b0 = int(emb.offsets[0]), int(emb.offsets[1])
        emb.weight[a0 + 1 : a0 + 10, 0] = alpha  # ids 1..9 (0 is the OOV row)
        emb.weight[b0 + 1 : b0 + 10, 3] = beta
        last = model.mlp.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.weight[0, 0] = 1.0  # click: a's column 0 ...
        last.weight[0, 4 + 3] = 1.0  # ... and b's column 3
        if tasks > 1:
            last.weight[1, 4 + 3] = 1.0  # conversion: b's column 3
            last.bias[1] = -3.0
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randint(1, k, (n,), generator=g) for k in PLANT_CARDS)
    click = (torch.rand(n, generator=g) < torch.sigmoid(alpha[a - 1])).float()
    convert = (torch.rand(n, generator=g) < torch.sigmoid(beta[b - 1] - 3.0)).float()
    x = torch.stack([a, b, c], 1).int()
    y = torch.stack([click, convert], 1) if tasks > 1 else click
    return model, SplitTensors(x, y, ("click", "convert") if tasks > 1 else ())


def test_narrowing_the_sparse_tasks_field_helps_the_click_and_costs_the_conversion() -> None:
    """The planted conflict, measured: without b the click gains, the conversion falls to chance."""
    model, val = _planted_conflict()
    scorer = BatchedScorer(model, val, CPU)
    full, narrow = scorer(np.array([[4, 4, 4], [1, 3, 1]]))
    assert narrow[0] > full[0] + 0.02  # the click gains
    assert full[1] > 0.75 and abs(narrow[1] - 0.5) < 1e-9  # the conversion loses everything
    assert 0.05 < float(val.y[:, 1].mean()) < 0.2  # and it is the sparse one


def test_width_search_refuses_a_step_that_costs_the_sparse_task() -> None:
    model, val = _planted_conflict()
    kept = np.array(PLANT_CARDS, dtype=np.int64)
    cfg = dict(population=16, generations=6, topk=5, seed=0)
    full = np.full(3, 4)
    paired = PairedScorer(BatchedScorer(model, val, CPU), full)
    both = evolve(paired, kept, 4, EvolutionConfig(max_auc_drop=0.01, **cfg), tasks=val.tasks)  # type: ignore[arg-type]
    assert both.best[1] == 4  # b stays whole: narrowing it costs the conversion
    assert both.best.tolist() == [1, 4, 1]  # and everything else is as small as it gets
    # the reference is the full width's (what both tasks reach together), not each task's best
    full_aucs = paired.scorer(full[None])[0]
    assert both.reference_scores == pytest.approx(full_aucs.tolist())
    assert both.max_scores[0] > both.reference_scores[0] + 0.05  # the click's best needs b narrowed
    for t in range(2):
        assert both.best_scores[t] >= both.reference_scores[t] - 0.01
    # the steps refused were gains for the click
    narrower = [r for r in both.history if r["widths"][1] < 4]
    assert narrower and max(r["val_auc_click"] for r in narrower) > both.best_scores[0] + 0.05
    assert all(r["val_auc_convert"] < both.reference_scores[1] - 0.1 for r in narrower)
    # the same search of the click alone narrows b, and so does a tolerance the conversion can afford
    one, one_val = _planted_conflict(tasks=1)
    alone = evolve(PairedScorer(BatchedScorer(one, one_val, CPU), full), kept, 4, EvolutionConfig(max_auc_drop=0.01, **cfg))  # type: ignore[arg-type]
    assert alone.best.tolist() == [1, 1, 1] and alone.best_score > both.best_scores[0] + 0.05
    loose = evolve(paired, kept, 4, EvolutionConfig(max_auc_drop=(0.01, 0.45), **cfg), tasks=val.tasks)  # type: ignore[arg-type]
    assert loose.best.tolist() == [1, 1, 1] and loose.best_scores[0] == pytest.approx(alone.best_score)
    # the max-AUC search of both tasks keeps b (the mean of the AUCs falls without it)
    paper = evolve(paired, kept, 4, EvolutionConfig(max_auc_drop=None, **cfg), tasks=val.tasks)  # type: ignore[arg-type]
    assert paper.best[1] == 4


def test_row_levels_keep_the_rows_the_sparse_task_needs() -> None:
    model, val = _planted_conflict()
    rows = int(model.embedder.embedding.num_rows)
    base = torch.ones(rows, dtype=torch.bool)
    kw = dict(levels=(0.5, 0.0), min_traffic=0.0)
    both = search_row_levels(model, val, CPU, base, 0.002, **kw)  # type: ignore[arg-type]
    assert both.levels[1] == 1.0 and both.levels[2] == 0.0  # b kept whole; c (nothing) emptied
    assert both.tasks == ["click", "convert"] and len(both.final_aucs) == 2
    for t in range(2):
        assert both.final_aucs[t] >= both.best_aucs[t] - 0.002 - 1e-12
    # every level of b, scored alone, helps the click and costs the conversion beyond its tolerance
    alone_b = [r for r in both.single if r["field"] == 1]
    assert len(alone_b) == 2 and all(r["delta_click"] > 0.005 and r["lower_bound_convert"] < -0.002 for r in alone_b)
    assert all(r["delta"] == r["delta_click"] for r in alone_b)  # the plain keys are the primary task's
    assert not any(s["field"] == 1 and s["accepted"] for s in both.steps)
    # the click alone drops b's rows (its gain); a tolerance the conversion can afford prunes b,
    # but never empties it: emptying must cost no task anything
    one, one_val = _planted_conflict(tasks=1)
    alone = search_row_levels(one, one_val, CPU, base, 0.002, **kw)  # type: ignore[arg-type]
    assert alone.levels[1] == 0.0
    loose = search_row_levels(model, val, CPU, base, (0.002, 0.45), **kw)  # type: ignore[arg-type]
    assert loose.levels[1] == 0.5
    with pytest.raises(ConfigError, match="3 tolerances"):
        search_row_levels(model, val, CPU, base, (0.1, 0.1, 0.1), **kw)  # type: ignore[arg-type]


# -- the stages -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_task_supernet(tmp_path_factory: pytest.TempPathFactory):
    from optembed.data.preprocess import PreprocessConfig
    from optembed.training.config import TrainConfig
    from pipelines import preprocess as pre_stage, supernet
    from pipelines.store import Store
    from test_multitask import planted_rows, write_csv

    root = tmp_path_factory.mktemp("mt_search")
    store = Store(root / "artifacts")
    src = write_csv(root / "conv.csv", planted_rows(4000, seed=4))
    pre = pre_stage.run(pre_stage.PreprocessStage(src, PreprocessConfig(fmt="csv", label="click,convert")), store)
    model = ModelConfig("fnn", embed_dim=4, mlp_dims=(16,), dropout=0.0)
    train = TrainConfig(epochs=2, batch_size=256, lr=0.01, patience=0, lr_decay=1.0, task_weights=(1.0, 3.0),
                        threshold_optimizer="adam", threshold_lr=1e-2, alpha=1e-3)
    sn = supernet.run(supernet.SupernetStage(model=model, mode="optembed", train=train, device="cpu"), store)
    return store, pre, sn, train


@pytest.mark.slow
def test_search_and_retrain_of_a_two_task_supernet(two_task_supernet) -> None:
    """supernet (2 tasks) -> search -> retrain: every task's AUC in the search's records, each
    recomputed independently from the supernet under the chosen masks; retrain applies them."""
    from optembed.models.checkpoint import load_model
    from pipelines import evaluate, retrain, search
    from pipelines.data import load_dataset
    import pyarrow.parquet as pq

    store, pre, sn, train = two_task_supernet
    evo = EvolutionConfig(population=6, generations=2, topk=3, max_auc_drop=(0.003, 0.01), seed=1)
    m = search.run(search.SearchStage(source=sn.fingerprint, evolution=evo, device="cpu"), store)
    best = json.loads(m.output("best").read_text())
    assert "row_mask" in m.outputs  # the row levels were searched on both tasks too
    assert {"rows_base_val_auc", "rows_val_auc"} <= set(best["tasks"]["convert"])
    assert set(best["tasks"]) == {"click", "convert"}
    assert best["tasks"]["click"]["val_auc"] == best["val_auc"] and best["max_auc_drop"] == [0.003, 0.01]
    assert [best["tasks"][t]["max_auc_drop"] for t in ("click", "convert")] == [0.003, 0.01]
    for t, drop in (("click", 0.003), ("convert", 0.01)):
        entry = best["tasks"][t]
        assert entry["max_val_auc"] >= entry["reference_val_auc"]
        assert entry["val_auc"] >= entry["reference_val_auc"] - drop - 1e-9 or "row_mask" in m.outputs
    tasks = m.metrics["tasks"]
    assert tasks["convert"]["best_val_auc"] == best["tasks"]["convert"]["val_auc"] and "best_val_logloss" in tasks["convert"]
    rows = pq.read_table(m.output("candidates")).to_pylist()
    assert all({"val_auc_click", "val_auc_convert"} <= set(r) for r in rows)
    assert all(r["val_auc"] == r["val_auc_click"] for r in rows)
    assert all({"val_auc_click", "val_auc_convert"} <= set(r) for r in pq.read_table(m.output("front")).to_pylist())
    # the chosen candidate's AUCs, recomputed: the supernet under the search's masks (the
    # evaluate stage's "(no retrain)" model), each task's column compared pair by pair
    val = load_dataset(pre, CPU, splits=("val",)).splits["val"]
    cand = evaluate.load_candidate(store, m, CPU)
    with torch.no_grad():
        z = cand.model.eval()(val.x)
    assert z.shape == (len(val), 2)
    for k, t in enumerate(("click", "convert")):
        assert best["tasks"][t]["val_auc"] == pytest.approx(brute_auc(val.y[:, k], z[:, k]), abs=1e-5)
    # retrain under the search's masks: the compact model, both tasks learned
    r = retrain.run(retrain.RetrainStage(source=m.fingerprint, train=replace(train, epochs=1), device="cpu"), store)
    assert r.metrics["widths"] == list(best["widths"].values())
    assert r.metrics["embedding_params"] == m.metrics["best_params"]
    assert set(r.metrics["tasks"]) == {"click", "convert"} and r.metrics["tasks"]["click"]["test_auc"] > 0.6
    model, payload = load_model(r.output("model"), CPU)
    assert model.cfg.tasks == 2


@pytest.mark.slow
def test_search_cli_of_a_two_task_supernet(two_task_supernet, cli) -> None:
    store, _, sn, _ = two_task_supernet
    base = ["--artifacts", store.root, "--from", sn.fingerprint, "--population", "4", "--generations", "1",
            "--topk", "2", "--device", "cpu", "--no-rows"]
    res = cli("search", *base, "--max-auc-drop", "0.002,0.02")
    assert res.exit_code == 0, res.output
    assert "chosen candidate per task" in res.stdout and "convert" in res.stdout
    paper = cli("search", *base, "--max-auc", "--json")
    assert paper.exit_code == 0, paper.output
    man = json.loads(paper.stdout)
    assert man["params"]["evolution"]["max_auc_drop"] is None and set(man["metrics"]["tasks"]) == {"click", "convert"}
    for drop, message in (("0.001,0.002,0.003", "gives 3 tolerances but supernet"), ("0.01,x", "--max-auc-drop takes")):
        bad = cli("search", *base, "--max-auc-drop", drop)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.exit_code == 2 and len(lines) == 1 and message in lines[0], bad.stderr
        assert "Traceback" not in bad.output
