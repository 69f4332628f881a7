"""The epoch loop shared by ``supernet`` and ``retrain``.

Batches are sliced from device-resident tensors through a device-side permutation; in
``sample_dims`` mode every sample draws one width per field. The loss is BCE plus ``alpha`` times
the embedder's regulariser (OptEmbed's ``sum(exp(-t))`` while the row thresholds are learnable);
a model of several tasks sums each task's BCE weighted by ``task_weights``
(:mod:`optembed.training.tasks`) and is selected on the primary task's validation metrics, with
every task's recorded beside them. Given a teacher and ``distill`` > 0, each task's BCE blends the
labels with the teacher's probabilities (:mod:`optembed.training.distill`).
The model's embedder (:class:`optembed.embedders.Embedder`) says which of its parameters are
thresholds (their own optimizer) and which the network optimizer must leave alone; an embedder
that reaches its search goal (``search_done``, e.g. PEP's target sparsity) stops training at the
next check point. Given ``arch_val``, an embedder with architecture weights (AutoField, AutoDim)
gets one architecture step on a batch of it after every training step
(:mod:`optembed.training.arch`). After every epoch the model
is evaluated on validation data; the best validation AUC is kept and training stops
after ``patience`` epochs in a row without improvement (0: never early). The test split, when
given, is evaluated once, on the kept checkpoint after training (and on the starting weights of
``fit(validate_start=True)``): selection never sees it, and the epoch lines do not show it.
A diverging run - a NaN/inf loss, gradient or weight, or a mean loss far above a sane model's - stops with a clear
error at the next check point (every ``check_every`` steps); see :mod:`optembed.training.stopping`.
Callbacks (:mod:`optembed.training.callbacks`) hear when each epoch starts and see, and may
adjust, the metrics of every validation.

Embedding options (``--embedding-optimizer``, ``--freq-lr``, ``--reinit-embeddings-each-epoch``)
act on the embedding tables only - every :class:`FieldEmbedding` of the model: the shared
table and DeepFM's per-feature linear weights; see :mod:`optembed.training.optimizers` and
:mod:`optembed.training.freq_lr`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError, TrainingError
from optembed.layers.embedding import FieldEmbedding
from optembed.masks.dim_mask import sample_widths
from optembed.models.base import CTRModel
from optembed.progress import NULL, Reporter
from optembed.training.arch import ArchStep
from optembed.training.callbacks import TrainingCallback
from optembed.training.config import MIN_DECAYED_LR, TrainConfig
from optembed.training.distill import Teacher, distilled_bce
from optembed.training.evaluate import autocast, evaluate, require_rankable
from optembed.training.freq_lr import row_scale
from optembed.training.optimizers import RowLRScale, RowWiseAdagrad, state_bytes
from optembed.training.runtime import Runtime, single
from optembed.training.stopping import DivergenceGuard, patience_exhausted
from optembed.training.selection import check_select, selected_suffixes
from optembed.training.tasks import resolve_task_weights, task_names

EpochStats = Callable[[CTRModel], dict[str, float]]
Checkpointer = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    best_state: dict[str, Tensor]
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -math.inf  # the kept checkpoint's validation score under --monitor (the AUC by default)
    stopped_early: bool = False
    train_samples_per_s: float = 0.0
    optimizer_state_bytes: dict[str, int] = field(default_factory=dict)
    best_record: dict[str, Any] = field(default_factory=dict)  # the metrics of the kept checkpoint
    start_record: dict[str, Any] = field(default_factory=dict)  # fit(validate_start=True): the starting weights' metrics

    def best_metrics(self) -> dict[str, Any]:
        """The validation metrics of the kept checkpoint (its epoch's record, or the mid-epoch
        validation that found it), with its test metrics when ``fit`` was given a test split."""
        if self.best_record:
            return self.best_record
        return next(r for r in self.history if r["epoch"] == self.best_epoch)


def embedding_tables(model: CTRModel) -> list[FieldEmbedding]:
    """The model's embedding tables: the embedder's first, then any per-feature table of the head."""
    return [*model.embedder.tables(), *model.additive_id_tables()]


def build_optimizers(model: CTRModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam (with weight decay) for the network - and the embedding tables with
    ``embedding_optimizer="adam"``; otherwise the tables get their own sparse optimizer (and
    produce sparse gradients). Thresholds are on their own optimizer, last.
    """
    thresholds = model.embedder.threshold_params()
    excluded = {id(p) for p in model.embedder.excluded_params()}
    tables = [*model.embedder.table_params(), *(t.weight for t in model.additive_id_tables())]
    rows = {id(t.weight) for t in embedding_tables(model)}
    if cfg.sparse_embeddings and any(id(w) not in rows for w in tables):
        raise ConfigError(
            f"--embedding-optimizer {cfg.embedding_optimizer} updates table rows; the {model.embedder.kind} embedding "
            "stores its tables otherwise: train it with --embedding-optimizer adam"
        )
    for t in embedding_tables(model):
        t.sparse = cfg.sparse_embeddings
    table_ids = {id(w) for w in tables}
    emb_lr = cfg.embedding_lr if cfg.embedding_lr is not None else cfg.lr
    if cfg.embedding_optimizer == "adam":
        dense = [p for p in model.parameters() if id(p) not in excluded and p.requires_grad]
        groups: list[Any] = [
            {"params": [p for p in dense if id(p) not in table_ids]},
            {"params": [p for p in dense if id(p) in table_ids], "lr": emb_lr, "weight_decay": cfg.table_l2},
        ]
    else:
        dense = [p for p in model.parameters() if id(p) not in excluded and id(p) not in table_ids and p.requires_grad]
        groups = [{"params": dense}]
    groups = [g for g in groups if g["params"]] or [{"params": []}]
    fused = bool(dense) and dense[0].is_cuda
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    ]
    trainable = [w for w in tables if w.requires_grad]
    if cfg.embedding_optimizer == "sparse-adam" and trainable:
        optimizers.append(torch.optim.SparseAdam(trainable, lr=emb_lr))
    elif cfg.embedding_optimizer == "rowwise-adagrad" and trainable:
        optimizers.append(RowWiseAdagrad(trainable, lr=emb_lr, weight_decay=cfg.table_l2))
    if thresholds:
        if cfg.threshold_optimizer == "sgd":
            optimizers.append(torch.optim.SGD(thresholds, lr=cfg.threshold_lr))
        else:
            optimizers.append(torch.optim.Adam(thresholds, lr=cfg.threshold_lr))
    return optimizers


