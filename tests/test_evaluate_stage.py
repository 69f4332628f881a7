"""evaluate: a comparison of compact, supernet and original models from the same data."""

from __future__ import annotations

import dataclasses
import json
import math

import pyarrow.parquet as pq
import pytest
import torch

from optembed.errors import ArtifactError
from optembed.models.checkpoint import load_model
from optembed.training.config import TrainConfig
from optembed.training.latency import module_bytes
from pipeline_fixtures import STRONG_PRUNING, small_supernet, synthetic_preprocess
from pipelines import evaluate, retrain
from pipelines.data import load_dataset
from pipelines.diagnostics import artifact_warnings

FAST = TrainConfig(epochs=1, batch_size=512)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("ev"), rows=6000)
    sn = small_supernet(store, "prune-only", epochs=1, **STRONG_PRUNING)
    pruned = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=FAST, device="cpu"), store)
    full = retrain.run(retrain.RetrainStage(source=sn.fingerprint, full=True, train=FAST, device="cpu"), store)
    return store, pre, sn, pruned, full


def test_evaluate_table_matches_retrain_metrics(prepared) -> None:
    store, pre, sn, pruned, full = prepared
    m = evaluate.run(evaluate.EvaluateStage(sources=[pruned.fingerprint, full.fingerprint, sn.fingerprint], device="cpu"), store)
    rows = {r["id"]: r for r in json.loads(m.output("metrics").read_text())["models"]}
    assert set(rows) == {pruned.fingerprint, full.fingerprint, sn.fingerprint}
    for art in (pruned, full):
        r = rows[art.fingerprint]
        assert r["test_auc"] == pytest.approx(art.metrics["test_auc"], abs=1e-6)
        assert r["sparsity"] == pytest.approx(art.metrics["sparsity"], abs=1e-9)
        assert r["file_bytes"] == art.metrics["compact_bytes"]
        assert r["latency_p50_ms"] > 0 and r["throughput_samples_per_s"] > 0
    assert rows[full.fingerprint]["sparsity"] == 0.0
    assert rows[pruned.fingerprint]["embedding_params"] < rows[full.fingerprint]["embedding_params"]
    assert rows[pruned.fingerprint]["memory_bytes"] < rows[full.fingerprint]["memory_bytes"]
    compact, _ = load_model(pruned.output("compact"))
    assert rows[pruned.fingerprint]["memory_bytes"] == module_bytes(compact)
    report = m.output("report").read_text()
    assert pruned.fingerprint[:10] in report and "optembed-e" in report


