"""The ``retrain`` stage: train from scratch under fixed masks and export the compact model.

Sources:
- a ``search`` artifact: the searched widths and its supernet's row mask (OptEmbed);
- a ``supernet`` artifact: its row mask (if it pruned rows) at full width (OptEmbed-E, or
  the Original model for a ``--mode none`` supernet);
- ``full=True``: the Original model (no masks) on the same data; the source may then also be
  a ``preprocess`` artifact, with the model configuration given explicitly.

With ``teacher`` (a trained retrain artifact of the same preprocess, usually the Original) and
``train.distill`` > 0 the model learns from the teacher's probabilities beside the labels
(:mod:`pipelines.teacher`).

Pruned ids are read as their field's OOV id while re-training, so the exported per-field
tables (kept rows only, ``D_f`` columns) reproduce the trained model's predictions exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.errors import ArtifactError, ConfigError, TrainingError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.masks.fold import split_id_counts
from optembed.embedders.table import SupernetMode
from optembed.models.apply import apply_search
from optembed.models.checkpoint import load_model, read_model_payload, save_model
from optembed.models.compact import compact_model
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from optembed.data.stream import DEFAULT_BUFFER_ROWS
from optembed.training.runtime import runtime_from_env
from optembed.training.trainer import Trainer
from pipelines import resume as resume_mod
from pipelines import teacher as teachers
from pipelines import variants
from pipelines.data import resolve_training, load_dataset, read_id_counts, read_schema
from pipelines.calibration import record_calibration
from pipelines.stage import curve_records, execute, fit_metrics, scale_metrics
from pipelines.tasks import with_data_tasks
from pipelines.store import Manifest, Store
from pipelines.readers import load_row_mask, read_best_widths, resolve_chain, search_row_mask

STAGE = "retrain"
# 2: --patience N stops after N epochs without a validation AUC gain (was N + 1); 0 never stops; 3: warm start folds
# pruned rows into OOV; 4: a masked variant trains its compact tables (trains_compact), saved as its model;
# 5: the compact heads read packed embeddings, whose first layer keeps its columns (and their optimizer state)
# by width: a resume checkpoint of version 4 does not apply, and the new fingerprints keep it from being read
VERSION = 5
SOURCES = ("search", "supernet", "preprocess")
# supernet: warm start from the trained supernet (its weights kept as epoch 0 unless beaten);
# auto: supernet for the masked variants trained on the labels alone; fresh under a teacher (on Frappe, 3 seeds,
# a fresh start distilled kept the warm start's AUC at 0.0034 better logloss), for the Original, without a supernet
INITS = ("auto", "fresh", "rewind", "supernet")


@dataclass
class RetrainStage:
    # search/supernet (or preprocess with full=True); None = newest search
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)
    full: bool = False
    init: str = "auto"  # resolved by plan() (auto -> supernet or fresh, see INITS) before it is fingerprinted
    # a retrain artifact (id prefix or folder) whose probabilities are soft labels (train.distill
    # their weight); fingerprinted as an upstream
    teacher: str | None = field(default=None, metadata=UNFINGERPRINTED)
    train: TrainConfig = field(default_factory=TrainConfig)
    # only for full=True from a preprocess artifact; the plan's model (the supernet's) is fingerprinted
    model: ModelConfig | None = field(default=None, metadata=UNFINGERPRINTED)
    device: str = field(default="auto", metadata=UNFINGERPRINTED)
    # read the splits from Parquet in chunks (also automatic when they do not fit)
    stream: bool = field(default=False, metadata=UNFINGERPRINTED)
    # rows per streamed chunk (the shuffle buffer)
    shuffle_buffer: int = field(default=DEFAULT_BUFFER_ROWS, metadata=UNFINGERPRINTED)
    # continue an interrupted run from its last finished epoch
    resume: bool = field(default=False, metadata=UNFINGERPRINTED)
    force: bool = field(default=False, metadata=UNFINGERPRINTED)


def trains_compact(train: TrainConfig) -> bool:
    """Whether a masked variant trains on its compact tables: with dense Adam on the tables and
    no option that works on the full table's rows (``--freq-lr``, re-drawn tables, the row-wise
    optimizers); otherwise it trains the full table under its masks, as the same model."""
    return train.embedding_optimizer == "adam" and train.freq_lr == "none" and not train.reinit_embeddings_each_epoch


def stage_params(config: RetrainStage, model: ModelConfig, variant: str) -> dict[str, Any]:
    """The fingerprinted parameters: the stage's options, the model the plan trains and its variant."""
    return {**fingerprint_params(config), "variant": variant, "model": fingerprint_params(model)}


