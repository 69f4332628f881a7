"""Training hyperparameters as a plain, JSON-friendly dataclass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from optembed.errors import ConfigError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params, since_default
from optembed.training.selection import check_select, selection_name, selection_score
from optembed.validation import check_non_negative, check_positive

AMP_MODES = ("none", "bf16")
THRESHOLD_OPTIMIZERS = ("sgd", "adam")
# Optimizer of the embedding tables (the shared table and DeepFM's per-feature linear weights);
# the dense network always uses Adam. See optembed.training.optimizers.
EMBEDDING_OPTIMIZERS = ("adam", "sparse-adam", "rowwise-adagrad")
# Frequency-adaptive learning rate of the embedding rows, lr_v = lr * scale(count_v); see
# optembed.training.freq_lr.
FREQ_LR_FORMS = ("none", "clip", "smooth")
# What picks the kept checkpoint, drives early stopping and --lr-decay: the validation AUC, or the
# validation AUC minus the validation logloss (a gain in AUC that costs as much logloss is no gain).
MONITORS = ("auc", "auc-logloss")
MIN_DECAYED_LR = 1e-6  # --lr-decay never takes a learning rate below this
# Auto validation frequency: one validation per this many optimizer steps, at most
# MAX_AUTO_EVALS per epoch (and at least one, at the epoch's end).
AUTO_EVAL_STEPS = 2000
MAX_AUTO_EVALS = 10
DEFAULT_DISTILL = 0.5  # the teacher's weight when one is given without a weight (--teacher, run's distillation)


# Metadata of the options that do nothing while --freq-lr is none (left out of the fingerprint then).
_FREQ_LR_CONSTANT = {"inert_when": {"freq_lr": ("none",)}}


@dataclass
class TrainConfig:
    """The training options. Every field is fingerprinted (:meth:`to_params`) except those marked
    in their metadata: the speed knobs; and the options added after artifacts had been made
    without them, left out while they hold the value their absence meant (for ``lr_decay`` and
    ``monitor`` not today's default: the first artifacts trained without a decay, on the AUC)."""

    epochs: int = 50  # at most; early stopping ends most runs far sooner
    batch_size: int = 0  # 0: auto, sized from the training rows by the stage (optembed.training.recipe)
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 term on the dense network
    alpha: float = 1e-4  # weight of the threshold regulariser sum(exp(-t)) (reference: 1e-6..1e-4)
    threshold_lr: float = 1e-4  # reference: ~1e-4
    # Plain SGD as in the reference: Adam would turn the tiny regulariser gradient into full-size
    # steps and empty informative fields; rows are pruned by the accuracy-bounded search instead.
    threshold_optimizer: str = "sgd"
    patience: int = 2  # stop after this many epochs in a row without a gain of the monitored score; 0: never
    eval_batch_size: int = field(default=32768, metadata=UNFINGERPRINTED)
    seed: int = 2022
    amp: str = "none"
    compile: bool = field(default=False, metadata=UNFINGERPRINTED)
    # steps between divergence checks (each one syncs the device)
    check_every: int = field(default=50, metadata=UNFINGERPRINTED)
    # adam (dense, today's behaviour) | sparse-adam | rowwise-adagrad
    embedding_optimizer: str = field(default="adam", metadata=since_default("adam"))
    # learning rate of the embedding tables; None = lr
    embedding_lr: float | None = field(default=None, metadata=since_default(None))
    # none | clip: (c0 / max(c0, n))^p | smooth: (1 + n / c0)^-p
    freq_lr: str = field(default="none", metadata=since_default("none"))
    freq_lr_c0: float = field(default=100.0, metadata={**since_default(100.0), **_FREQ_LR_CONSTANT})
    freq_lr_power: float = field(default=0.5, metadata={**since_default(0.5), **_FREQ_LR_CONSTANT})
    # re-draw the embedding tables after every epoch
    reinit_embeddings_each_epoch: bool = field(default=False, metadata=since_default(False))
    # validations per epoch (the last at its end); 0: auto, one per ~2,000 steps
    evals_per_epoch: int = field(default=0, metadata=since_default(0))
    # L2 regulariser of the embedding tables, (embedding_l2 / 2) * ||E||^2 added to each batch's mean loss: with
    # dense Adam over the whole table (every row, every step, as FuxiCTR's embedding_regularizer); with a sparse
    # optimizer on the rows the batch reads. None: auto, sized from the training rows by the stage
    # (optembed.training.recipe); a Trainer given None without a stage uses weight_decay.
    embedding_l2: float | None = field(default=None, metadata=since_default(None))
    # Learning-rate decay on a plateau: every epoch that ends without a gain of the monitored score multiplies the learning
    # rates of the network and the tables by this factor (not below MIN_DECAYED_LR); 1: off (what its absence means).
    lr_decay: float = field(default=0.1, metadata=since_default(1.0))
    # auc | auc-logloss: the validation score that selects, stops early and decays (its absence means auc)
    monitor: str = field(default="auc-logloss", metadata=since_default("auc"))
    # supernet: expected share of samples trained at the full width in every field (0: the paper's uniform widths)
    full_width_share: float = field(default=0.0, metadata=since_default(0.0))
    # supernet: every step also trains the full width on the same batch (the loss the mean of the two)
    sandwich: bool = field(default=False, metadata=since_default(False))
    # several tasks: the weight of each task's BCE in the loss (their weighted sum); empty: one each
    task_weights: tuple[float, ...] = field(default=(), metadata=since_default(()))
    # several tasks: the task whose validation score selects, stops and decays (optembed.training.selection):
    # primary, mean (of every task's) or a task's name
    select: str = field(default="primary", metadata=since_default("primary"))
    # with a teacher (retrain --teacher): the weight of its probabilities as soft labels, the labels'
    # weight 1 - distill (optembed.training.distill); 0: no distillation
    distill: float = field(default=0.0, metadata=since_default(0.0))

    def __post_init__(self) -> None:
        self.task_weights = tuple(self.task_weights)  # a JSON list reads back as the tuple

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        if self.batch_size < 0 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be positive (--batch-size 0: auto)")
        check_positive("--lr", self.lr)
        check_non_negative("--threshold-lr", self.threshold_lr)
        check_non_negative("--weight-decay", self.weight_decay)
        check_non_negative("--alpha", self.alpha)
        check_positive("--embedding-lr", self.embedding_lr, optional=True)
        if self.embedding_l2 is not None:
            check_non_negative("--embedding-l2", self.embedding_l2)
        check_positive("--freq-lr-c0", self.freq_lr_c0)
        check_non_negative("--freq-lr-power", self.freq_lr_power)
        if not 0.0 <= self.full_width_share <= 1.0:
            raise ConfigError(f"--full-width-share must be a fraction in [0, 1], got {self.full_width_share:g}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"--distill must be a weight in [0, 1] (0: off), got {self.distill:g}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"--lr-decay must be in (0, 1] (1: off), got {self.lr_decay:g}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"unknown --monitor '{self.monitor}'; choose {' | '.join(MONITORS)}")
        weights = tuple(self.task_weights)
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0 or w == float("inf") for w in weights):
            raise ConfigError(f"--task-weights must be finite non-negative numbers, got {list(weights)}")
        if weights and not any(w > 0 for w in weights):
            raise ConfigError("--task-weights needs at least one positive weight")
        check_select(self.select, ())
        if self.evals_per_epoch < 0:
            raise ConfigError(f"--evals-per-epoch must be 0 (auto) or positive, got {self.evals_per_epoch}")
        if self.patience < 0:
            raise ConfigError("--patience must not be negative (0: never stop early)")
        if self.check_every < 1:
            raise ConfigError(f"check_every must be at least 1, got {self.check_every}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown --amp '{self.amp}'; choose {' or '.join(AMP_MODES)}")
        if self.threshold_optimizer not in THRESHOLD_OPTIMIZERS:
            raise ConfigError(f"unknown --threshold-optimizer '{self.threshold_optimizer}'")
        if self.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
            raise ConfigError(
                f"unknown --embedding-optimizer '{self.embedding_optimizer}'; choose {' | '.join(EMBEDDING_OPTIMIZERS)}"
            )
        if self.freq_lr not in FREQ_LR_FORMS:
            raise ConfigError(f"unknown --freq-lr '{self.freq_lr}'; choose {' | '.join(FREQ_LR_FORMS)}")

    def evals_for(self, steps_per_epoch: int) -> int:
        """Validations per epoch of ``steps_per_epoch`` optimizer steps (at least 1, at most one per step)."""
        if self.evals_per_epoch > 0:
            wanted = self.evals_per_epoch
        else:
            wanted = min(MAX_AUTO_EVALS, -(-steps_per_epoch // AUTO_EVAL_STEPS))
        return max(1, min(wanted, steps_per_epoch))

    def score(self, record: dict[str, Any], tasks: Sequence[str] = ()) -> float:
        """The validation score of a metrics record under ``monitor`` and ``select`` (higher is
        better); ``tasks``: the data's task names, primary first."""
        return selection_score(record, self.monitor, self.select, tasks)

    def monitor_name(self, tasks: Sequence[str] = ()) -> str:
        """The score as the progress lines name it."""
        return selection_name(self.monitor, self.select, tasks)

    @property
    def table_l2(self) -> float:
        """The L2 weight of the embedding tables (``embedding_l2``; unresolved, ``weight_decay``)."""
        return self.weight_decay if self.embedding_l2 is None else self.embedding_l2

    @property
    def sparse_embeddings(self) -> bool:
        """Whether the embedding tables produce sparse gradients (every optimizer but dense Adam)."""
        return self.embedding_optimizer != "adam"

    def warnings(self) -> list[str]:
        """One line per accepted but questionable combination (shown before training)."""
        out = []
        if self.embedding_optimizer == "sparse-adam" and self.embedding_l2:
            out.append(
                f"warning: sparse-adam applies no L2 to the embedding rows; "
                f"--embedding-l2 {self.table_l2:g} is ignored (--weight-decay applies to the dense network)"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_params(self) -> dict[str, Any]:
        """The options that change the result (:func:`optembed.fingerprint.fingerprint_params`):
        without the speed knobs, the later options while they hold the value their absence
        meant, the ``freq_lr`` constants while ``freq_lr`` is ``none``."""
        return fingerprint_params(self)