class Trainer:
    """Trains one model: :meth:`fit` runs the epochs, validates and keeps the best checkpoint.

    ``callbacks`` (also the attribute of that name, a list) are called at fixed points of the
    loop: ``on_epoch_start(epoch)`` before every epoch's pass over the training data and
    ``on_validation(metrics) -> metrics`` after every validation, whose returned metrics the loop
    selects on; see :mod:`optembed.training.callbacks`.
    """

    def __init__(
        self,
        model: CTRModel,
        cfg: TrainConfig,
        device: torch.device,
        reporter: Reporter = NULL,
        epoch_stats: EpochStats | None = None,
        row_counts: Tensor | None = None,
        runtime: Runtime | None = None,
        lr_option: str = "--lr",
        callbacks: Sequence[TrainingCallback] = (),
        teacher: Teacher | None = None,
    ) -> None:
        """``row_counts``: training count of every table row (``--freq-lr`` needs them).
        ``runtime``: rank and world size of a data-parallel run (default: one process on
        ``device``); see :mod:`optembed.training.runtime`. ``lr_option``: the option a
        divergence message tells the user to lower. ``callbacks``: see the class's description.
        ``teacher``: the trained model whose probabilities are soft labels with weight
        ``cfg.distill`` (:mod:`optembed.training.distill`); needed when ``cfg.distill`` > 0."""
        self.lr_option = lr_option
        if cfg.distill > 0 and teacher is None:
            raise ConfigError(f"--distill {cfg.distill:g} needs a teacher (retrain --teacher ID: a trained model of the same data)")
        if teacher is not None and teacher.tasks != model.tasks:
            raise ConfigError(f"the teacher predicts {teacher.tasks} task(s) but the model {model.tasks}")
        self.teacher = teacher if cfg.distill > 0 else None
        self.callbacks: list[TrainingCallback] = list(callbacks)
        cfg.validate()
        self.runtime = runtime if runtime is not None else single(device)
        self.model = model.to(device)
        self.runtime.broadcast_module(self.model)  # every rank starts from rank 0's weights
        self.cfg = cfg
        self.device = device
        self.reporter = reporter
        self.epoch_stats = epoch_stats
        self.optimizers = build_optimizers(self.model, cfg)
        self._steps: list[Callable[[], Any]] = [opt.step for opt in self.optimizers]
        if cfg.freq_lr != "none":
            self._set_freq_lr(row_counts)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed)
        self.forward: Callable[..., Tensor] = torch.compile(self.model) if cfg.compile else self.model
        sparse = {id(t.weight) for t in embedding_tables(self.model)} if cfg.sparse_embeddings else set()
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self._dense_params = [p for p in trained if id(p) not in sparse]
        self._sparse_params = [p for p in trained if id(p) in sparse]
        self.arch: ArchStep | None = None  # the architecture step of a differentiable search (fit's arch_val)
        weights = resolve_task_weights(cfg.task_weights, self.model.tasks)
        # one task without weights: the plain BCE, exactly as before there were several
        self.task_weights: Tensor | None = (
            torch.tensor(weights, dtype=torch.float32, device=device) if cfg.task_weights else None
        )

    def _set_freq_lr(self, row_counts: Tensor | None) -> None:
        cfg = self.cfg
        if row_counts is None:
            raise ConfigError("--freq-lr needs the id counts of the preprocess artifact (vocab/<field>.parquet); none were found")
        counts = self.model.embedder.table_row_counts(row_counts.to(self.device, torch.long))
        scale = row_scale(counts, cfg.freq_lr, cfg.freq_lr_c0, cfg.freq_lr_power).to(self.device)
        tables = [t.weight for t in embedding_tables(self.model) if t.weight.requires_grad]
        opt = self.optimizers[0] if cfg.embedding_optimizer == "adam" else self.optimizers[1]
        if isinstance(opt, RowWiseAdagrad):
            for w in tables:
                opt.set_row_scale(w, scale)
        else:
            self._steps[self.optimizers.index(opt)] = RowLRScale(opt, {w: scale for w in tables}).step

    def reinit_embeddings(self, epoch: int) -> None:
        """Re-draw the embedding tables (not the network, not the thresholds) and forget their
        optimizer state; seeded by ``seed`` and ``epoch``, so a resumed run re-draws the same."""
        gen = torch.Generator(device=embedding_tables(self.model)[0].weight.device)
        gen.manual_seed(self.cfg.seed * 1_000_003 + epoch)
        for table in embedding_tables(self.model):
            table.reset_parameters(gen)
            for opt in self.optimizers:
                opt.state.pop(table.weight, None)

    def optimizer_state_bytes(self) -> dict[str, int]:
        """Bytes of optimizer state: in all, and of the embedding tables alone."""
        tables = [t.weight for t in embedding_tables(self.model)]
        return {
            "optimizer_state_bytes": sum(state_bytes(opt) for opt in self.optimizers),
            "embedding_optimizer_state_bytes": sum(state_bytes(opt, tables) for opt in self.optimizers),
        }

    # -- one step -------------------------------------------------------------------------
    def loss(self, xb: Tensor, yb: Tensor, whole: tuple[int, int] | None = None) -> Tensor:
        """The batch's loss. ``whole=(rows, offset)`` (data parallel): ``xb`` are the rows
        ``offset..`` of a global batch of ``rows`` rows; the loss is this rank's share of the
        global batch's loss (summed over ranks it is the one-process loss), and the widths are
        drawn for the whole global batch, as one process would."""
        model = self.model
        widths = None
        rows, offset = whole if whole is not None else (xb.shape[0], 0)
        if model.sample_dims:
            widths = sample_widths(rows, model.n_fields, model.embed_dim, self.generator, self.device, self.cfg.full_width_share)
            widths = widths[offset : offset + xb.shape[0]] if whole is not None else widths
        loss = self._data_loss(xb, yb, widths, rows, whole is not None)
        if widths is not None and self.cfg.sandwich:  # the full width trained in every step too
            loss = 0.5 * (loss + self._data_loss(xb, yb, None, rows, whole is not None))
        if self.cfg.alpha > 0:
            reg = model.embedder.regularizer()
            if reg is not None:
                loss = loss + self.cfg.alpha * reg / self.runtime.world_size
        return loss

    def _data_loss(self, xb: Tensor, yb: Tensor, widths: Tensor | None, rows: int, shard: bool) -> Tensor:
        """The weighted per-task BCE at ``widths`` (``None``: the full width); a data-parallel
        ``shard`` gives its share of the global batch of ``rows`` rows."""
        if not xb.shape[0]:
            return torch.zeros((), device=self.device)
        with autocast(self.device, self.cfg.amp):
            logits = self.forward(xb, widths)
            soft = self.teacher.targets(xb) if self.teacher is not None else None
        if not shard:
            return distilled_bce(logits.float(), yb, soft, self.cfg.distill, self.task_weights)
        return distilled_bce(logits.float(), yb, soft, self.cfg.distill, self.task_weights, reduction="sum") / rows

    def step(self, xb: Tensor, yb: Tensor, whole: tuple[int, int] | None = None) -> Tensor:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss = self.loss(xb, yb, whole)
        if loss.requires_grad:
            loss.backward()
        self.runtime.all_reduce_grads(self._dense_params, self._sparse_params)
        for opt_step in self._steps:
            opt_step()
        return loss.detach()

    # -- the loop ---------------------------------------------------------------------------
    def state(self, epoch: int, best: FitResult, bad_epochs: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "generator": self.generator.get_state(),
            "best_state": best.best_state,
            "best_epoch": best.best_epoch,
            "best_val_auc": best.best_val_auc,
            "best_score": best.best_score,
            # the global generators draw the dropout masks: saved so that a resumed run goes on exactly
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "history": best.history,
            "bad_epochs": bad_epochs,
            "best_record": best.best_record,
        }

    def fit(
        self,
        train: SplitTensors,
        val: SplitTensors,
        test: SplitTensors | None = None,
        resume: dict[str, Any] | None = None,
        checkpoint: Checkpointer | None = None,
        validate_start: bool = False,
        arch_val: SplitTensors | None = None,
    ) -> FitResult:
        """Train with early stopping on validation AUC. ``validate_start``: the starting weights
        (already trained, e.g. a supernet's) are a candidate too, kept as epoch 0 when no epoch
        beats them on validation. ``arch_val``: the batches of the architecture steps (used only
        when the embedder has architecture weights)."""
        cfg = self.cfg
        if len(train) == 0:
            raise TrainingError("the training split is empty")
        require_rankable(val)
        names = task_names(val.tasks, self.model.tasks)
        check_select(cfg.select, names)
        for suffix in selected_suffixes(cfg.select, names):
            name = suffix[1:]
            column = names.index(name) if name else 0  # the primary task: require_rankable's
            if column and bool((val.y[:, column] == val.y[0, column]).all()):
                raise TrainingError(
                    f"the validation split has one class only in task {name}, so its AUC, which --select {cfg.select} "
                    "uses to pick the best epoch, is undefined; use more data, a larger validation share (--split) "
                    "or --select primary"
                )

        def score(record: dict[str, Any]) -> float:
            return cfg.score(record, names)

        arch = self.model.embedder.arch_params()
        if arch_val is not None and arch:
            if len(arch_val) == 0:
                raise TrainingError("the split of the architecture steps is empty")
            lr = self.model.embedder.arch_lr
            self.arch = ArchStep(self.model, arch, arch_val, cfg.batch_size, self.device, lr, cfg.seed)
        best = FitResult(best_state=_cpu_copy(self.model.state_dict()), best_epoch=0, best_val_auc=-math.inf)
        start_epoch, bad_epochs = 1, 0
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            for opt, st in zip(self.optimizers, resume["optimizers"], strict=True):
                opt.load_state_dict(st)
            self.generator.set_state(resume["generator"])
            best = FitResult(resume["best_state"], resume["best_epoch"], resume["best_val_auc"], resume["history"])
            best.best_score = float(resume.get("best_score", resume["best_val_auc"]))
            if "torch_rng" in resume:
                torch.set_rng_state(resume["torch_rng"].cpu())
            if "cuda_rng" in resume and self.device.type == "cuda":
                torch.cuda.set_rng_state(resume["cuda_rng"].cpu(), self.device)
            best.best_record = dict(resume.get("best_record") or {})
            start_epoch, bad_epochs = resume["epoch"] + 1, resume["bad_epochs"]
            self.reporter.message(f"resuming after epoch {resume['epoch']} (best val AUC {best.best_val_auc:.5f})")
            if patience_exhausted(bad_epochs, cfg.patience):
                best.stopped_early = True
                self._test_kept(best, test, at_best=False)
                return best
        elif validate_start:
            start = {"epoch": 0, **self._validate(val, test)}
            best.best_val_auc, best.best_record, best.start_record = start["val_auc"], start, start
            best.best_score = score(start)
            self.reporter.message(f"epoch 0 (the starting weights) | val AUC {start['val_auc']:.5f}")
        rt = self.runtime
        guard = DivergenceGuard(self.model, self.device, self.lr_option, cfg.lr, rt.all_reduce_sum if rt.distributed else None)
        total_samples, total_seconds = 0, 0.0
        steps_per_epoch = -(-len(train) // cfg.batch_size)
        evals = cfg.evals_for(steps_per_epoch)
        mid_points = {round(i * steps_per_epoch / evals) for i in range(1, evals)} - {0, steps_per_epoch}

        def mid_epoch(epoch: int, step: int) -> bool:
            """Validate inside the epoch; keep the checkpoint when it is the best so far."""
            rec = {"epoch": epoch, "step": step, **self._validate(val, None)}
            gained = score(rec) > best.best_score
            if gained:
                best.best_state = _cpu_copy(self.model.state_dict())
                best.best_score = score(rec)
                best.best_epoch, best.best_val_auc, best.best_record = epoch, rec["val_auc"], rec
            self.reporter.message(
                f"epoch {epoch} step {step:,}/{steps_per_epoch:,} | val AUC {rec['val_auc']:.5f}" + (" *" if gained else "")
            )
            self.model.train()
            return gained

        at_best = False  # whether the model's weights are the kept checkpoint's
        for epoch in range(start_epoch, cfg.epochs + 1):
            for callback in self.callbacks:
                callback.on_epoch_start(epoch)
            record = self._epoch(epoch, train, guard, mid_points, mid_epoch)
            total_samples += len(train)
            total_seconds += record["train_seconds"]
            gained_inside = record.pop("gained_inside")
            search_done = record.pop("search_done", False)
            record.update(self._validate(val, None))
            best.history.append(record)
            improved = score(record) > best.best_score
            at_best = improved
            if improved:
                best.best_state = _cpu_copy(self.model.state_dict())
                best.best_score = score(record)
                best.best_epoch, best.best_val_auc, best.best_record = epoch, record["val_auc"], {}
            if improved or gained_inside:
                bad_epochs = 0
            else:
                bad_epochs += 1
                self.decay_lr()
            self.reporter.message(_summary(record, improved))
            stop = patience_exhausted(bad_epochs, cfg.patience) or search_done
            if cfg.reinit_embeddings_each_epoch and not stop and epoch < cfg.epochs:
                self.reinit_embeddings(epoch)
                at_best = False
            if checkpoint is not None:
                checkpoint(self.state(epoch, best, bad_epochs))
            if stop:
                best.stopped_early = True
                if search_done:
                    self.reporter.message("stop: the embedding search reached its goal")
                else:
                    self.reporter.message(f"early stop: no validation {cfg.monitor_name(names)} gain for {bad_epochs} epochs")
                break
        best.train_samples_per_s = total_samples / total_seconds if total_seconds else 0.0
        best.optimizer_state_bytes = self.optimizer_state_bytes()
        self._test_kept(best, test, at_best)
        return best

    def _test_kept(self, best: FitResult, test: SplitTensors | None, at_best: bool) -> None:
        """Add the kept checkpoint's test metrics to ``best.best_record``, evaluated once (the
        starting weights' record already has them). ``at_best``: the model holds the kept
        weights; otherwise they are loaded for the evaluation and the model's own put back."""
        if test is None or not len(test):
            return
        record = dict(best.best_record) or next((dict(r) for r in best.history if r["epoch"] == best.best_epoch), None)
        if record is None:  # no epoch was kept (no defined validation AUC)
            return
        if "test_auc" not in record:
            rt = self.runtime
            current = None if at_best else _cpu_copy(self.model.state_dict())
            if current is not None:
                self.model.load_state_dict(best.best_state)
            metrics = evaluate(self.model, test, self.device, self.cfg.eval_batch_size, amp=self.cfg.amp, runtime=rt)
            if current is not None:
                self.model.load_state_dict(current)
            record.update(rt.broadcast_object(_prefixed("test", metrics)))
        best.best_record = record

    def decay_lr(self) -> None:
        """``--lr-decay``: multiply the learning rates of the network and the tables (not the
        thresholds') by ``lr_decay``, not below :data:`MIN_DECAYED_LR`."""
        if self.cfg.lr_decay >= 1.0:
            return
        thresholds = {id(p) for p in self.model.embedder.threshold_params()}
        for opt in self.optimizers:
            for group in opt.param_groups:
                if not any(id(p) in thresholds for p in group["params"]):
                    group["lr"] = max(group["lr"] * self.cfg.lr_decay, MIN_DECAYED_LR)

    def metrics(self, val: SplitTensors, test: SplitTensors | None = None) -> dict[str, Any]:
        """The model's validation (and test) metrics now, as an epoch records them (the epochs
        themselves leave the test split out)."""
        return self._validate(val, test)

    def _validate(self, val: SplitTensors, test: SplitTensors | None) -> dict[str, Any]:
        cfg, rt = self.cfg, self.runtime
        rt.average_buffers(self.model)  # BatchNorm statistics: one model on every rank
        out = _prefixed("val", evaluate(self.model, val, self.device, cfg.eval_batch_size, amp=cfg.amp, runtime=rt))
        if test is not None and len(test):
            out.update(_prefixed("test", evaluate(self.model, test, self.device, cfg.eval_batch_size, amp=cfg.amp, runtime=rt)))
        out.update(self.model.embedder.stats())
        if self.epoch_stats is not None:
            out.update(self.epoch_stats(self.model))
        for callback in self.callbacks:
            out = callback.on_validation(out)
        return rt.broadcast_object(out)  # every rank decides on rank 0's numbers

    def _epoch(
        self,
        epoch: int,
        train: SplitTensors,
        guard: DivergenceGuard,
        mid_points: set[int] | None = None,
        mid_epoch: Callable[[int, int], bool] | None = None,
    ) -> dict[str, Any]:
        """One pass over ``train``; at the steps in ``mid_points`` ``mid_epoch(epoch, step)``
        validates (the result says whether the best checkpoint moved there)."""
        cfg = self.cfg
        self.model.train()
        task = self.reporter.task(f"epoch {epoch}/{cfg.epochs}", total=len(train), unit="sample")
        guard.start_epoch()
        steps = 0
        self._sync()
        started = time.perf_counter()
        gained_inside = False
        searched = False
        eval_seconds = 0.0
        rt = self.runtime
        n, start = len(train), 0
        for xb, yb in train.batches(cfg.batch_size, self.device, self.generator, shuffle=True, part=(rt.rank, rt.world_size)):
            rows = min(cfg.batch_size, n - start)
            start += rows
            if rt.distributed and rows < 2 * rt.world_size:
                break  # a last batch too small to give every rank two rows (BatchNorm needs two) is skipped
            whole = (rows, rt.part(rows)[0]) if rt.distributed else None
            guard.add(self.step(xb, yb) if whole is None else self.step(xb, yb, whole))
            if self.arch is not None:
                self.arch.step(self.loss)
            steps += 1
            task.advance(rows)
            if steps % cfg.check_every == 0:
                guard.check(epoch, steps)
                if self.model.embedder.search_done():
                    searched = True
                    break
            if mid_points and mid_epoch is not None and steps in mid_points:
                guard.check(epoch, steps)
                paused = time.perf_counter()
                gained_inside = mid_epoch(epoch, steps) or gained_inside
                eval_seconds += time.perf_counter() - paused
        guard.check(epoch, steps)
        self._sync()
        seconds = time.perf_counter() - started - eval_seconds
        task.close()
        out: dict[str, Any] = {"search_done": True} if searched or self.model.embedder.search_done() else {}
        return {
            **out,
            "gained_inside": gained_inside,
            "epoch": epoch,
            "train_loss": guard.epoch_mean(),
            "train_seconds": seconds,
            "train_samples_per_s": len(train) / seconds if seconds else 0.0,
        }

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(state).items()}


def _summary(record: dict[str, Any], improved: bool) -> str:
    parts = [
        f"epoch {record['epoch']}",
        f"loss {record['train_loss']:.5f}",
        f"val AUC {record['val_auc']:.5f}",
        f"val logloss {record['val_logloss']:.5f}",
    ]
    tasks = [k[len("val_auc_"):] for k in record if k.startswith("val_auc_") and k != "val_auc_ci"]
    if tasks:
        parts.append("val AUC " + " ".join(f"{t} {record[f'val_auc_{t}']:.4f}" for t in tasks))
    if "sparsity" in record:
        parts.append(f"sparsity {record['sparsity']:.4f}")
    parts.append(f"{record['train_samples_per_s']:,.0f} samples/s")
    return " | ".join(parts) + (" *" if improved else "")