@dataclass
class Plan:
    """What to train: upstream artifacts, model config, fixed masks and a variant label."""

    upstream: dict[str, Manifest]
    preprocess: Manifest
    model: ModelConfig
    keep: torch.Tensor | None
    widths: list[int] | None
    variant: str
    supernet: Manifest | None = None
    teacher: Manifest | None = None


def plan(config: RetrainStage, store: Store) -> Plan:
    wanted = SOURCES if config.full else ("search", "supernet")
    if config.source is None:
        candidates = [m for s in ("search", "supernet") for m in store.list(s)]
        if not candidates:
            raise ArtifactError(f"no search or supernet artifact in {store.root}; run those stages first or pass --from")
        source = max(candidates, key=lambda m: (m.created, m.fingerprint))
    else:
        source = store.resolve(config.source, wanted)
    chain = resolve_chain(store, source)
    pre = chain["preprocess"]
    read_schema(pre)
    sn = chain.get("supernet")
    if sn is not None:
        payload = read_model_payload(sn.output("model"))
        model = ModelConfig.from_dict(payload["model_config"])
        mode = SupernetMode.parse(payload["mode"])
    else:
        if config.model is None:
            raise ConfigError("retraining from a preprocess artifact needs a model configuration (--model ...)")
        model, mode = with_data_tasks(config.model, read_schema(pre)), SupernetMode.parse("none")
    if config.init == "auto":
        config.init = "supernet" if sn is not None and not config.full and config.teacher is None else "fresh"
    if config.init in ("rewind", "supernet") and sn is None:
        raise ConfigError(f"--init {config.init} needs a supernet (or search) artifact as the source")
    teacher = teachers.resolve(store, config.teacher, config.train.distill, pre)
    ups = {source.stage: source, **teachers.upstream(teacher)}
    if config.full:
        return Plan(ups, pre, model, None, None, "original", sn, teacher)
    if source.stage == "search":
        mask_info = search_row_mask(source, sn)  # type: ignore[arg-type]
    else:
        mask_info = load_row_mask(sn)  # type: ignore[arg-type]
    keep = mask_info["mask"] if mask_info["pruned"] else None
    widths = None
    if source.stage == "search" and mode.sample_dims:  # a prune-only supernet's search sets rows only
        widths = read_best_widths(source, payload["field_names"])
    variant = variants.of_masks(keep is not None, widths is not None) if mode.searchable else variants.of_mode(mode.name)
    return Plan(ups, pre, model, keep, widths, variant, sn, teacher)


