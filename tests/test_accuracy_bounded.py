"""The accuracy-bounded search: constrained ranking and Pareto front against brute force, the
smallest-within-tolerance result of ``evolve``, row masks scored exactly as retrain applies them,
and the direction on planted data (noise fields pruned, informative fields kept)."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from optembed.evolution import EvolutionConfig, evolve
from optembed.evolution.row_levels import RowMaskScorer, field_rankings, level_keep, search_row_levels
from optembed.evolution.search import pareto_front, rank_order
from optembed.masks.fold import id_counts
from optembed.models.checkpoint import load_model
from optembed.training.config import TrainConfig
from optembed.training.evaluate import evaluate
from pipeline_fixtures import small_supernet, synthetic_preprocess
from pipelines import retrain, search
from pipelines.data import load_dataset
from pipelines.readers import search_row_mask

CPU = torch.device("cpu")


def test_rank_order_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = np.round(rng.uniform(0.6, 0.7, size=12), 3)
        scores[rng.integers(0, 12)] = np.nan
        params = rng.integers(1, 6, size=12) * 10
        tol, ref = 0.02, np.nanmax(scores)
        order = rank_order(scores, params, tol, ref)
        feasible = [i for i in range(12) if not np.isnan(scores[i]) and scores[i] >= ref - tol]
        rest = [i for i in range(12) if i not in feasible]
        want = sorted(feasible, key=lambda i: (params[i], -scores[i])) + sorted(
            rest, key=lambda i: -np.nan_to_num(scores[i], nan=-np.inf)
        )
        # ties (same params and score) may come in either order: compare the keys
        got_keys = [(i in feasible, params[i] if i in feasible else 0, np.nan_to_num(scores[i], nan=-9)) for i in order]
        want_keys = [(i in feasible, params[i] if i in feasible else 0, np.nan_to_num(scores[i], nan=-9)) for i in want]
        assert got_keys == want_keys
    plain = rank_order(np.array([0.5, np.nan, 0.7, 0.6]), np.zeros(4), None, 0.0)
    assert plain.tolist() == [2, 3, 0, 1]


def test_pareto_front_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        params = rng.integers(1, 8, size=15)
        scores = np.round(rng.uniform(0, 1, size=15), 2)
        front = set(pareto_front(params, scores).tolist())
        for i in range(15):
            dominated = any(
                params[j] <= params[i] and scores[j] > scores[i] or (params[j] < params[i] and scores[j] >= scores[i])
                for j in range(15)
            )
            duplicate_earlier = any(
                params[j] == params[i] and scores[j] == scores[i] and j in front for j in range(15) if j != i
            )
            assert (i in front) == (not dominated and not duplicate_earlier), (i, params, scores, front)


def test_evolve_returns_the_smallest_within_tolerance() -> None:
    """A planted fitness: fields 0-2 matter up to width 4, fields 3-5 not at all."""
    n, dim, tol = 6, 8, 0.01
    useful = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])

    def score(widths: np.ndarray) -> np.ndarray:
        return 0.7 + 0.02 * (np.minimum(widths, 4) * useful).sum(axis=1) / 12 - 1e-4 * widths.sum(axis=1) / n

    kept = np.full(n, 100, dtype=np.int64)
    cfg = EvolutionConfig(population=30, generations=30, topk=10, seed=3, max_auc_drop=tol)
    res = evolve(score, kept, dim, cfg)
    scored = {tuple(r["widths"]): r["val_auc"] for r in res.history}
    best_seen = max(scored.values())
    assert res.max_score == pytest.approx(best_seen)
    assert res.best_score >= best_seen - tol - 1e-12
    smallest = min(kept @ np.array(w) for w, s in scored.items() if s >= best_seen - tol)
    assert res.best_params == smallest
    paper = evolve(score, kept, dim, EvolutionConfig(population=30, generations=30, topk=10, seed=3, max_auc_drop=None))
    assert res.best_params < paper.best_params
    # the full-width candidate is always scored, so the tolerance is measured from at least it
    assert tuple([dim] * n) in scored
    # the front holds no dominated candidate and includes the chosen one's size
    front = res.front
    assert all(a["params"] < b["params"] and a["val_auc"] < b["val_auc"] for a, b in zip(front, front[1:]))
    assert any(f["params"] == res.best_params for f in front) or res.best_score < max(f["val_auc"] for f in front)


def test_evolve_feasible_brute_force_small_space() -> None:
    """Over a space small enough to score completely, the result is the brute-force answer."""
    n, dim, tol = 3, 3, 0.005
    rng = np.random.default_rng(7)
    table = {w: float(rng.uniform(0.70, 0.72)) for w in product(range(1, dim + 1), repeat=n)}

    def score(widths: np.ndarray) -> np.ndarray:
        return np.array([table[tuple(int(v) for v in w)] for w in widths])

    kept = np.array([5, 3, 1], dtype=np.int64)
    res = evolve(score, kept, dim, EvolutionConfig(population=27, generations=8, topk=8, seed=0, max_auc_drop=tol))
    seen = {tuple(r["widths"]) for r in res.history}
    best = max(table[w] for w in seen)
    feasible = [w for w in seen if table[w] >= best - tol]
    want = min(kept @ np.array(w) for w in feasible)
    assert res.best_params == want and res.best_score >= best - tol


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    store, pre, truth = synthetic_preprocess(tmp_path_factory.mktemp("bounded"), rows=40000)
    sn = small_supernet(store, "optembed", epochs=3)
    return store, pre, sn, truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A smaller supernet for the equivalence tests (which need a trained model, not a signal)."""
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("equal"), rows=20000)
    sn = small_supernet(store, "optembed", epochs=1)
    return store, pre, sn, None


