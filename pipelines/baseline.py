"""The ``baseline`` stage: train one of the paper's baselines on a preprocess artifact.

Methods (options in ``options``, passed to the method's embedder, see :mod:`optembed.embedders`):

- ``qr``: quotient-remainder tables (``collisions``, ``operation`` mult|add|concat, ``min_rows``),
  trained once;
- ``pep``: learnable soft thresholds (``granularity``, ``threshold_init``, ``target_sparsity``):
  trained until the element sparsity reaches the target (at most ``train.epochs`` epochs), then
  the mask found is retrained from the initial weights (lottery ticket) with the same options.

Both use the one training loop (:class:`optembed.training.trainer.Trainer`); the best validation
AUC checkpoint is kept and saved as ``model.pt`` (a model file with the embedder's spec), which
``evaluate`` reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.embedders.base import Embedder
from optembed.embedders.pep import PEPEmbedder
from optembed.embedders.registry import build_embedder
from optembed.errors import ConfigError, TrainingError
from optembed.models.base import CTRModel
from optembed.models.checkpoint import save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from optembed.training.device import resolve_device
from optembed.training.trainer import FitResult, Trainer
from pipelines.data import check_training_fits, load_dataset, read_schema
from pipelines.stage import execute
from pipelines.store import Manifest, Store
from pipelines.supernet import train_params

STAGE = "baseline"
VERSION = 1
METHODS = ("qr", "pep")
UPSTREAM = ("preprocess",)


@dataclass
class BaselineStage:
    method: str
    model: ModelConfig = field(default_factory=lambda: ModelConfig("deepfm"))
    train: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)  # the method's embedder options
    source: str | None = None  # preprocess artifact; None = newest
    device: str = "auto"
    force: bool = False

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown baseline method {self.method!r}; choose one of {', '.join(METHODS)}")
        self.model.validate()
        self.train.validate()
        if self.train.freq_lr != "none":
            raise ConfigError("--freq-lr works on the full table only; baselines do not take it")
        self.embedder([100, 3])  # bad options fail before any work

    def embedder(self, cardinalities: list[int]) -> Embedder:
        try:
            return build_embedder({"kind": self.method, **self.options}, cardinalities, self.model)
        except TypeError as exc:
            raise ConfigError(f"bad {self.method} option: {exc}") from None


def _train(model: CTRModel, cfg: TrainConfig, device: torch.device, reporter: Reporter, data: Any) -> FitResult:
    result = Trainer(model, cfg, device, reporter).fit(data.splits["train"], data.splits["val"], data.splits["test"])
    if not result.history:
        raise TrainingError("no epoch was trained")
    return result


def run(config: BaselineStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    pre = store.resolve(config.source, UPSTREAM)
    read_schema(pre)
    device = resolve_device(config.device)
    check_training_fits(pre, config.train, config.model, device)
    params = {
        "method": config.method,
        "options": dict(sorted(config.options.items())),
        "model": config.model.to_dict(),
        "train": train_params(config.train),
    }

    def build(tmp: Path, manifest: Manifest) -> None:
        data = load_dataset(pre, device)
        torch.manual_seed(config.train.seed)
        model = build_model(data.cardinalities, config.model, "none", embedder=config.embedder(data.cardinalities))
        model = model.to(device)
        search: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        if config.method == "pep":
            init = copy.deepcopy(model.state_dict())
            reporter.message(f"pep: pruning until sparsity {model.embedder.target_sparsity}")  # type: ignore[union-attr]
            found = _train(model, config.train, device, reporter, data)
            embedder: PEPEmbedder = model.embedder  # type: ignore[assignment]
            mask = embedder.current_mask()
            search = {"search_sparsity": embedder.sparsity(), "search_epochs": len(found.history),
                      "target_reached": embedder.sparsity() >= embedder.target_sparsity}
            if not search["target_reached"]:
                reporter.message(f"pep: target sparsity not reached ({embedder.sparsity():.4f}); retraining the mask found")
            history += [{**r, "phase": "search"} for r in found.history]
            options = {**config.options, "masked": True}
            model = build_model(data.cardinalities, config.model, "none", embedder=build_embedder(
                {"kind": "pep", **options}, data.cardinalities, config.model))
            init.pop("embedder.mask", None)
            model.load_state_dict(init, strict=False)  # the lottery ticket: the initial weights
            model.embedder.set_mask(mask)  # type: ignore[operator]
            model = model.to(device)
        result = _train(model, config.train, device, reporter, data)
        history += [{**r, "phase": "train"} for r in result.history]
        model.load_state_dict(result.best_state)
        model.eval()
        best = result.best_metrics()
        save_model(tmp / "model.pt", model, "none", data.field_names, extra={"variant": config.method})
        pq.write_table(pa.Table.from_pylist(history), tmp / "curves.parquet")
        size = model.size_report()
        manifest.outputs = {"model": "model.pt", "curves": "curves.parquet"}
        manifest.metrics = {
            "variant": config.method,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "val_auc": best["val_auc"],
            "val_logloss": best["val_logloss"],
            "test_auc": best.get("test_auc"),
            "test_logloss": best.get("test_logloss"),
            "sparsity": size["sparsity"],
            "embedding_params": size["embedding_params"],
            "embedding_bytes": size["embedding_bytes"],
            "total_rows": size["total_rows"],
            "model_bytes": (tmp / "model.pt").stat().st_size,
            **search,
            "device": str(device),
        }

    return execute(store, STAGE, VERSION, params, {"preprocess": pre}, build, force=config.force, device=device)