def run(config: RetrainStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    if config.init not in INITS:
        raise ConfigError(f"unknown --init '{config.init}'; choose auto, fresh, rewind or supernet")
    config.train.validate()
    p = plan(config, store)
    counts = read_id_counts(p.preprocess) if config.train.freq_lr != "none" else None
    rt = runtime_from_env(config.device)  # rank, world size and device of this process
    device = rt.device
    train, auto_notes = resolve_training(p.preprocess, config.train, p.model, device)
    config = replace(config, train=train)
    params = stage_params(config, p.model, p.variant)
    upstream = {**p.upstream, "preprocess": p.preprocess}

    def build(tmp: Path, manifest: Manifest) -> None:
        resume_dir = resume_mod.resume_dir(store, STAGE, manifest.fingerprint)
        data = load_dataset(p.preprocess, device, stream=config.stream, buffer_rows=config.shuffle_buffer)
        torch.manual_seed(config.train.seed)
        model = build_model(data.cardinalities, p.model, "none")
        if config.init in ("rewind", "supernet"):
            start = p.supernet.output("init" if config.init == "rewind" else "model")  # type: ignore[union-attr]
            init_model, _ = load_model(start)
            model.load_state_dict(init_model.state_dict())
        model = model.to(device)
        dim = p.model.embed_dim
        widths = torch.tensor(p.widths if p.widths is not None else [dim] * model.n_fields)
        # a warm start folds: pruned ids will be read as their field's OOV row, which starts at the mean of what it absorbs
        counts_in = None
        if config.init == "supernet" and p.keep is not None:
            counts_in = split_id_counts(data.splits["train"], model.embedder.cardinalities, device)
        keep = apply_search(model, p.keep, widths, counts_in).cpu()
        compact_training = (p.keep is not None or p.widths is not None) and trains_compact(config.train)
        if compact_training:  # the searched tables, physically small, are what trains
            model = compact_model(model.cpu()).to(device).train()
        teacher = teachers.load(p.teacher, device)
        resume_state = resume_mod.load_checkpoint(resume_dir, device) if config.resume else None
        if config.resume and resume_state is None:
            reporter.message("no interrupted run to resume; starting from scratch")
        result = Trainer(model, config.train, device, reporter, row_counts=counts, runtime=rt, teacher=teacher).fit(
            data.splits["train"], data.splits["val"], data.splits["test"], resume_state,
            resume_mod.checkpointer(resume_dir) if rt.is_main else None, validate_start=config.init == "supernet",
        )
        if not result.history:
            raise TrainingError("no epoch was trained")
        model.load_state_dict(result.best_state)
        model.eval()
        if compact_training:
            compact = model.cpu()
            outputs = {"model": "compact.pt", "compact": "compact.pt"}  # the trained model is the deployed one
        else:
            extra = {"keep": keep.cpu(), "widths": widths.tolist(), "variant": p.variant}
            save_model(tmp / "model.pt", model, data.field_names, extra=extra)
            compact = compact_model(model.cpu())  # the masks applied for training slice the tables
            outputs = {"model": "model.pt", "compact": "compact.pt"}
        save_model(tmp / "compact.pt", compact, data.field_names,
                   extra={"variant": p.variant, "preprocess": p.preprocess.fingerprint})
        pq.write_table(pa.Table.from_pylist(curve_records(result)), tmp / "curves.parquet")
        total = model.embedder.num_rows * dim
        emb_params = compact.embedder.kept_params()
        manifest.outputs = {**outputs, "curves": "curves.parquet"}
        manifest.metrics = {
            "variant": p.variant,
            **fit_metrics(result, data.tasks),
            "embedding_params": emb_params,
            "sparsity": 1.0 - emb_params / total,
            "kept_rows": sum(compact.embedder.field_rows()),
            "total_rows": model.embedder.num_rows,
            "widths": compact.embedder.field_widths(),
            "compact_bytes": (tmp / "compact.pt").stat().st_size,
            "dense_bytes": (tmp / outputs["model"]).stat().st_size,
            "trained_compact": compact_training,
            **teachers.metrics(p.teacher, config.train.distill),
            "train_samples_per_s": round(result.train_samples_per_s, 1),
            **result.optimizer_state_bytes,
            "device": str(device),
            **scale_metrics(rt, data.streamed, config.shuffle_buffer),
        }
        record_calibration(manifest, p.preprocess)

    manifest = execute(store, STAGE, VERSION, params, upstream, build, force=config.force, device=device, runtime=rt)
    if not manifest.cached and rt.is_main:  # published: the checkpoint of the run is no longer needed
        resume_mod.discard(resume_mod.resume_dir(store, STAGE, manifest.fingerprint))
    if not manifest.cached:
        manifest.notes[:0] = auto_notes
    return manifest