def _candidates(rankings: list[torch.Tensor], emb) -> list[tuple[int, torch.Tensor | None]]:
    """The base itself and four single-field candidates (a level each, emptying included)."""
    picks = [(0, 0.5), (5, 0.0), (20, 0.25), (30, 0.125)]
    return [(-1, None)] + [(f, level_keep(rankings[f], emb.cardinalities[f], q)) for f, q in picks]


def _with_field(base: torch.Tensor, emb, f: int, local: torch.Tensor | None) -> torch.Tensor:
    keep = base.clone()
    if f >= 0:
        keep[int(emb.offsets[f]) : int(emb.offsets[f]) + emb.cardinalities[f]] = local
    return keep


def _one_pair(val) -> float:
    """The AUC of a few positive-negative pairs: float rounding may swap a few near-ties (the
    stacked scorer sums in another order; a strongly regularised table has many close scores),
    a wrong mask or fold moves the AUC by orders of magnitude more."""
    pos = int(val.y.sum())
    return 4.0 / (pos * (len(val) - pos)) + 1e-9


def _auc_as_retrained(model, keep: torch.Tensor, val) -> float:
    """Validation AUC of ``model`` with the row mask applied the way retrain applies it."""
    model.embedder.set_row_mask(keep)
    model.embedder.set_fixed_masks(keep, None)
    return evaluate(model, val, CPU, 5000)["auc"]


def test_row_mask_scores_equal_retrain_semantics(trained) -> None:
    """A candidate mask scored by the stacked scorer equals a plain evaluation of the model with
    the mask applied the way retrain applies it (pruned ids -> OOV, fixed masks)."""
    _, pre, sn, _ = trained
    model, _ = load_model(sn.output("model"), CPU)
    val = load_dataset(pre, CPU, splits=("val",)).splits["val"]
    emb = model.embedder.embedding
    base = torch.ones(emb.num_rows, dtype=torch.bool)
    rankings = field_rankings(model, base)
    scorer = RowMaskScorer(model, val, CPU, batch_size=3000, group=3)
    scorer.set_base(base)
    candidates = _candidates(rankings, emb)
    for (f, local), value in zip(candidates, scorer(candidates), strict=True):
        other, _ = load_model(sn.output("model"), CPU)
        assert value == pytest.approx(_auc_as_retrained(other, _with_field(base, emb, f, local), val), abs=_one_pair(val))


