"""The embedding training options through the supernet and retrain stages and their CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipeline_fixtures import STRONG_PRUNING, small_supernet, synthetic_preprocess
from pipelines import retrain, supernet
from pipelines.data import read_id_counts, read_schema
from pipelines.readers import train_params
from optembed.errors import ConfigError
from optembed.training.config import TrainConfig

FAST = TrainConfig(epochs=1, batch_size=512, patience=5)
# The training parameters every artifact recorded before the embedding options existed.
ORIGINAL_TRAIN_KEYS = {
    "epochs", "batch_size", "lr", "weight_decay", "alpha", "threshold_lr", "threshold_optimizer", "patience", "seed", "amp",
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    return synthetic_preprocess(tmp_path_factory.mktemp("embopts"), rows=20000)


def test_default_fingerprints_are_unchanged() -> None:
    """Options added later stay out of the parameters at the value their absence means; the two
    whose defaults changed (the plateau decay, the monitor) appear at their new defaults."""
    assert set(train_params(TrainConfig(lr_decay=1.0, monitor="auc"))) == ORIGINAL_TRAIN_KEYS
    assert set(train_params(TrainConfig())) == ORIGINAL_TRAIN_KEYS | {"lr_decay", "monitor"}


def test_id_counts_follow_the_table_layout(prepared) -> None:
    _, pre, _ = prepared
    schema = read_schema(pre)
    counts = read_id_counts(pre)
    assert counts.shape == (schema["total_cardinality"],)
    first = schema["fields"][0]
    vocab = pq.read_table(pre.path / first["vocab"]).to_pylist()
    assert counts[: first["cardinality"]].tolist() == [r["count"] for r in sorted(vocab, key=lambda r: r["id"])]
    assert int(counts[0]) == first["oov_rows"] and int(counts[1]) == first["missing_rows"]
    # every training row counts once per field
    assert int(counts.sum()) == schema["rows"]["train"] * schema["n_fields"]


def test_prune_only_with_rowwise_adagrad_prunes_and_retrains(prepared) -> None:
    store, _, _ = prepared
    sn = small_supernet(
        store, "prune-only", epochs=2, embedding_optimizer="rowwise-adagrad", freq_lr="clip", freq_lr_c0=50.0,
        **STRONG_PRUNING,
    )
    assert sn.params["train"]["embedding_optimizer"] == "rowwise-adagrad"
    assert sn.params["train"]["freq_lr"] == "clip" and sn.params["train"]["freq_lr_c0"] == 50.0
    assert sn.metrics["kept_rows"] < sn.metrics["total_rows"]  # the row mask still prunes
    assert math.isfinite(sn.metrics["val_auc"]) and sn.metrics["val_auc"] > 0.5
    rows = sn.metrics["total_rows"]
    assert sn.metrics["embedding_optimizer_state_bytes"] == 2 * rows * 4  # one float per row, two tables (DeepFM)
    assert sn.metrics["optimizer_state_bytes"] > sn.metrics["embedding_optimizer_state_bytes"]

    cfg = TrainConfig(
        epochs=2, batch_size=512, patience=5, embedding_optimizer="rowwise-adagrad", freq_lr="smooth",
        reinit_embeddings_each_epoch=True,
    )
    rt = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=cfg, device="cpu"), store)
    assert rt.metrics["variant"] == "optembed-e" and rt.metrics["sparsity"] > 0
    assert math.isfinite(rt.metrics["val_auc"]) and rt.metrics["epochs_run"] == 2
    assert rt.params["train"]["reinit_embeddings_each_epoch"] is True


@pytest.mark.parametrize("optimizer", ["adam", "sparse-adam"])
def test_supernet_records_state_bytes(prepared, optimizer: str) -> None:
    store, _, _ = prepared
    sn = small_supernet(store, "optembed", epochs=1, embedding_optimizer=optimizer, weight_decay=0.0)
    rows, dim = sn.metrics["total_rows"], sn.params["model"]["embed_dim"]
    # two moments per entry of the table and of the per-feature table (+ the step counters)
    assert sn.metrics["embedding_optimizer_state_bytes"] >= 2 * rows * (dim + 1) * 4
    assert sn.metrics["kept_rows"] <= rows


def test_cli_embedding_options_and_errors(prepared, cli, tmp_path) -> None:
    store, pre, _ = prepared
    base = ["--artifacts", store.root, "--from", pre.fingerprint, "--embed-dim", "4", "--mlp", "8", "--epochs", "1",
            "--device", "cpu"]
    res = cli("supernet", *base, "--json", "--embedding-optimizer", "sparse-adam", "--freq-lr", "smooth", "--embedding-l2", "0.01")
    assert res.exit_code == 0, res.output
    man = json.loads(res.stdout)
    assert man["params"]["train"]["embedding_optimizer"] == "sparse-adam"
    assert "applies no L2 to the embedding rows" in res.stderr
    for extra in (["--embedding-optimizer", "adagrad"], ["--freq-lr", "log"]):  # fixed choices: usage errors
        bad = cli("supernet", *base, *extra)
        assert bad.exit_code == 2 and "is not one of" in bad.stderr, (extra, bad.output)
    for extra, message in [
        (["--freq-lr", "clip", "--freq-lr-c0", "0"], "--freq-lr-c0 must be positive"),
    ]:
        bad = cli("supernet", *base, *extra)
        assert bad.exit_code == 2, (extra, bad.output)
        lines = [l for l in bad.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and message in lines[0], (extra, bad.stderr)
    rt = cli("retrain", "--artifacts", store.root, "--from", man["fingerprint"], "--epochs", "1", "--device", "cpu",
             "--json", "--embedding-optimizer", "rowwise-adagrad", "--reinit-embeddings-each-epoch")
    assert rt.exit_code == 0, rt.output
    assert json.loads(rt.stdout)["params"]["train"]["embedding_optimizer"] == "rowwise-adagrad"

    # a preprocess artifact without its vocabularies: --freq-lr cannot work
    other, bare, _ = synthetic_preprocess(tmp_path, rows=3000)
    shutil.rmtree(bare.path / "vocab")
    with pytest.raises(ConfigError, match="--freq-lr needs id counts"):
        read_id_counts(bare)
    bad = cli("supernet", "--artifacts", other.root, "--from", bare.fingerprint, "--embed-dim", "4", "--mlp", "8",
              "--epochs", "1", "--device", "cpu", "--freq-lr", "clip")
    lines = [l for l in bad.stderr.splitlines() if l.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "--freq-lr needs id counts" in lines[0], bad.stderr
    assert torch.is_tensor(read_id_counts(pre))


def test_run_config_warns_about_sparse_adam_weight_decay(tmp_path: Path) -> None:
    """A TOML run with sparse-adam and an embedding L2 names the section of the questionable option."""
    from pipelines import chain

    config = tmp_path / "run.toml"
    config.write_text(
        '[data]\npath = "x.txt"\n\n[supernet]\nweight_decay = 0.0\nembedding_optimizer = "sparse-adam"\n\n'
        '[retrain]\nembedding_l2 = 1e-5\nembedding_optimizer = "sparse-adam"\n'
    )
    lines = chain.load_config(config).warnings()
    assert len(lines) == 1 and lines[0].startswith("[retrain] warning: sparse-adam") and "1e-05" in lines[0]
