"""Small end-to-end fixtures: synthetic data -> preprocess -> supernet, built once per module."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from optembed.data.preprocess import PreprocessConfig
from optembed.data.synth import generate
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from pipelines import preprocess, supernet
from pipelines.store import Manifest, Store

SMALL_MODEL = ModelConfig("deepfm", embed_dim=8, mlp_dims=(32, 16))
# Thresholds that prune visibly within a few hundred steps (Adam on the thresholds): for tests
# of the learned row mask itself; the defaults (the reference's SGD at 1e-4) barely move them.
STRONG_PRUNING: dict[str, object] = {"threshold_optimizer": "adam", "threshold_lr": 1e-2, "alpha": 1e-3}


_SHARED: dict[tuple[int, int], tuple[Path, Manifest]] = {}


def _shared_preprocess(rows: int, seed: int) -> tuple[Path, Manifest]:
    """One generated file and one preprocess artifact per (rows, seed) in a test session."""
    if (rows, seed) not in _SHARED:
        base = Path(tempfile.mkdtemp(prefix=f"optembed-synth-{rows}-{seed}-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        data = base / f"synth-{rows}-{seed}.txt"
        generate(data, rows, fmt="criteo", seed=seed)
        manifest = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig()), Store(base / "artifacts"))
        _SHARED[(rows, seed)] = data, manifest
    return _SHARED[(rows, seed)]


def synthetic_preprocess(root: Path, rows: int = 40000, seed: int = 0) -> tuple[Store, Manifest, dict]:
    """A store under ``root`` holding the preprocess artifact of ``rows`` synthetic Criteo lines
    (a copy of the session's shared one: the same fingerprint, as the input is the same file),
    with the raw lines and their planted truth beside it as ``root/synth-<rows>-<seed>.txt``."""
    store = Store(root / "artifacts")
    data, shared = _shared_preprocess(rows, seed)
    for source in (data, Path(str(data) + ".truth.json")):
        if not (root / source.name).exists():
            shutil.copy2(source, root / source.name)
    target = store.root / shared.path.parent.name / shared.path.name
    if not target.exists():
        shutil.copytree(shared.path, target)
    truth = json.loads(Path(str(data) + ".truth.json").read_text())
    manifest = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig()), store)
    assert manifest.fingerprint == shared.fingerprint
    return store, manifest, truth


def small_supernet(store: Store, mode: str = "optembed", epochs: int = 2, **train: object) -> Manifest:
    cfg = TrainConfig(epochs=epochs, batch_size=512, patience=5, **train)  # type: ignore[arg-type]
    return supernet.run(supernet.SupernetStage(model=SMALL_MODEL, mode=mode, train=cfg, device="cpu"), store)