def test_evaluate_plots(prepared) -> None:
    pytest.importorskip("matplotlib")
    store, _, sn, pruned, full = prepared
    m = evaluate.run(
        evaluate.EvaluateStage(sources=[pruned.fingerprint, full.fingerprint, sn.fingerprint], device="cpu",
                               latency=False, plot=True),
        store,
    )
    for name, file in (("plot_tradeoff", "tradeoff.png"), ("plot_curves", "curves.png"), ("plot_fields", "fields.png")):
        assert m.outputs[name] == file
        data = m.output(name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert "plot_convergence" not in m.outputs  # no search artifact among the sources


def test_training_curves_follow_the_sources(prepared) -> None:
    store, _, sn, pruned, full = prepared
    rows = [{"id": pruned.fingerprint, "variant": "optembed-e"}, {"id": sn.fingerprint, "variant": "supernet"},
            {"id": full.fingerprint, "variant": "original"}]
    curves = evaluate.training_curves(store, [sn, full, pruned], rows)
    assert [label for label, _ in curves] == ["optembed-e", "supernet", "original"]  # the rows' order
    for (_, history), art in zip(curves, (pruned, sn, full)):
        assert history == pq.read_table(art.output("curves")).to_pylist()
        assert any(r.get("train_loss") is not None and r.get("val_auc") is not None for r in history)
    # a model without curves of its own (as a search artifact) uses its nearest trained ancestor's,
    # and models trained by one artifact share one entry
    scored = dataclasses.replace(pruned, fingerprint="f" * 64,
                                 outputs={k: v for k, v in pruned.outputs.items() if k != "curves"})
    assert evaluate.curves_source(store, scored) is not None
    assert evaluate.curves_source(store, scored).fingerprint == sn.fingerprint
    shared = evaluate.training_curves(store, [sn, scored], [{"id": sn.fingerprint, "variant": "supernet"},
                                                            {"id": scored.fingerprint, "variant": "no retrain"}])
    assert [label for label, _ in shared] == [f"supernet / no retrain (supernet {sn.fingerprint[:8]})"]


def test_variant_labels_are_unique(prepared) -> None:
    store, _, _, pruned, full = prepared
    again = retrain.run(retrain.RetrainStage(source=full.upstream["supernet"], full=True, device="cpu",
                                             train=TrainConfig(epochs=1, batch_size=512, seed=7)), store)
    m = evaluate.run(evaluate.EvaluateStage(sources=[pruned.fingerprint, full.fingerprint, again.fingerprint],
                                            device="cpu", latency=False), store)
    labels = {r["id"]: r["variant"] for r in json.loads(m.output("metrics").read_text())["models"]}
    assert labels[pruned.fingerprint] == "optembed-e"  # a label of its own is left alone
    assert labels[full.fingerprint] == f"original [{full.fingerprint[:8]}]"
    assert labels[again.fingerprint] == f"original [{again.fingerprint[:8]}]"
    report = m.output("report").read_text()
    assert f"original [{again.fingerprint[:8]}]" in report
    # latency was not measured: said in its cells, never as nan
    assert "nan" not in report and report.count("n/a (off)") == 3 * len(labels)


def test_evaluate_rejects_mixed_data(prepared) -> None:
    store, _, _, pruned, _ = prepared
    # a second data set in the same store: models of different data are not compared
    store2, pre2, _ = synthetic_preprocess(store.root.parent, rows=3000, seed=1)
    sn2 = small_supernet(store2, "none", epochs=1)
    with pytest.raises(ArtifactError, match="different preprocess"):
        evaluate.run(evaluate.EvaluateStage(sources=[pruned.fingerprint, sn2.fingerprint], device="cpu"), store)
    with pytest.raises(ArtifactError, match="expected retrain or compress or supernet or search"):
        evaluate.run(evaluate.EvaluateStage(sources=[pre2.fingerprint], device="cpu"), store)


def test_cli_evaluate(prepared, cli) -> None:
    store, _, _, pruned, full = prepared
    res = cli("evaluate", "--artifacts", store.root, "--from", pruned.fingerprint, "--from", full.fingerprint, "--no-latency")
    assert res.exit_code == 0, res.output
    assert "optembed-e" in res.stdout and "original" in res.stdout
    bad = cli("evaluate", "--artifacts", store.root, "--from", "0000000000")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")


def _hand_base_rate(y: torch.Tensor, train_y: torch.Tensor) -> float:
    q, p = float(y.double().mean()), float(train_y.double().mean())
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


def test_trained_and_evaluated_base_rates(prepared) -> None:
    store, pre, sn, pruned, full = prepared
    data = load_dataset(pre, torch.device("cpu"))
    train_y, val_y, test_y = (data.splits[s].y for s in ("train", "val", "test"))
    for art in (sn, pruned, full):
        met = art.metrics
        assert met["val_base_rate_logloss"] == pytest.approx(_hand_base_rate(val_y, train_y), abs=1e-9)
        assert met["test_base_rate_logloss"] == pytest.approx(_hand_base_rate(test_y, train_y), abs=1e-9)
        worse = met["val_logloss"] > met["val_base_rate_logloss"] or met["test_logloss"] > met["test_base_rate_logloss"]
        assert bool(met["calibration_warnings"]) == worse
        assert set(met["calibration_warnings"]) <= set(artifact_warnings(store, art))
    # an artifact made before the warnings were recorded: computed from its metrics and the schema
    old = dataclasses.replace(full, metrics={k: v for k, v in full.metrics.items() if k != "calibration_warnings"})
    old.metrics["val_logloss"] = old.metrics["val_base_rate_logloss"] + 0.05
    lines = [w for w in artifact_warnings(store, old) if "worse than predicting" in w]
    assert len(lines) == 1 and lines[0].startswith("original: validation logloss")
    m = evaluate.run(evaluate.EvaluateStage(sources=[pruned.fingerprint, full.fingerprint], device="cpu"), store)
    result = json.loads(m.output("metrics").read_text())
    assert result["test"]["base_rate_logloss"] == pytest.approx(_hand_base_rate(test_y, train_y), abs=1e-9)
    assert m.metrics["test_base_rate_logloss"] == result["test"]["base_rate_logloss"]
    for r in result["models"]:
        lo, hi = r["test_auc_ci"]
        assert lo < r["test_auc"] < hi and hi - lo == pytest.approx(2 * 1.959963984540054 * r["test_auc_se"], rel=1e-9)
        worse = r["test_logloss"] > result["test"]["base_rate_logloss"]
        assert any(w.startswith(f"{r['variant']}: test logloss") for w in result["warnings"]) == worse
    assert artifact_warnings(store, m) == result["warnings"]


def test_comparison_table_fits_80_columns(prepared) -> None:
    from rich.console import Console

    from optembed_cli.commands.evaluate import comparison_table

    store, _, _, pruned, full = prepared
    m = evaluate.run(evaluate.EvaluateStage(sources=[pruned.fingerprint, full.fingerprint], device="cpu"), store)
    data = json.loads(m.output("metrics").read_text())
    console = Console(width=80, record=True, highlight=False)
    console.print(comparison_table(data["models"], data["test"]))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for r in data["models"]:  # every AUC with its interval on one line, unbroken
        assert f"{r['test_auc']:.4f} ±{1.959963984540054 * r['test_auc_se']:.4f}" in text
        assert f"{r['test_logloss']:.4f}" in text
    assert f"base rate logloss {data['test']['base_rate_logloss']:.4f}" in " ".join(text.split())