def test_folded_row_mask_scores_equal_a_folded_model(trained) -> None:
    """With folding, a candidate (on a base that already prunes other fields) scores as the model
    whose OOV rows - embedding and DeepFM's linear weights - were overwritten by the count-weighted
    mean of the rows they absorb, evaluated with the mask applied as retrain applies it."""
    _, pre, sn, _ = trained
    model, _ = load_model(sn.output("model"), CPU)
    val = load_dataset(pre, CPU, splits=("val",)).splits["val"]
    emb = model.embedder.embedding
    counts = id_counts(val.x, emb)
    base = torch.ones(emb.num_rows, dtype=torch.bool)
    rankings = field_rankings(model, base)
    for f, q in [(3, 0.25), (25, 0.0)]:  # the base prunes two fields
        start = int(emb.offsets[f])
        base[start : start + emb.cardinalities[f]] = level_keep(rankings[f], emb.cardinalities[f], q)
    scorer = RowMaskScorer(model, val, CPU, batch_size=3000, group=3, counts=counts)
    scorer.set_base(base)
    candidates = _candidates(rankings, emb)
    got = scorer(candidates)
    for (f, local), value in zip(candidates, got, strict=True):
        other, _ = load_model(sn.output("model"), CPU)
        keep = _with_field(base, emb, f, local)
        tables = [other.embedder.embedding, other.linear]
        for table in tables:  # the reference fold, written out row by row
            w = table.weight.data
            for g, size in enumerate(emb.cardinalities):
                start = int(emb.offsets[g])
                absorbed = [i for i in range(size) if i == 0 or not bool(keep[start + i])]
                c = counts[[start + i for i in absorbed]].double()
                if float(c.sum()) > 0:
                    w[start] = ((w[[start + i for i in absorbed]].double() * c[:, None]).sum(0) / c.sum()).float()
        assert value == pytest.approx(_auc_as_retrained(other, keep, val), abs=_one_pair(val))
    no_fold = RowMaskScorer(load_model(sn.output("model"), CPU)[0], val, CPU, batch_size=3000, group=3)
    no_fold.set_base(base)
    assert not np.allclose(no_fold(candidates), got)  # folding changes what is scored


