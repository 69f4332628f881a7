"""The pure helpers of benchmarks/quality.py on hand-computed inputs (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bench_modules import load_benchmark

q = load_benchmark("quality.py", "quality_benchmark")


def test_average_ranks_share_ties() -> None:
    assert q.average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_hand_computed() -> None:
    assert q.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert q.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): d^2 = 0+1+1+0 = 2, rho = 1 - 6*2 / (4*15) = 0.8
    assert q.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: ranks x = (1.5,1.5,3), y = (1,2,3); centred (-.5,-.5,1) . (-1,0,1) = 1.5; |x| = sqrt(1.5), |y| = sqrt(2)
    assert q.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(1.5 * 2))
    assert math.isnan(q.spearman([16, 16, 16], [1, 2, 4]))
    assert math.isnan(q.spearman([1], [2]))


def test_rows_and_traffic_kept() -> None:
    cards = [3, 2, 4]  # rows 0-2 | 3-4 | 5-8
    mask = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    counts = torch.tensor([5, 10, 5, 0, 0, 1, 2, 3, 4])
    assert q.rows_kept(mask, cards) == pytest.approx([2 / 3, 0.0, 3 / 4])
    traffic = q.traffic_kept(mask, counts, cards)
    assert traffic[0] == pytest.approx(10 / 20)
    assert math.isnan(traffic[1])  # no training count at all
    assert traffic[2] == pytest.approx(6 / 10)
    assert q.pooled_rows_kept(mask, cards, [0, 1]) == pytest.approx(2 / 5)
    assert q.field_bounds(cards) == [(0, 3), (3, 5), (5, 9)]


def test_truth_stats_on_a_planted_toy() -> None:
    names, cards = ["a", "b", "n"], [3, 2, 4]
    truth = {"noise_fields": ["n"], "signal_rank": {"a": 4, "b": 1, "n": 0}}
    mask = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0, 0], dtype=torch.bool)
    counts = torch.tensor([6, 3, 1, 2, 8, 5, 5, 5, 5])
    s = q.truth_stats(mask, [8, 2, 1], counts, cards, names, truth)
    assert s["noise_rows_kept"] == pytest.approx(1 / 4)
    assert s["min_traffic_kept"] == pytest.approx(2 / 10) and s["worst_traffic_field"] == "b"
    assert s["spearman_widths"] == pytest.approx(1.0)
    full = q.truth_stats(None, [8, 8, 8], counts, cards, names, truth)
    assert full["noise_rows_kept"] == 1.0 and full["min_traffic_kept"] == 1.0 and math.isnan(full["spearman_widths"])


def test_aggregate_pairs_the_auc_change_by_seed() -> None:
    runs = [
        {"seed": 0, "models": {"original": {"test_auc": 0.80, "sparsity": 0.0}, "optembed": {"test_auc": 0.79, "sparsity": 0.6}}},
        {"seed": 1, "models": {"original": {"test_auc": 0.70, "sparsity": 0.0}, "optembed": {"test_auc": 0.73, "sparsity": 0.7}}},
    ]
    agg = q.aggregate(runs, ("test_auc", "delta_auc", "sparsity"))
    d = agg["optembed"]["delta_auc"]
    assert (d.mean, d.min, d.max, d.n) == pytest.approx((0.01, -0.01, 0.03, 2))
    assert d.std == pytest.approx(math.sqrt(2 * 0.02**2))  # sample std of -0.01, 0.03
    assert agg["optembed"]["test_auc"].mean == pytest.approx(0.76)
    assert agg["original"]["delta_auc"].mean == 0.0
    assert agg["optembed"]["sparsity"].max == pytest.approx(0.7)


def test_the_validation_gap_is_paired_against_the_originals() -> None:
    runs = [
        {"seed": 0, "models": {"original": {"test_auc": 0.80, "val_auc": 0.78},
                               "optembed": {"test_auc": 0.79, "val_auc": 0.81, "search_val_auc": 0.83,
                                            "supernet_val_auc": 0.80}}},
        {"seed": 1, "models": {"original": {"test_auc": 0.70, "val_auc": 0.72},
                               "optembed": {"test_auc": 0.69, "val_auc": 0.74, "search_val_auc": 0.75,
                                            "supernet_val_auc": 0.75}}},
    ]
    agg = q.aggregate(runs, ("val_auc", "val_gap", "excess_val_gap", "search_climb"))
    # optembed's gaps +0.02 and +0.05 against the Original's -0.02 and +0.02: excess +0.04 and +0.03
    assert agg["optembed"]["val_gap"].mean == pytest.approx(0.035)
    assert (agg["optembed"]["excess_val_gap"].min, agg["optembed"]["excess_val_gap"].max) == pytest.approx((0.03, 0.04))
    assert agg["optembed"]["search_climb"].mean == pytest.approx(0.015)
    assert agg["original"]["excess_val_gap"].mean == 0.0 and agg["original"]["search_climb"].n == 0
    table = "\n".join(q.selection_markdown({v: {m: s.to_dict() for m, s in per.items()} for v, per in agg.items()}))
    assert "| optembed |" in table and "+0.0350" in table


def test_summarize_skips_missing_values() -> None:
    s = q.summarize([1.0, math.nan, 3.0])
    assert (s.mean, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 2)
    one = q.summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std)
    assert q.summarize([math.nan]).n == 0


def test_pareto_front() -> None:
    points = [
        ("original", 1000.0, 0.80),
        ("big-worse", 2000.0, 0.79),  # more bytes, lower AUC: dominated
        ("optembed", 300.0, 0.799),
        ("tiny", 50.0, 0.70),
        ("same-bytes-worse", 300.0, 0.75),  # same bytes as optembed, lower AUC
        ("optembed-d", 500.0, 0.799),  # more bytes, same AUC: dominated
    ]
    assert q.pareto_front(points) == ["tiny", "optembed", "original"]


def _artifact(store, stage: str, fp: str, upstream: dict[str, str], files: dict[str, object]):  # type: ignore[no-untyped-def]
    import json

    from pipelines.store import Manifest

    manifest = Manifest(stage, 1, fp, {}, upstream=upstream)
    with store.writer(manifest) as tmp:
        for name, content in files.items():
            file = f"{name}.json" if name == "best" else f"{name}.pt"
            if name == "best":
                (tmp / file).write_text(json.dumps(content))
            else:
                torch.save(content, tmp / file)
            manifest.outputs[name] = file
    return manifest


def _mask(bits: list[int], pruned: bool = True) -> dict[str, object]:
    mask = torch.tensor(bits, dtype=torch.bool)
    return {"mask": mask, "kept_per_field": [int(mask[:2].sum()), int(mask[2:].sum())], "rows_per_field": [2, 2],
            "thresholds": [0.0, 0.0], "pruned": pruned}


def test_final_selection_prefers_the_search_row_mask(tmp_path: Path) -> None:
    from pipelines.store import Store

    store = Store(tmp_path / "artifacts")
    _artifact(store, "preprocess", "0" * 16, {}, {})
    sn = _artifact(store, "supernet", "a" * 16, {"preprocess": "0" * 16}, {"row_mask": _mask([1, 1, 1, 0])})
    best = {"widths": {"x": 3, "y": 1}}
    plain = _artifact(store, "search", "b" * 16, {"supernet": sn.fingerprint}, {"best": best})
    own = _artifact(store, "search", "c" * 16, {"supernet": sn.fingerprint},
                    {"best": best, "row_mask": _mask([0, 1, 1, 0])})
    retrain = _artifact(store, "retrain", "d" * 16, {"search": own.fingerprint, "preprocess": "0" * 16}, {})
    mask, widths = q.final_selection(store, plain, ["x", "y"], 4)
    assert mask.tolist() == [True, True, True, False] and widths == [3, 1]
    mask, widths = q.final_selection(store, retrain, ["x", "y"], 4)
    assert mask.tolist() == [False, True, True, False] and widths == [3, 1]
    mask, widths = q.final_selection(store, sn, ["x", "y"], 4)  # optembed-e: the supernet's mask, full width
    assert mask.tolist() == [True, True, True, False] and widths == [4, 4]
    unpruned = _artifact(store, "supernet", "e" * 16, {"preprocess": "0" * 16}, {"row_mask": _mask([1, 1, 1, 1], False)})
    assert q.final_selection(store, unpruned, ["x", "y"], 4) == (None, [4, 4])
    original = _artifact(store, "retrain", "f" * 16, {"preprocess": "0" * 16}, {})
    assert q.final_selection(store, original, ["x", "y"], 4) == (None, [4, 4])


def test_baseline_variants_and_their_selection(tmp_path: Path) -> None:
    """The baselines are accepted variants, labelled by their baseline step, and their row
    masks and widths come from their model files (AutoField: the kept fields' rows, hand-built)."""
    from optembed.embedders.autofield import AutoFieldEmbedder
    from optembed.models.checkpoint import save_model
    from optembed.models.config import ModelConfig
    from optembed.models.registry import build_model

    args = q.parse_args(["--quick", "--variants", "original,autofield,autodim,qr,pep"])
    assert args.variant_list == ["original", "autofield", "autodim", "qr", "pep"]
    with pytest.raises(SystemExit):
        q.parse_args(["--quick", "--variants", "original,autofield", "--compress", "autofield"])

    class Done:
        def __init__(self, fp: str) -> None:
            self.fingerprint = fp

    done = {"retrain original": Done("a"), "baseline autofield": Done("b")}
    assert q.artifact_labels(done, ["original", "autofield"], []) == {"a": "original", "b": "autofield"}  # type: ignore[arg-type]
    emb = AutoFieldEmbedder([3, 5, 2], 4, keep=[True, False, True])
    model = build_model([3, 5, 2], ModelConfig("fnn", embed_dim=4, mlp_dims=(4,)), embedder=emb)
    save_model(tmp_path / "model.pt", model, ["a", "b", "c"])

    class Art:
        stage = "baseline"

        def output(self, name: str) -> Path:
            return tmp_path / "model.pt"

    mask, widths = q.final_selection(None, Art(), ["a", "b", "c"], 4)  # type: ignore[arg-type]
    assert mask is not None and mask.tolist() == [True] * 3 + [False] * 5 + [True] * 2
    assert widths == [4, 0, 4]


def test_the_auc_bound_is_marked_indicative_when_the_seeds_cannot_resolve_it() -> None:
    noisy = q.summarize([-0.015, 0.018, 0.004, -0.002])  # std 0.013695: a standard error of 0.0068476
    note = q._noise_note(noisy, 0.0005)
    assert len(note) == 1 and "0.00685" in note[0] and "indicative only" in note[0]
    assert q._noise_note(q.summarize([0.0011, 0.0012, 0.0013]), 0.0005) == []  # se 0.00006
    assert "no spread" in q._noise_note(q.summarize([0.001]), 0.0005)[0]
