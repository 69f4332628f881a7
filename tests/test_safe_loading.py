"""No file the tool reads can run code: a malicious pickle planted in every torch file kind.

Each case replaces one artifact file with a pickle whose unpickling would create a marker file,
runs the command that reads that file, and checks: exit code 2, one stderr line naming the file,
and no marker. A truncated copy of every kind is one clear line too (never an internal error).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from optembed.evolution.config import EvolutionConfig
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from optembed.safe_load import load_tensor_file
from optembed.training.config import TrainConfig
from optembed_cli.main import app
from pipeline_fixtures import SMALL_MODEL, small_supernet, synthetic_preprocess
from pipelines import compress, retrain, search, supernet
from pipelines.readers import train_params
from pipelines.store import RESUME_PREFIX, Manifest, Store

MARKER_ENV = "OPTEMBED_TEST_MARKER"


def _touch_marker(path: str) -> None:  # what the planted payload would run
    Path(path).write_text("code ran")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_touch_marker, (self.marker,))


def plant(path: Path, marker: Path, as_zip: bool) -> None:
    """Overwrite ``path`` with a pickle that would call :func:`_touch_marker` when loaded."""
    evil = {"format": "optembed-model", "version": 1, "mask": Payload(marker)}
    if as_zip:
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    root = tmp_path_factory.mktemp("safe")
    store, pre, _ = synthetic_preprocess(root, rows=6000)
    sn = small_supernet(store, epochs=1)
    se = search.run(
        search.SearchStage(source=sn.fingerprint, evolution=EvolutionConfig(population=6, generations=1, topk=3), device="cpu"),
        store,
    )
    re = retrain.run(
        retrain.RetrainStage(source=se.fingerprint, train=TrainConfig(epochs=1, batch_size=512), device="cpu"), store
    )
    co = compress.run(
        compress.CompressStage(source=re.fingerprint, quantizer=QuantizerConfig(codebook=8, steps=2, kmeans_iters=1),
                               min_rows=1, finetune=FinetuneConfig(epochs=1), device="cpu"),
        store,
    )
    return {"store": store, "preprocess": pre, "supernet": sn, "search": se, "retrain": re, "compress": co}  # type: ignore[dict-item]


def _resume_file(chain: dict[str, Manifest]) -> Path:
    """A resume checkpoint where ``supernet --resume --seed 77`` (not cached) will look for it."""
    store: Store = chain["store"]  # type: ignore[assignment]
    cfg = supernet.SupernetStage(model=SMALL_MODEL, mode="optembed", train=TrainConfig(epochs=1, batch_size=512,
                                                                                     patience=5, seed=77))
    from optembed.training import recipe
    from pipelines.store import fingerprint

    train, _ = recipe.resolve(cfg.train, int(chain["preprocess"].metrics["rows_train"]))  # as the stage sizes it
    params = {"model": cfg.model.to_dict(), "mode": cfg.mode, "train": train_params(train)}

    fp = fingerprint(supernet.STAGE, supernet.VERSION, params, {"preprocess": chain["preprocess"].fingerprint})
    path = store.root / "supernet" / f"{RESUME_PREFIX}{fp}" / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0}, path)
    return path


SUPERNET_ARGS = ["--model", "deepfm", "--embed-dim", "8", "--mlp", "32,16", "--epochs", "1", "--batch-size", "512",
                 "--patience", "5", "--device", "cpu"]

# (file kind, how to find the file, the command that reads it)
CASES: list[tuple[str, Callable[[dict[str, Manifest]], Path], Callable[[dict[str, Manifest]], list[str]]]] = [
    ("supernet model.pt", lambda c: c["supernet"].output("model"),
     lambda c: ["search", "--from", c["supernet"].fingerprint, "--population", "4", "--topk", "2", "--generations", "1", "--device", "cpu", "--force"]),
    ("supernet init.pt", lambda c: c["supernet"].output("init"),
     lambda c: ["retrain", "--from", c["search"].fingerprint, "--init", "rewind", "--epochs", "1", "--device", "cpu"]),
    ("search row_mask.pt via retrain", lambda c: c["search"].output("row_mask"),
     lambda c: ["retrain", "--from", c["search"].fingerprint, "--epochs", "1", "--device", "cpu", "--force"]),
    ("supernet row_mask.pt via retrain", lambda c: c["supernet"].output("row_mask"),
     lambda c: ["retrain", "--from", c["supernet"].fingerprint, "--epochs", "1", "--device", "cpu", "--force"]),
    ("row_mask.pt via a cached supernet", lambda c: c["supernet"].output("row_mask"),
     lambda c: ["supernet", "--from", c["preprocess"].fingerprint, *SUPERNET_ARGS]),
    ("resume checkpoint.pt", _resume_file,
     lambda c: ["supernet", "--from", c["preprocess"].fingerprint, *SUPERNET_ARGS, "--seed", "77", "--resume"]),
    ("retrain compact.pt via compress", lambda c: c["retrain"].output("compact"),
     lambda c: ["compress", "--from", c["retrain"].fingerprint, "--device", "cpu", "--force"]),
    ("retrain compact.pt via evaluate", lambda c: c["retrain"].output("compact"),
     lambda c: ["evaluate", "--from", c["retrain"].fingerprint, "--device", "cpu", "--force"]),
    ("compress model.pt", lambda c: c["compress"].output("model"),
     lambda c: ["evaluate", "--from", c["compress"].fingerprint, "--device", "cpu", "--force"]),
]


def _run(chain: dict[str, Manifest], args: list[str]) -> tuple[int, str]:
    store: Store = chain["store"]  # type: ignore[assignment]
    result = CliRunner().invoke(app, args, env={"OPTEMBED_ARTIFACTS": str(store.root)}, catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("as_zip", [True, False], ids=["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_planted_pickle_never_runs(chain: dict[str, Manifest], tmp_path: Path, case, as_zip: bool) -> None:
    _, locate, command = case
    target = locate(chain)
    backup = tmp_path / "backup"
    shutil.copyfile(target, backup)
    marker = tmp_path / "marker"
    try:
        plant(target, marker, as_zip)
        code, err = _run(chain, command(chain))
    finally:
        shutil.copyfile(backup, target)
    assert not marker.exists(), "the planted payload ran"
    # warnings about the run's own settings (e.g. few optimizer steps per epoch) may come first
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and target.name in lines[0] and "internal error" not in lines[0], err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_truncated_file_is_one_line(chain: dict[str, Manifest], tmp_path: Path, case) -> None:
    _, locate, command = case
    target = locate(chain)
    backup = tmp_path / "backup"
    shutil.copyfile(target, backup)
    try:
        data = backup.read_bytes()
        target.write_bytes(data[: len(data) // 2])
        code, err = _run(chain, command(chain))
    finally:
        shutil.copyfile(backup, target)
    # warnings about the run's own settings (e.g. few optimizer steps per epoch) may come first
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and target.name in lines[0] and "internal error" not in lines[0], err


def test_loader_accepts_plain_tensors_and_refuses_objects(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"mask": torch.ones(3, dtype=torch.bool), "kept": [1, 2], "name": "x", "t": (1.0, None)}, good)
    loaded = load_tensor_file(good, "row mask file")
    assert loaded["kept"] == [1, 2] and loaded["mask"].all()
    marker = tmp_path / "m"
    bad = tmp_path / "bad.pt"
    plant(bad, marker, as_zip=True)
    with pytest.raises(Exception, match="refusing to read row mask file"):
        load_tensor_file(bad, "row mask file")
    assert not marker.exists()
    assert os.environ.get(MARKER_ENV) is None


def test_library_loaders_refuse_planted_retrain_model(chain: dict[str, Manifest], tmp_path: Path) -> None:
    """The retrained model file is read by users through the library."""
    from optembed.models.checkpoint import load_model
    from optembed.errors import ArtifactError

    target = chain["retrain"].output("model")
    backup = tmp_path / "backup"
    shutil.copyfile(target, backup)
    marker = tmp_path / "marker"
    try:
        plant(target, marker, as_zip=True)
        with pytest.raises(ArtifactError, match=target.name):
            load_model(target)
    finally:
        shutil.copyfile(backup, target)
    assert not marker.exists()
    model, _ = load_model(target)  # the restored file still loads
    assert model.n_fields > 0