def test_field_rankings_by_impact_and_norm_by_hand() -> None:
    from optembed.models.config import ModelConfig
    from optembed.models.registry import build_model

    model = build_model([4, 3], ModelConfig("fnn", embed_dim=2, mlp_dims=(4,)), "optembed")
    with torch.no_grad():  # field 0: OOV, then ids 1..3; field 1: OOV, ids 1..2
        model.embedder.embedding.weight.copy_(torch.tensor(
            [[0.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.0, 9.0], [5.0, 5.0], [1.0, 0.0], [2.0, 0.0]]))
    counts = torch.tensor([0, 1, 100, 0, 10, 10, 10])
    keep = torch.ones(7, dtype=torch.bool)
    by_norm = field_rankings(model, keep, counts, "norm")  # l1 norms: 3, 2, 9 | 1, 2
    assert [r.tolist() for r in by_norm] == [[3, 1, 2], [2, 1]]
    # impact = c_i |e_i - m|^2 / (1 - c_i / C) = c_i (C - c_i) / C |e_i - m_others|^2 (the scatter growth)
    # field 0 (the OOV row and id 3 have no count): ids 1 and 2 would each be folded into the other,
    # both 1 * 100 / 101 * |[3, 0] - [1, 1]|^2; id 3 comes last. Field 1: C = 30, m = [8/3, 5/3]:
    # id 1: 10 * (50 / 9) * 1.5 > id 2: 10 * (29 / 9) * 1.5
    by_impact = field_rankings(model, keep, counts, "impact")
    assert by_impact[0].tolist()[2] == 3 and by_impact[1].tolist() == [1, 2]
    model2 = build_model([4, 3], ModelConfig("fnn", embed_dim=2, mlp_dims=(4,)), "optembed")
    with torch.no_grad():  # a dominant id near the mean, a rare far one, a mid one
        model2.embedder.embedding.weight.copy_(torch.tensor(
            [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [4.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    counts2 = torch.tensor([0, 90, 9, 1, 1, 1, 1])
    # field 0: C = 100, m = [0.94, 0]; id 1: 90 * 0.0036 / 0.1 = 3.24; id 2: 9 * 0.8836 / 0.91 = 8.74;
    # id 3: 1 * 9.3636 / 0.99 = 9.46 -> [3, 2, 1]. Without the 1 / (1 - share) factor id 1 would score
    # 0.32 (near the mean it dominates), yet folding it into the others moves it by 0.9.
    assert field_rankings(model2, keep, counts2, "impact")[0].tolist() == [3, 2, 1]
    with pytest.raises(ValueError):
        field_rankings(model, keep, None, "impact")


def test_level_keep_traffic_floor_by_hand() -> None:
    ranking = torch.tensor([4, 1, 2, 3, 5])  # local ids by importance; 0 is the OOV row
    counts = torch.tensor([5, 10, 40, 20, 5, 20])  # total 100; OOV 5
    plain = level_keep(ranking, 6, 0.2)  # ceil(0.2 * 5) = 1 id: OOV + id 4 -> 10% of the traffic
    assert plain.nonzero().flatten().tolist() == [0, 4]
    # at least half: OOV 5 + id 4 (5) + id 1 (10) + id 2 (40) = 60 >= 50 (three ids were not enough: 20)
    floor = level_keep(ranking, 6, 0.2, counts, 0.5)
    assert floor.nonzero().flatten().tolist() == [0, 1, 2, 4]
    assert level_keep(ranking, 6, 0.0, counts, 0.5).nonzero().flatten().tolist() == [0]  # emptying is not bound
    assert level_keep(ranking, 6, 0.6, counts, 0.5).sum() == 4  # ceil(0.6 * 5) = 3 ids already carry 60%
    assert level_keep(ranking, 6, 0.2, torch.tensor([60, 10, 10, 10, 5, 5]), 0.5).nonzero().flatten().tolist() == [0, 4]


def test_fold_pruned_rows_by_hand() -> None:
    from optembed.layers.embedding import FieldEmbedding
    from optembed.masks.fold import fold_pruned_rows

    table = FieldEmbedding([3, 2], 2)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[0.0, 0.0], [2.0, 4.0], [9.0, 9.0], [1.0, 1.0], [5.0, 7.0]]))
    keep = torch.tensor([True, False, True, True, True])  # field 0 prunes id 1; field 1 prunes nothing
    counts = torch.tensor([1, 3, 5, 0, 4])  # field 1's OOV row has no traffic of its own
    fold_pruned_rows([table], keep, counts)
    # field 0: (1 * [0, 0] + 3 * [2, 4]) / 4; field 1 absorbs only its OOV row (count 0): unchanged
    assert torch.allclose(table.weight[0], torch.tensor([1.5, 3.0]))
    assert torch.allclose(table.weight[3], torch.tensor([1.0, 1.0]))
    assert torch.equal(table.weight[[1, 2, 4]], torch.tensor([[2.0, 4.0], [9.0, 9.0], [5.0, 7.0]]))


@pytest.mark.slow
def test_row_levels_prune_noise_and_keep_signal(planted) -> None:
    """On planted data: noise fields lose far more of their rows than informative fields; the
    fields whose pruning costs most keep their rows; the mask stays within the tolerance."""
    _, pre, sn, truth = planted
    model, _ = load_model(sn.output("model"), CPU)
    data = load_dataset(pre, CPU, splits=("val",))
    tol = 0.002
    res = search_row_levels(model, data.splits["val"], CPU, torch.ones(model.embedder.embedding.num_rows, dtype=torch.bool), tol)
    assert res.final_auc >= res.best_auc - tol - 1e-9
    assert res.best_auc >= res.base_auc
    noise = set(truth["noise_fields"])
    levels = dict(zip(data.field_names, res.levels, strict=True))
    noise_levels = [levels[n] for n in data.field_names if n in noise]
    signal_levels = [levels[n] for n in data.field_names if n not in noise]
    assert np.median(noise_levels) <= 0.0625, levels
    counts = id_counts(data.splits["val"].x, model.embedder.embedding).double()
    keep = res.keep.to(counts.device)
    traffic = {}
    for f, name in enumerate(data.field_names):
        start, size = int(model.embedder.embedding.offsets[f]), model.embedder.embedding.cardinalities[f]
        c = counts[start : start + size]
        traffic[name] = float(c[keep[start : start + size]].sum() / c.sum())
    signal_traffic = [traffic[n] for n in data.field_names if n not in noise]
    assert np.median(signal_traffic) >= 0.5, traffic  # informative fields keep most of their traffic
    assert all(t >= 0.5 - 1e-9 for n, t in traffic.items() if levels[n] > 0.0), traffic  # the traffic floor
    # the evidence separates the planted kinds: emptying a noise field costs less than an informative one
    empty = {data.field_names[int(r["field"])]: r["delta"] for r in res.single if r["level"] == 0.0}
    noise_cost = np.mean([d for n, d in empty.items() if n in noise])
    signal_cost = np.mean([d for n, d in empty.items() if n not in noise])
    assert noise_cost > signal_cost + 0.002, (noise_cost, signal_cost)
    assert sum(q == 0.0 for q in signal_levels) <= 1, levels  # emptying must beat keeping the top rows
    # a field whose emptying alone costs clearly more than the tolerance is never emptied
    for r in res.single:
        if r["level"] == 0.0 and r["delta"] < -2 * tol:
            assert res.levels[int(r["field"])] > 0.0, (data.field_names[int(r["field"])], r)
    # with no noise margin and no tolerance, nothing that costs AUC alone is accepted
    strict = search_row_levels(model, data.splits["val"], CPU, torch.ones(model.embedder.embedding.num_rows, dtype=torch.bool), 0.0, z=0.0)
    assert strict.final_auc >= strict.best_auc - 1e-12


def test_width_tolerance_is_what_the_rows_left() -> None:
    from types import SimpleNamespace

    from pipelines.search import width_tolerance

    one = SimpleNamespace(best_aucs=[], final_aucs=[], best_auc=0.80, final_auc=0.7993)
    assert width_tolerance((0.001,), one) == pytest.approx((0.0003,))
    spent_all = SimpleNamespace(best_aucs=[], final_aucs=[], best_auc=0.80, final_auc=0.798)
    assert width_tolerance((0.001,), spent_all) == (0.0,)
    gained = SimpleNamespace(best_aucs=[], final_aucs=[], best_auc=0.80, final_auc=0.801)  # no cost: all of it left
    assert width_tolerance((0.001,), gained) == (0.001,)
    two = SimpleNamespace(best_aucs=[0.8, 0.7], final_aucs=[0.7995, 0.69], best_auc=0.8, final_auc=0.7995)
    assert width_tolerance((0.001, 0.02), two) == pytest.approx((0.0005, 0.01))


@pytest.mark.slow
def test_search_stage_with_rows_and_retrain(planted) -> None:
    store, pre, sn, _ = planted
    evo = EvolutionConfig(population=12, generations=3, topk=4, max_auc_drop=0.002)
    m = search.run(search.SearchStage(source=sn.fingerprint, evolution=evo, device="cpu"), store)
    assert {"row_mask", "row_levels", "front", "best"} <= set(m.outputs)
    info = search_row_mask(m, sn)
    levels = pq.read_table(m.output("row_levels")).to_pylist()
    assert [r["kept"] for r in levels] == info["kept_per_field"]
    best = json.loads(m.output("best").read_text())
    assert best["val_auc"] >= best["max_val_auc"] - 0.002 - 1e-9
    assert m.metrics["row_sparsity"] > 0.0
    # one budget for both phases: the widths get what the row levels left, so the chosen model is
    # within --max-auc-drop of the best the row levels saw, not within it twice over
    spent = m.metrics["rows_best_val_auc"] - m.metrics["rows_val_auc"]
    assert m.metrics["width_max_auc_drop"] == pytest.approx(max(0.0, 0.002 - spent))
    assert best["val_auc"] >= m.metrics["rows_best_val_auc"] - 0.002 - 1e-9
    paper = search.run(
        search.SearchStage(source=sn.fingerprint, evolution=EvolutionConfig(population=12, generations=3, topk=4,
                                                                            max_auc_drop=None), device="cpu"),
        store,
    )
    assert "row_mask" not in paper.outputs and paper.metrics["best_params"] > m.metrics["best_params"]
    r = retrain.run(retrain.RetrainStage(source=m.fingerprint, train=TrainConfig(epochs=1, batch_size=1024), device="cpu"), store)
    assert r.metrics["variant"] == "optembed"
    assert r.metrics["kept_rows"] == sum(info["kept_per_field"])
    assert r.metrics["embedding_params"] == m.metrics["best_params"]


@pytest.mark.slow
def test_prune_only_supernet_searches_rows_only(planted) -> None:
    store, _, _, _ = planted
    sn = small_supernet(store, "prune-only", epochs=1)
    evo = EvolutionConfig(population=4, generations=1, topk=2, max_auc_drop=0.002)
    m = search.run(search.SearchStage(source=sn.fingerprint, evolution=evo, device="cpu"), store)
    best = json.loads(m.output("best").read_text())
    assert set(best["widths"].values()) == {8}
    r = retrain.run(retrain.RetrainStage(source=m.fingerprint, train=TrainConfig(epochs=1, batch_size=1024), device="cpu"), store)
    assert r.metrics["variant"] == "optembed-e"
    with pytest.raises(Exception, match="row levels"):
        search.run(search.SearchStage(source=sn.fingerprint, evolution=EvolutionConfig(population=4, generations=1, topk=2,
                                                                                       max_auc_drop=None), device="cpu"), store)


def test_noise_margin_makes_the_width_search_conservative() -> None:
    """Candidates below width 4 in field 0 score as well as the best but carry a large standard
    error: with the noise margin they are not feasible; without it they are chosen."""
    n, dim, tol = 3, 6, 0.002

    def score(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = 0.75 - 1e-5 * widths.sum(axis=1)
        errors = np.where(widths[:, 0] < 4, 0.01, 0.0002)
        return scores, errors

    kept = np.full(n, 10, dtype=np.int64)
    cfg = EvolutionConfig(population=20, generations=10, topk=6, seed=0, max_auc_drop=tol, noise_z=1.0)
    careful = evolve(score, kept, dim, cfg)
    assert careful.best[0] >= 4
    loose = evolve(score, kept, dim, EvolutionConfig(population=20, generations=10, topk=6, seed=0, max_auc_drop=tol,
                                                     noise_z=0.0))
    assert loose.best[0] < 4 and loose.best_params < careful.best_params


def test_paired_scorer_standard_errors(trained) -> None:
    """The paired scorer's standard error is 0 against itself and matches a bootstrap of the AUC
    difference between two width candidates (same rows)."""
    from optembed.evolution.fitness import BatchedScorer, PairedScorer
    from optembed.metrics import auc

    _, pre, sn, _ = trained
    model, _ = load_model(sn.output("model"), CPU)
    val = load_dataset(pre, CPU, splits=("val",)).splits["val"]
    full = np.full(model.n_fields, model.embed_dim)
    scorer = BatchedScorer(model, val, CPU, rows_per_pass=4000)
    paired = PairedScorer(scorer, full)
    cands = np.stack([full, np.full(model.n_fields, 1)])
    scores, errors = paired(cands)
    assert errors[0] == pytest.approx(0.0, abs=1e-12) and errors[1] > 0
    z = scorer.logits(cands)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(200):
        i = torch.as_tensor(rng.integers(0, len(val), len(val)))
        diffs.append(auc(val.y[i], z[1][i]) - auc(val.y[i], z[0][i]))
    assert errors[1] == pytest.approx(float(np.std(diffs)), rel=0.3)
    assert scores[0] == pytest.approx(auc(val.y, z[0]))


def test_row_levels_fold_with_training_counts(trained) -> None:
    """Given training counts, the folds weigh absorbed rows by them, never by the scored split's
    own id counts: the result carries the training counts, and its base score equals a scorer
    folding with those counts (and differs from one folding with the validation counts)."""
    _, pre, sn, _ = trained
    model, _ = load_model(sn.output("model"), CPU)
    data = load_dataset(pre, CPU, splits=("train", "val"))
    emb = model.embedder.embedding
    train_counts = id_counts(data.splits["train"].x, emb)
    val_counts = id_counts(data.splits["val"].x, emb)
    assert not torch.equal(train_counts, val_counts)
    base = torch.ones(emb.num_rows, dtype=torch.bool)
    res = search_row_levels(model, data.splits["val"], CPU, base, 0.002, levels=(0.25,), rank_counts=train_counts)
    assert res.counts is not None and torch.equal(res.counts.cpu(), train_counts)
    rankings = field_rankings(model, base)
    pruned = base.clone()
    for f in range(len(emb.cardinalities)):
        start = int(emb.offsets[f])
        pruned[start : start + emb.cardinalities[f]] = level_keep(rankings[f], emb.cardinalities[f], 0.25)
    scores = []
    for counts in (train_counts, val_counts):
        scorer = RowMaskScorer(load_model(sn.output("model"), CPU)[0], data.splits["val"], CPU, batch_size=3000, counts=counts)
        scorer.set_base(pruned)
        scores.append(scorer([(-1, None)])[0])
    assert scores[0] != pytest.approx(scores[1], abs=1e-9)  # the weights matter to what is scored
