"""The ``supernet`` stage: train with learnable row pruning and/or random per-field widths.

Outputs (all self-describing): ``model.pt`` (best checkpoint by validation AUC), ``init.pt``
(the initial weights, for ``retrain --init rewind``), ``row_mask.pt`` (the frozen row mask
m_e*, per-field kept counts and thresholds), ``curves.parquet`` (one row per epoch); with
``selection`` > 0, ``selection.pt``: the training rows held out of the supernet's training for the
search to score on (:mod:`optembed.data.selection`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.data import selection as sel
from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError, TrainingError
from optembed.embedders.table import SupernetMode
from optembed.models.base import CTRModel
from optembed.models.checkpoint import save_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.progress import NULL, Reporter
from optembed.data.stream import DEFAULT_BUFFER_ROWS
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params, since_default
from optembed.training.config import TrainConfig
from optembed.training.runtime import runtime_from_env
from optembed.training.trainer import Trainer
from pipelines import resume as resume_mod
from pipelines import teacher as teachers
from pipelines.data import resolve_training, load_dataset, read_id_counts, read_schema
from pipelines.calibration import record_calibration
from pipelines.stage import execute, scale_metrics
from pipelines.tasks import per_task, with_data_tasks
from pipelines.store import Manifest, Store

STAGE = "supernet"
VERSION = 2  # 2: --patience N stops after N epochs without a validation AUC gain (was N + 1); 0 never stops
UPSTREAM = "preprocess"


@dataclass
class SupernetStage:
    model: ModelConfig
    mode: str = "optembed"
    train: TrainConfig = field(default_factory=TrainConfig)
    # fraction of the training rows held out of training for the search to score on (0: it scores on validation)
    selection: float = field(default=0.0, metadata=since_default(0.0))
    # a trained retrain artifact of the same data whose probabilities the supernet learns from beside the labels
    # (weight train.distill); an upstream, so it enters the fingerprint through it
    teacher: str | None = field(default=None, metadata=UNFINGERPRINTED)
    # preprocess artifact (fingerprint prefix or folder); None = newest (its fingerprint is the upstream's)
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    # read the splits from Parquet in chunks (also automatic when they do not fit)
    stream: bool = field(default=False, metadata=UNFINGERPRINTED)
    # rows per streamed chunk (the shuffle buffer)
    shuffle_buffer: int = field(default=DEFAULT_BUFFER_ROWS, metadata=UNFINGERPRINTED)
    resume: bool = field(default=False, metadata=UNFINGERPRINTED)
    force: bool = field(default=False, metadata=UNFINGERPRINTED)


def stage_params(config: SupernetStage) -> dict[str, Any]:
    """The fingerprinted parameters: the model, the mode and the training options."""
    return fingerprint_params(config)


def run(config: SupernetStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    mode = SupernetMode.parse(config.mode)  # validated early
    config.model.validate()
    config.train.validate()
    sel.check_fraction(config.selection)
    upstream = store.resolve(config.source, UPSTREAM)
    teacher = teachers.resolve(store, config.teacher, config.train.distill, upstream)
    config = replace(config, model=with_data_tasks(config.model, read_schema(upstream)))
    counts = read_id_counts(upstream) if config.train.freq_lr != "none" else None
    rt = runtime_from_env(config.device)  # rank, world size and device of this process
    device = rt.device
    train, auto_notes = resolve_training(upstream, config.train, config.model, device, held_out=config.selection)
    config = replace(config, train=train)
    params = stage_params(config)

    def build(tmp: Path, manifest: Manifest) -> None:
        resume_dir = resume_mod.resume_dir(store, STAGE, manifest.fingerprint)
        data = load_dataset(upstream, device, stream=config.stream, buffer_rows=config.shuffle_buffer)
        if len(data.splits["train"]) == 0:
            raise TrainingError("the training split is empty")
        held = None
        if config.selection > 0:
            data.splits["train"], held = _hold_out(data.splits["train"], config.selection, config.train.seed)
            torch.save({"rows": held.cpu(), "fraction": config.selection, "train_rows": len(data.splits["train"]) + held.numel()},
                       tmp / "selection.pt")
            reporter.message(f"selection split: {held.numel():,} training rows held out for the search")
        torch.manual_seed(config.train.seed)
        model = build_model(data.cardinalities, config.model, mode).to(device)
        save_model(tmp / "init.pt", model, data.field_names, mode.name)
        resume_state = resume_mod.load_checkpoint(resume_dir, device) if config.resume else None
        if config.resume and resume_state is None:
            reporter.message("no interrupted run to resume; starting from scratch")
        trainer = Trainer(model, config.train, device, reporter, epoch_stats=_row_stats, row_counts=counts, runtime=rt,
                          teacher=teachers.load(teacher, device))

        result = trainer.fit(
            data.splits["train"], data.splits["val"], data.splits["test"], resume_state,
            resume_mod.checkpointer(resume_dir) if rt.is_main else None,
        )
        if not result.history:
            raise TrainingError("no epoch was trained")
        model.load_state_dict(result.best_state)
        best = result.best_metrics()
        mask_info = model.embedder.row_mask_record()
        torch.save(mask_info, tmp / "row_mask.pt")
        save_model(
            tmp / "model.pt",
            model,
            data.field_names,
            mode.name,
            extra={"best_epoch": result.best_epoch, "preprocess": upstream.fingerprint},
        )
        pq.write_table(pa.Table.from_pylist(result.history), tmp / "curves.parquet")
        d = config.model.embed_dim
        kept = int(mask_info["mask"].sum())
        manifest.outputs = {
            "model": "model.pt",
            "init": "init.pt",
            "row_mask": "row_mask.pt",
            "curves": "curves.parquet",
            **({"selection": "selection.pt"} if held is not None else {}),
        }
        manifest.metrics = {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "val_auc": best["val_auc"],
            "val_logloss": best["val_logloss"],
            "test_auc": best.get("test_auc"),
            "test_logloss": best.get("test_logloss"),
            **({"tasks": per_task(best, data.tasks)} if len(data.tasks) > 1 else {}),
            "sparsity": 1.0 - kept / model.embedder.num_rows,
            "kept_rows": kept,
            "total_rows": model.embedder.num_rows,
            "embedding_params": kept * d,
            **({"selection_rows": held.numel()} if held is not None else {}),
            "train_samples_per_s": round(result.train_samples_per_s, 1),
            **result.optimizer_state_bytes,
            "device": str(device),
            **teachers.metrics(teacher, config.train.distill),
            **scale_metrics(rt, data.streamed, config.shuffle_buffer),
        }
        record_calibration(manifest, upstream)

    ups = {UPSTREAM: upstream, **teachers.upstream(teacher)}
    manifest = execute(store, STAGE, VERSION, params, ups, build, force=config.force, device=device, runtime=rt)
    if not manifest.cached and rt.is_main:  # published: the checkpoint of the run is no longer needed
        resume_mod.discard(resume_mod.resume_dir(store, STAGE, manifest.fingerprint))
    if not manifest.cached:
        manifest.notes[:0] = auto_notes
    return manifest


def _hold_out(train: SplitTensors, fraction: float, seed: int) -> tuple[SplitTensors, torch.Tensor]:
    """The training split less its selection rows, and those rows' indices."""
    if not isinstance(train, SplitTensors):
        raise ConfigError("--selection needs the training split in memory; it streams (--stream, or too large to load)")
    rows = sel.choose_rows(len(train), fraction, seed)
    rest, _ = sel.split_off(train, rows)
    if not rest.has_both_classes():
        raise ConfigError(f"--selection {fraction:g} leaves the supernet a training split without both labels")
    return rest, rows


def _row_stats(model: CTRModel) -> dict[str, float]:
    """Logged with every validation: the row mask's sparsity, the thresholds' and row norms' ranges."""
    return model.embedder.row_stats()
