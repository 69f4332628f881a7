"""``--track mlflow``: a finished artifact read back from an MLflow file store (parameters, one
metric point per curve row, final metrics, tags), a cached rerun tagged so, ``run``'s stages
nested under one parent run with the evaluation's report as an artifact; nothing written or
imported without the flag; a missing package is one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from optembed import __version__
from optembed.data.synth import generate
from pipelines.store import Store
from pipelines.tracking import MISSING, curve_points, key
from pipeline_fixtures import synthetic_preprocess

ROWS = 3000
SUPERNET = ("supernet", "--epochs", "2", "--batch-size", "256", "--embed-dim", "4", "--mlp", "16", "--device", "cpu")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file store under ``tmp_path`` as $MLFLOW_TRACKING_URI (the working folder moved there too,
    so that MLflow's default store would land inside it as well)."""
    where = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", where.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    return where


def leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested dict under its dotted path (the reference for the logged parameters)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def runs(experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def test_supernet_logged_as_one_run_read_back(tmp_path: Path, cli, tracking_uri: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store, pre, _ = synthetic_preprocess(tmp_path, rows=ROWS)
    res = cli(*SUPERNET, "--artifacts", store.root, "--track", "mlflow")
    assert res.exit_code == 0, res.output
    manifest = Store(store.root).list("supernet")[-1]
    curves = pq.read_table(manifest.output("curves")).to_pylist()
    assert len(curves) == 2  # one row per epoch

    (run,) = runs("optembed")
    client = MlflowClient()
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["fingerprint"] == manifest.fingerprint and tags["stage"] == "supernet"
    assert tags["upstream.preprocess"] == pre.fingerprint and tags["optembed_version"] == __version__
    assert tags["cached"] == "false"
    # every leaf of the manifest's parameters, as text, under its dotted name
    expected = {k: "" if v is None else str(v) for k, v in leaves(manifest.params).items()}
    assert run.data.params == expected
    assert run.data.params["train.lr"] == str(manifest.params["train"]["lr"]) and run.data.params["model.embed_dim"] == "4"
    # one point per curve row, at its epoch, with its value
    history = client.get_metric_history(run.info.run_id, "curve/val_auc")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["val_auc"]) for r in curves]
    assert len(client.get_metric_history(run.info.run_id, "curve/train_loss")) == len(curves)
    assert "curve/epoch" not in run.data.metrics  # the epoch is the step
    # the final metrics under their own names
    assert run.data.metrics["test_auc"] == pytest.approx(manifest.metrics["test_auc"])
    assert run.data.metrics["best_epoch"] == manifest.metrics["best_epoch"]
    assert "device" not in run.data.metrics  # text is no metric

    # the same command again: the artifact is cached, logged again and tagged so
    again = cli(*SUPERNET, "--artifacts", store.root, "--track", "mlflow")
    assert again.exit_code == 0, again.output
    first, second = runs("optembed")
    assert first.info.run_id == run.info.run_id
    assert second.data.tags["cached"] == "true" and second.data.tags["fingerprint"] == manifest.fingerprint
    assert len(Store(store.root).list("supernet")) == 1


def test_experiment_name_from_the_environment(tmp_path: Path, cli, tracking_uri: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    store, _, _ = synthetic_preprocess(tmp_path, rows=ROWS)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ctr-study")
    res = cli(*SUPERNET, "--epochs", "1", "--artifacts", store.root, "--track", "mlflow", "--json")
    assert res.exit_code == 0, res.output
    (run,) = runs("ctr-study")
    assert run.data.tags["fingerprint"] == Store(store.root).list("supernet")[-1].fingerprint


def test_run_nests_every_stage_under_one_parent(tmp_path: Path, cli, tracking_uri: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    data = tmp_path / "clicks.txt"
    generate(data, ROWS, fmt="criteo", seed=3)
    root = tmp_path / "artifacts"
    res = cli("run", "--data", data, "--format", "criteo", "--epochs", "1", "--batch-size", "256", "--embed-dim", "4",
              "--mlp", "16", "--population", "4", "--generations", "1", "--variants", "original", "--no-latency",
              "--device", "cpu", "--artifacts", root, "--track", "mlflow", "--json")
    assert res.exit_code == 0, res.output
    parent, *children = runs("optembed")
    assert parent.data.tags["stage"] == "run" and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    store = Store(root)
    published = {m.fingerprint: m.stage for stage in ("preprocess", "supernet", "retrain", "evaluate") for m in store.list(stage)}
    assert {c.data.tags["fingerprint"]: c.data.tags["stage"] for c in children} == published
    evaluation = next(c for c in children if c.data.tags["stage"] == "evaluate")
    assert "report.md" in {a.path for a in MlflowClient().list_artifacts(evaluation.info.run_id)}
    # the evaluation's upstream names carry '#', which MLflow names refuse
    assert any(k.startswith("upstream.retrain") for k in evaluation.data.tags)


def test_nothing_logged_or_imported_without_the_flag(tmp_path: Path, cli, tracking_uri: Path, monkeypatch) -> None:
    store, _, _ = synthetic_preprocess(tmp_path, rows=ROWS)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # any import of it fails
    res = cli(*SUPERNET, "--epochs", "1", "--artifacts", store.root)
    assert res.exit_code == 0, res.output
    assert not tracking_uri.exists()
    assert not [p.name for p in tmp_path.iterdir() if "mlflow" in p.name or p.name == "mlruns"]


def test_missing_package_is_one_line_and_exit_2(tmp_path: Path, cli, tracking_uri: Path, monkeypatch) -> None:
    store, _, _ = synthetic_preprocess(tmp_path, rows=ROWS)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    for args in (SUPERNET, ("run", "--data", tmp_path / f"synth-{ROWS}-0.txt", "--format", "criteo")):
        res = cli(*args, "--artifacts", store.root, "--track", "mlflow")
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert lines[-1] == f"error: {MISSING}", res.stderr
        assert "Traceback" not in res.output
    assert Store(store.root).list("supernet") == []  # refused before any work


def test_curve_steps_epoch_or_row_index() -> None:
    by_epoch = [{"epoch": 1, "val_auc": 0.6, "note": "x"}, {"epoch": 3, "val_auc": 0.7, "note": None}]
    assert list(curve_points(by_epoch)) == [("curve/val_auc", 1, 0.6), ("curve/val_auc", 3, 0.7)]
    # epochs that repeat (validations inside an epoch): the step is the validation point's index
    inside = [{"epoch": 1, "step": 5, "val_auc": 0.5}, {"epoch": 1, "step": 10, "val_auc": 0.55}]
    assert list(curve_points(inside)) == [
        ("curve/epoch", 0, 1.0), ("curve/step", 0, 5.0), ("curve/val_auc", 0, 0.5),
        ("curve/epoch", 1, 1.0), ("curve/step", 1, 10.0), ("curve/val_auc", 1, 0.55),
    ]
    assert list(curve_points([{"round": 0, "flag": True}])) == [("curve/round", 0, 0.0)]  # booleans are no metric
    assert key("upstream.retrain#0") == "upstream.retrain_0" and key("curve/val auc-1.x:y") == "curve/val auc-1.x:y"


def test_unusable_tracking_uri_is_one_line_before_any_work(tmp_path: Path, cli, tracking_uri: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    store, _, _ = synthetic_preprocess(tmp_path, rows=ROWS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    res = cli(*SUPERNET, "--artifacts", store.root, "--track", "mlflow")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: MLflow tracking at bogus://nowhere failed: "), res.stderr
    assert Store(store.root).list("supernet") == []
