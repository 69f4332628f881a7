"""Training hyperparameters as a plain, JSON-friendly dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from optembed.errors import ConfigError
from optembed.validation import check_non_negative, check_positive

AMP_MODES = ("none", "bf16")
THRESHOLD_OPTIMIZERS = ("sgd", "adam")
# Optimizer of the embedding tables (the shared table and DeepFM's per-feature linear weights);
# the dense network always uses Adam. See optembed.training.optimizers.
EMBEDDING_OPTIMIZERS = ("adam", "sparse-adam", "rowwise-adagrad")
# Frequency-adaptive learning rate of the embedding rows, lr_v = lr * scale(count_v); see
# optembed.training.freq_lr.
FREQ_LR_FORMS = ("none", "clip", "smooth")
# Keys added after the first release, with the value their absence means: left out of the stage
# parameters (hence the fingerprints) while they hold it, so artifacts trained before they existed
# keep their identity (a later default may differ: lr_decay and monitor did change).
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "embedding_optimizer": "adam",
    "embedding_lr": None,
    "freq_lr": "none",
    "freq_lr_c0": 100.0,
    "freq_lr_power": 0.5,
    "reinit_embeddings_each_epoch": False,
    "evals_per_epoch": 0,
    "embedding_l2": None,
    "lr_decay": 1.0,
    "monitor": "auc",
    "full_width_share": 0.0,
}
# What picks the kept checkpoint, drives early stopping and --lr-decay: the validation AUC, or the
# validation AUC minus the validation logloss (a gain in AUC that costs as much logloss is no gain).
MONITORS = ("auc", "auc-logloss")
MIN_DECAYED_LR = 1e-6  # --lr-decay never takes a learning rate below this
# Auto validation frequency: one validation per this many optimizer steps, at most
# MAX_AUTO_EVALS per epoch (and at least one, at the epoch's end).
AUTO_EVAL_STEPS = 2000
MAX_AUTO_EVALS = 10


@dataclass
class TrainConfig:
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
    eval_batch_size: int = 32768
    seed: int = 2022
    amp: str = "none"
    compile: bool = False
    check_every: int = 50  # steps between divergence checks (each one syncs the device)
    embedding_optimizer: str = "adam"  # adam (dense, today's behaviour) | sparse-adam | rowwise-adagrad
    embedding_lr: float | None = None  # learning rate of the embedding tables; None = lr
    freq_lr: str = "none"  # none | clip: (c0 / max(c0, n))^p | smooth: (1 + n / c0)^-p
    freq_lr_c0: float = 100.0
    freq_lr_power: float = 0.5
    reinit_embeddings_each_epoch: bool = False  # re-draw the embedding tables after every epoch
    evals_per_epoch: int = 0  # validations per epoch (the last at its end); 0: auto, one per ~2,000 steps
    # L2 regulariser of the embedding tables, (embedding_l2 / 2) * ||E||^2 added to each batch's mean loss: with
    # dense Adam over the whole table (every row, every step, as FuxiCTR's embedding_regularizer); with a sparse
    # optimizer on the rows the batch reads. None: auto, sized from the training rows by the stage
    # (optembed.training.recipe); a Trainer given None without a stage uses weight_decay.
    embedding_l2: float | None = None
    # Learning-rate decay on a plateau: every epoch that ends without a gain of the monitored score multiplies the learning
    # rates of the network and the tables by this factor (not below MIN_DECAYED_LR); 1: off.
    lr_decay: float = 0.1
    full_width_share: float = 0.0  # supernet: expected share of samples trained at full width in every field
    monitor: str = "auc-logloss"  # auc | auc-logloss: the validation score that selects, stops early and decays

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
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"--lr-decay must be in (0, 1] (1: off), got {self.lr_decay:g}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"unknown --monitor '{self.monitor}'; choose {' | '.join(MONITORS)}")
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

    def score(self, record: dict[str, Any]) -> float:
        """The validation score of a metrics record under ``monitor`` (higher is better)."""
        if self.monitor == "auc-logloss":
            return float(record["val_auc"]) - float(record["val_logloss"])
        return float(record["val_auc"])

    @property
    def monitor_name(self) -> str:
        """``monitor`` as the progress lines name it."""
        return "AUC - logloss" if self.monitor == "auc-logloss" else "AUC"

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
        """:meth:`to_dict` without the later options that hold their defaults (or do nothing:
        the ``freq_lr`` constants when ``freq_lr`` is ``none``), for stable fingerprints."""
        params = self.to_dict()
        if params["freq_lr"] == "none":
            params.pop("freq_lr_c0")
            params.pop("freq_lr_power")
        for key, default in OPTIONAL_DEFAULTS.items():
            if key in params and params[key] == default:
                params.pop(key)
        return params
