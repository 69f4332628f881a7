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

from optembed.embedders.base import Embedder
from optembed.embedders.registry import BASELINE_KINDS, build_embedder, embedder_class
from optembed.errors import ConfigError, TrainingError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.models.base import CTRModel
from optembed.models.checkpoint import save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from optembed.training.device import resolve_device
from optembed.training.distill import Teacher
from optembed.training.trainer import FitResult, Trainer
from pipelines.data import resolve_training, load_dataset, read_schema
from pipelines.calibration import record_calibration
from pipelines.stage import execute, fit_metrics
from pipelines import teacher as teachers
from pipelines.tasks import with_data_tasks
from pipelines.store import Manifest, Store

STAGE = "baseline"
VERSION = 2  # 2: PEP meets its target sparsity (scaled thresholds) when the search falls short
METHODS = BASELINE_KINDS
PROBE_FIELDS = 64  # fields of the trial embedder that checks the options before the data is known
UPSTREAM = ("preprocess",)


@dataclass
class BaselineStage:
    method: str
    model: ModelConfig = field(default_factory=lambda: ModelConfig("deepfm"))
    train: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)  # the method's embedder options (fingerprinted sorted by name)
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)  # preprocess artifact; None = newest
    # a retrain artifact whose probabilities are soft labels of the final training (train.distill their
    # weight; the method's search phase trains on the labels alone); fingerprinted as an upstream
    teacher: str | None = field(default=None, metadata=UNFINGERPRINTED)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    force: bool = field(default=False, metadata=UNFINGERPRINTED)

    def validate(self, n_fields: int | None = None) -> None:
        """Refuse bad options before any work: on the data's ``n_fields`` when known, else on a
        trial of ``PROBE_FIELDS`` fields."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown baseline method {self.method!r}; choose one of {', '.join(METHODS)}")
        self.model.validate()
        self.train.validate()
        if self.train.freq_lr != "none":
            raise ConfigError("--freq-lr works on the full table only; baselines do not take it")
        given = [k for k in embedder_class(self.method).found_options if k in self.options]
        if given:
            raise ConfigError(f"{self.method}'s {', '.join(given)} are found by its search, not given")
        self.embedder([100] + [3] * ((n_fields or PROBE_FIELDS) - 1))

    def embedder(self, cardinalities: list[int]) -> Embedder:
        try:
            return build_embedder({"kind": self.method, **self.options}, cardinalities, self.model)
        except TypeError as exc:
            raise ConfigError(f"bad {self.method} option: {exc}") from None


def stage_params(config: BaselineStage) -> dict[str, Any]:
    """The fingerprinted parameters: the method, its options, the model and the training options."""
    return fingerprint_params(config)


def _train(
    model: CTRModel, cfg: TrainConfig, device: torch.device, reporter: Reporter, data: Any, search: bool = False,
    teacher: Teacher | None = None,
) -> FitResult:
    """Train with the one loop; ``search``: architecture steps on the validation split too; with a
    ``teacher``, distilled from it (``cfg.distill``), otherwise on the labels alone."""
    splits = data.splits
    cfg = cfg if teacher is not None else replace(cfg, distill=0.0)
    result = Trainer(model, cfg, device, reporter, teacher=teacher).fit(
        splits["train"], splits["val"], splits["test"], arch_val=splits["val"] if search else None
    )
    if not result.history:
        raise TrainingError("no epoch was trained")
    return result


def run(config: BaselineStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    pre = store.resolve(config.source, UPSTREAM)
    config.validate(len(read_schema(pre)["fields"]))
    config = replace(config, model=with_data_tasks(config.model, read_schema(pre)))
    device = resolve_device(config.device)
    train, auto_notes = resolve_training(pre, config.train, config.model, device)
    config = replace(config, train=train)
    params = stage_params(config)
    teacher = teachers.resolve(store, config.teacher, config.train.distill, pre)

    def build(tmp: Path, manifest: Manifest) -> None:
        data = load_dataset(pre, device)
        torch.manual_seed(config.train.seed)
        model = build_model(data.cardinalities, config.model, "none", embedder=config.embedder(data.cardinalities))
        model = model.to(device)
        search: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        fields: pa.Table | None = None
        if model.embedder.searching() is not None:
            model, search, history, fields = _search(config, model, device, reporter, data)
        result = _train(model, config.train, device, reporter, data, teacher=teachers.load(teacher, device))
        history += [{**r, "phase": "train"} for r in result.history]
        model.load_state_dict(result.best_state)
        model.eval()
        save_model(tmp / "model.pt", model, data.field_names, extra={"variant": config.method})
        pq.write_table(_table(history), tmp / "curves.parquet")
        size = model.size_report()
        manifest.outputs = {"model": "model.pt", "curves": "curves.parquet"}
        if fields is not None:
            pq.write_table(fields, tmp / "search.parquet")
            manifest.outputs["search"] = "search.parquet"
        manifest.metrics = {
            "variant": config.method,
            **fit_metrics(result, data.tasks),
            "sparsity": size["sparsity"],
            "embedding_params": size["embedding_params"],
            "embedding_bytes": size["embedding_bytes"],
            "total_rows": size["total_rows"],
            "model_bytes": (tmp / "model.pt").stat().st_size,
            **search,
            **teachers.metrics(teacher, config.train.distill),
            "device": str(device),
        }
        record_calibration(manifest, pre)

    manifest = execute(store, STAGE, VERSION, params, {"preprocess": pre, **teachers.upstream(teacher)}, build, force=config.force, device=device)
    if not manifest.cached:
        manifest.notes[:0] = auto_notes
    return manifest


def _search(
    config: BaselineStage, model: CTRModel, device: torch.device, reporter: Reporter, data: Any
) -> tuple[CTRModel, dict[str, Any], list[dict[str, Any]], pa.Table | None]:
    """The method's search phase (its embedder says what it searches and what it found), then the
    model to re-train over what it found: from a fresh initialisation, or rewound to the weights
    the search started from. Returns that model, the search's metrics, its history and a
    per-field table of the choice (``None`` if the method has none)."""
    reporter.message(model.embedder.searching() or "")
    start = copy.deepcopy(model.state_dict())
    found = _train(model, config.train, device, reporter, data, search=bool(model.embedder.arch_params()))
    outcome = model.embedder.search_outcome(data.field_names, len(found.history))
    if outcome.message:
        reporter.message(outcome.message)
    spec = {"kind": config.method, **config.options, **outcome.options}
    if not outcome.rewind:
        torch.manual_seed(config.train.seed)  # re-trained from scratch
    retrained = build_model(data.cardinalities, config.model, "none", embedder=build_embedder(spec, data.cardinalities, config.model))
    if outcome.rewind:  # the lottery ticket: the weights the search started from
        retrained.load_state_dict(start, strict=False)
    unexpected = retrained.embedder.load_state_dict(outcome.state, strict=False).unexpected_keys
    if unexpected:
        raise TrainingError(f"{config.method}'s search found state its re-trained embedding has no place for: {unexpected}")
    metrics = {"search_epochs": len(found.history), **outcome.metrics}
    history = [{**r, "phase": "search"} for r in found.history]
    table = None if outcome.fields is None else pa.Table.from_pylist(outcome.fields)
    return retrained.to(device), metrics, history, table


def _table(records: list[dict[str, Any]]) -> pa.Table:
    """Records with different keys (search and retrain phases) as one table, missing values null."""
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records])
