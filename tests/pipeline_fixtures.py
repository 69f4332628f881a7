"""Small end-to-end fixtures: synthetic data -> preprocess -> supernet, built once per module."""

from __future__ import annotations

import json
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


def synthetic_preprocess(root: Path, rows: int = 40000, seed: int = 0) -> tuple[Store, Manifest, dict]:
    store = Store(root / "artifacts")
    data = root / f"synth-{rows}-{seed}.txt"
    if not data.exists():
        generate(data, rows, fmt="criteo", seed=seed)
    truth = json.loads(Path(str(data) + ".truth.json").read_text())
    manifest = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig()), store)
    return store, manifest, truth


def small_supernet(store: Store, mode: str = "optembed", epochs: int = 2, **train: object) -> Manifest:
    cfg = TrainConfig(epochs=epochs, batch_size=512, patience=5, **train)  # type: ignore[arg-type]
    return supernet.run(supernet.SupernetStage(model=SMALL_MODEL, mode=mode, train=cfg, device="cpu"), store)
