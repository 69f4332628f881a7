"""retrain --resume: an interrupted re-training continues from its last finished epoch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from optembed_cli.main import app
from pipeline_fixtures import synthetic_preprocess
from pipelines import retrain
from pipelines.store import Manifest, Store
from trainer_hooks import Epochs, hook_trainer

ARGS = ["--full", "--model", "deepfm", "--embed-dim", "4", "--mlp", "8", "--epochs", "3", "--batch-size", "512",
        "--patience", "5", "--seed", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("rr"), rows=3000)
    return store, pre


def _retrain(store: Store, pre: Manifest, *extra: str) -> Any:
    return CliRunner().invoke(
        app, ["retrain", "--from", pre.fingerprint, *ARGS, *extra, "--artifacts", str(store.root)], catch_exceptions=False
    )


def test_interrupted_retrain_resumes(prepared: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch) -> None:
    store, pre = prepared
    interrupted = Epochs(interrupt_at=3)
    with monkeypatch.context() as hooked:
        hook_trainer(hooked, retrain, interrupted)
        stopped = _retrain(store, pre)
    assert stopped.exit_code == 130 and "interrupted" in stopped.stderr and interrupted.started == [1, 2, 3]
    stage_dir = store.root / "retrain"
    assert not [p for p in stage_dir.iterdir() if p.name.startswith(".tmp-")]
    assert [p.name for p in stage_dir.iterdir() if p.name.startswith(".resume-")]
    assert store.list("retrain") == []

    epochs = Epochs()
    hook_trainer(monkeypatch, retrain, epochs)
    resumed = _retrain(store, pre, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads(resumed.stdout)
    assert epochs.started == [3] and manifest["metrics"]["epochs_run"] == 3  # epochs 1-2 came from the checkpoint
    assert not [p for p in stage_dir.iterdir() if p.name.startswith((".resume-", ".tmp-"))]
    again = _retrain(store, pre, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["cached"] is True
    assert json.loads(again.stdout)["fingerprint"] == manifest["fingerprint"]  # --resume is not in the fingerprint


def test_resume_without_checkpoint_starts_from_scratch(prepared: tuple[Store, Manifest]) -> None:
    store, pre = prepared
    res = _retrain(store, pre, "--resume", "--seed", "6", "--epochs", "1")
    assert res.exit_code == 0, res.output
    assert "no interrupted run to resume" in res.stderr
