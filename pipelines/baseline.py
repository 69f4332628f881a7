"""The ``baseline`` stage: train one of the paper's baselines on a preprocess artifact.

Methods (options in ``options``, passed to the method's embedder, see :mod:`optembed.embedders`):

- ``qr``: quotient-remainder tables (``collisions``, ``operation`` mult|add|concat, ``min_rows``),
  trained once;
- ``pep``: learnable soft thresholds (``granularity``, ``threshold_init``, ``target_sparsity``):
  trained until the element sparsity reaches the target (at most ``train.epochs`` epochs), then
  the mask found is retrained from the initial weights (lottery ticket) with the same options;
  a search that ends below the target scales its learned thresholds by one factor to meet it
  (``threshold_scale`` in the metrics, 1 when the thresholds reached it themselves);
- ``autofield``: per-field keep/drop architecture logits (``keep_fields``, ``arch_lr``,
  ``temperature``, ``temperature_decay``, ``min_temperature``) learned by alternating steps -
  the network on training batches, the logits on validation batches - for at most
  ``train.epochs`` epochs; the fields kept are then retrained from a fresh initialisation;
- ``autodim``: per-field candidate widths over one weight-shared table (``candidates``,
  ``transform`` linear|pad, and the same search options) searched the same way; each field's
  most probable width is then retrained from a fresh initialisation.

All use the one training loop (:class:`optembed.training.trainer.Trainer`); the best validation
AUC checkpoint is kept and saved as ``model.pt`` (a model file with the embedder's spec), which
``evaluate`` reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.embedders.autodim import AutoDimEmbedder
from optembed.embedders.autofield import AutoFieldEmbedder
from optembed.embedders.base import Embedder
from optembed.embedders.pep import PEPEmbedder
from optembed.embedders.registry import build_embedder
from optembed.errors import ConfigError, TrainingError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.models.base import CTRModel
from optembed.models.checkpoint import save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from optembed.training.device import resolve_device
from optembed.training.trainer import FitResult, Trainer
from pipelines.data import resolve_training, load_dataset, read_schema
from pipelines.calibration import record_calibration
from pipelines.stage import execute
from pipelines.store import Manifest, Store

STAGE = "baseline"
VERSION = 2  # 2: PEP meets its target sparsity (scaled thresholds) when the search falls short
METHODS = ("qr", "pep", "autofield", "autodim")
SEARCHES = {"autofield": "keep", "autodim": "widths"}  # a differentiable search, then retrain: the option it sets
UPSTREAM = ("preprocess",)


@dataclass
class BaselineStage:
    method: str
    model: ModelConfig = field(default_factory=lambda: ModelConfig("deepfm"))
    train: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)  # the method's embedder options (fingerprinted sorted by name)
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)  # preprocess artifact; None = newest
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    force: bool = field(default=False, metadata=UNFINGERPRINTED)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown baseline method {self.method!r}; choose one of {', '.join(METHODS)}")
        self.model.validate()
        self.train.validate()
        if self.train.freq_lr != "none":
            raise ConfigError("--freq-lr works on the full table only; baselines do not take it")
        if SEARCHES.get(self.method) in self.options:
            raise ConfigError(f"{self.method}'s {SEARCHES[self.method]} are found by its search, not given")
        self.embedder(self._probe_cardinalities())  # bad options fail before any work

    def _probe_cardinalities(self) -> list[int]:
        """Fields to build a trial embedder on (enough of them for AutoField's ``keep_fields``)."""
        k = self.options.get("keep_fields", 0)
        return [100, 3] + [3] * (k - 2 if isinstance(k, int) and k > 2 else 0)

    def check_fields(self, n_fields: int) -> None:
        k = self.options.get("keep_fields", 0)
        if self.method == "autofield" and isinstance(k, int) and k > n_fields:
            raise ConfigError(f"autofield's keep_fields {k} is more than the data's {n_fields} fields")

    def embedder(self, cardinalities: list[int]) -> Embedder:
        try:
            return build_embedder({"kind": self.method, **self.options}, cardinalities, self.model)
        except TypeError as exc:
            raise ConfigError(f"bad {self.method} option: {exc}") from None


def stage_params(config: BaselineStage) -> dict[str, Any]:
    """The fingerprinted parameters: the method, its options, the model and the training options."""
    return fingerprint_params(config)


def _train(
    model: CTRModel, cfg: TrainConfig, device: torch.device, reporter: Reporter, data: Any, search: bool = False
) -> FitResult:
    """Train with the one loop; ``search``: architecture steps on the validation split too."""
    splits = data.splits
    result = Trainer(model, cfg, device, reporter).fit(
        splits["train"], splits["val"], splits["test"], arch_val=splits["val"] if search else None
    )
    if not result.history:
        raise TrainingError("no epoch was trained")
    return result


def run(config: BaselineStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    pre = store.resolve(config.source, UPSTREAM)
    config.check_fields(len(read_schema(pre)["fields"]))
    device = resolve_device(config.device)
    train, auto_notes = resolve_training(pre, config.train, config.model, device)
    config = replace(config, train=train)
    params = stage_params(config)

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
            learned = embedder.sparsity()
            search = {"search_sparsity": learned, "search_epochs": len(found.history),
                      "target_reached": learned >= embedder.target_sparsity, "threshold_scale": 1.0}
            if search["target_reached"]:
                mask = embedder.current_mask()
            else:  # the thresholds, scaled by one factor, prune the target share
                mask, scale = embedder.mask_at(embedder.target_sparsity)
                search["threshold_scale"] = scale
                reporter.message(
                    f"pep: the learned thresholds pruned {learned:.4f} in {len(found.history)} epoch(s), short of the "
                    f"target {embedder.target_sparsity:g}; scaled by {scale:.4g} to meet it (a higher "
                    f"--threshold-init or more epochs lets them learn it)"
                )
            history += [{**r, "phase": "search"} for r in found.history]
            options = {**config.options, "masked": True}
            model = build_model(data.cardinalities, config.model, "none", embedder=build_embedder(
                {"kind": "pep", **options}, data.cardinalities, config.model))
            init.pop("embedder.mask", None)
            model.load_state_dict(init, strict=False)  # the lottery ticket: the initial weights
            model.embedder.set_mask(mask)  # type: ignore[operator]
            model = model.to(device)
        fields: pa.Table | None = None
        if config.method in SEARCHES:
            model, search, searched, fields = _search(config, model, device, reporter, data)
            history += searched
        result = _train(model, config.train, device, reporter, data)
        history += [{**r, "phase": "train"} for r in result.history]
        model.load_state_dict(result.best_state)
        model.eval()
        best = result.best_metrics()
        save_model(tmp / "model.pt", model, "none", data.field_names, extra={"variant": config.method})
        pq.write_table(_table(history), tmp / "curves.parquet")
        size = model.size_report()
        manifest.outputs = {"model": "model.pt", "curves": "curves.parquet"}
        if fields is not None:
            pq.write_table(fields, tmp / "search.parquet")
            manifest.outputs["search"] = "search.parquet"
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
        record_calibration(manifest, pre)

    manifest = execute(store, STAGE, VERSION, params, {"preprocess": pre}, build, force=config.force, device=device)
    if not manifest.cached:
        manifest.notes[:0] = auto_notes
    return manifest


def _search(
    config: BaselineStage, model: CTRModel, device: torch.device, reporter: Reporter, data: Any
) -> tuple[CTRModel, dict[str, Any], list[dict[str, Any]], pa.Table]:
    """AutoField's / AutoDim's search phase, then the model to retrain (fresh weights) over what
    it found; returns that model, the search's metrics, its history and a per-field table (the
    learned probabilities and the choice)."""
    method, names = config.method, data.field_names
    reporter.message(f"{method}: searching (network on training batches, architecture on validation batches)")
    found = _train(model, config.train, device, reporter, data, search=True)
    embedder = model.embedder
    metrics: dict[str, Any] = {"search_epochs": len(found.history)}
    if isinstance(embedder, AutoFieldEmbedder):
        keep = embedder.selected()
        probs = embedder.keep_probabilities()
        fields = pa.table({"field": names, "keep_probability": probs, "kept": keep})
        metrics |= {
            "fields_kept": sum(keep),
            "fields_dropped": [n for n, k in zip(names, keep, strict=True) if not k],
            "field_sparsity": 1.0 - sum(keep) / len(keep),
        }
        found_option: Any = keep
        reporter.message(f"autofield: keeping {sum(keep)} of {len(keep)} fields")
    else:
        assert isinstance(embedder, AutoDimEmbedder)
        widths = embedder.chosen_widths()
        probs = embedder.candidate_probabilities()
        columns: dict[str, Any] = {"field": names, "width": widths}
        columns |= {f"p_{c}": probs[:, i].tolist() for i, c in enumerate(embedder.candidates)}
        fields = pa.table(columns)
        metrics |= {"candidates": list(embedder.candidates), "search_widths": dict(zip(names, widths, strict=True))}
        found_option = widths
        reporter.message(f"autodim: widths {widths}")
    history = [{**r, "phase": "search"} for r in found.history]
    options = {**config.options, SEARCHES[method]: found_option}
    torch.manual_seed(config.train.seed)  # retrained from scratch
    retrained = build_model(data.cardinalities, config.model, "none", embedder=build_embedder(
        {"kind": method, **options}, data.cardinalities, config.model))
    return retrained.to(device), metrics, history, fields


def _table(records: list[dict[str, Any]]) -> pa.Table:
    """Records with different keys (search and retrain phases) as one table, missing values null."""
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])
