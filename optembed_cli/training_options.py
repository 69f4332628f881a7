"""Model and training options, declared once for ``supernet``, ``retrain``, ``baseline`` and ``run``.

The groups at the end (:data:`MODEL_OPTIONS`, :data:`TRAINING_OPTIONS`, ...) take their defaults
from the configuration dataclasses (:class:`~optembed.models.config.ModelConfig`,
:class:`~optembed.training.config.TrainConfig`); see :mod:`optembed_cli.option_groups`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.text import Text

from optembed.data.stream import DEFAULT_BUFFER_ROWS
from optembed.errors import ConfigError
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from optembed_cli import ui
from optembed_cli.core_choices import Model, Norm
from optembed_cli.option_groups import OptionGroup, group
from optembed_cli.options import (
    DEVICE, EMBEDDING, MODEL, PRUNING, TABLES, TRAINING, Amp, DeviceOpt, EmbeddingOptimizer, FreqLr, Monitor, ThresholdOptimizer,
)

__all__ = ["DeviceOpt"]  # re-exported for the commands

ModelOpt = Annotated[
    Model, typer.Option("--model", "-m", help="Backbone.", case_sensitive=False, rich_help_panel=MODEL)
]
EmbedDimOpt = Annotated[int, typer.Option(help="Full embedding width D.", rich_help_panel=MODEL)]
MlpOpt = Annotated[str, typer.Option("--mlp", help="Hidden layer sizes, comma-separated.", metavar="SIZES", rich_help_panel=MODEL)]
DropoutOpt = Annotated[float, typer.Option(help="MLP dropout.", rich_help_panel=MODEL)]
BatchNormOpt = Annotated[
    bool, typer.Option("--batch-norm/--no-batch-norm", help="BatchNorm in the MLP.", rich_help_panel=MODEL)
]
CrossLayersOpt = Annotated[int, typer.Option(help="DCN cross layers.", rich_help_panel=MODEL)]
NormOpt = Annotated[Norm, typer.Option(help="Row norm for pruning.", rich_help_panel=PRUNING)]
EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs.", rich_help_panel=TRAINING)]
BatchOpt = Annotated[
    int,
    typer.Option(
        help="Training batch size; 0: auto, the largest power of two up to 4,096 that gives an epoch 50+ "
        "optimizer steps.",
        rich_help_panel=TRAINING,
    ),
]
LrOpt = Annotated[float, typer.Option(help="Adam learning rate (embeddings and network).", rich_help_panel=TRAINING)]
WdOpt = Annotated[float, typer.Option(help="Adam weight decay of the dense network.", rich_help_panel=TRAINING)]
LrDecayOpt = Annotated[
    float,
    typer.Option(
        "--lr-decay",
        help="Multiply the learning rates by this factor after every epoch without a gain of the --monitor score (1: off).",
        rich_help_panel=TRAINING,
    ),
]
MonitorOpt = Annotated[
    Monitor,
    typer.Option(
        "--monitor",
        help="The validation score that keeps the best checkpoint, stops early and decays the learning rate: auc, "
        "or auc-logloss (an AUC gain that costs as much logloss is no gain).",
        rich_help_panel=TRAINING,
    ),
]
EmbL2Opt = Annotated[
    float | None,
    typer.Option(
        "--embedding-l2",
        help="L2 regulariser of the embedding tables, (value / 2) * ||E||^2 added to each batch's loss: over the "
        "whole table with adam, over the batch's rows with a sparse optimizer (default: auto, 1.0 at 10k training "
        "rows or fewer, 0.05 at 0.2M, down to 1e-5 at 36M, as FuxiCTR's published recipes).",
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]
AlphaOpt = Annotated[
    float, typer.Option(help="Weight of the threshold regulariser alpha * sum(exp(-t)).", rich_help_panel=PRUNING)
]
TLrOpt = Annotated[float, typer.Option(help="Learning rate of the pruning thresholds.", rich_help_panel=PRUNING)]
TOptOpt = Annotated[ThresholdOptimizer, typer.Option(help="Optimizer of the thresholds.", rich_help_panel=PRUNING)]
PatienceOpt = Annotated[
    int,
    typer.Option(
        help="Stop after this many epochs in a row without a gain of the --monitor score (0: never stop early); "
        "the best epoch is kept either way.",
        rich_help_panel=TRAINING,
    ),
]
FullWidthOpt = Annotated[
    float,
    typer.Option(
        help="Expected share of samples trained at the full width in every field (0: the paper's uniform widths).",
        rich_help_panel=PRUNING,
    ),
]
SandwichOpt = Annotated[
    bool,
    typer.Option(
        "--sandwich",
        help="Train the full width on every batch too, beside the sampled widths (the loss their mean).",
        rich_help_panel=PRUNING,
    ),
]
TaskWeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--task-weights",
        help="Several tasks: the weight of each task's loss, a comma list in the labels' order (default: 1 each).",
        metavar="W,W,...",
        show_default=False,
        rich_help_panel=TRAINING,
    ),
]
SelectOpt = Annotated[
    str,
    typer.Option(
        "--select",
        help="Several tasks: whose validation --monitor score keeps the best checkpoint, stops early and decays: "
        "primary (the first label), mean (of every task's) or a task's name.",
        metavar="primary|mean|TASK",
        rich_help_panel=TRAINING,
    ),
]
EvalBatchOpt = Annotated[int, typer.Option(help="Evaluation batch size.", rich_help_panel=TRAINING)]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, shuffling and width sampling.", rich_help_panel=TRAINING)]
AmpOpt = Annotated[Amp, typer.Option(help="Mixed precision.", rich_help_panel=DEVICE)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=DEVICE)]
EmbOptimizerOpt = Annotated[
    EmbeddingOptimizer,
    typer.Option(
        help="Optimizer of the embedding tables: adam (dense, with the network) | sparse-adam (batch rows only; "
        "no weight decay) | rowwise-adagrad (batch rows only; one accumulator per row). The network keeps Adam.",
        rich_help_panel=EMBEDDING,
    ),
]
EmbLrOpt = Annotated[
    float | None,
    typer.Option(help="Learning rate of the embedding tables (default: --lr).", show_default=False, rich_help_panel=EMBEDDING),
]
FreqLrOpt = Annotated[
    FreqLr,
    typer.Option(
        help="Frequency-adaptive embedding learning rate from the preprocess counts n: none | "
        "clip: lr * (c0 / max(c0, n))^p | smooth: lr * (1 + n / c0)^-p.",
        rich_help_panel=EMBEDDING,
    ),
]
FreqC0Opt = Annotated[float, typer.Option(help="--freq-lr constant c0 (a count).", rich_help_panel=EMBEDDING)]
FreqPowerOpt = Annotated[float, typer.Option(help="--freq-lr exponent p.", rich_help_panel=EMBEDDING)]
EvalsOpt = Annotated[
    int,
    typer.Option(
        help="Validations per epoch, the last at its end; the best one's checkpoint is kept. "
        "0: auto, one per ~2,000 optimizer steps (at most 10), so long epochs are judged more often.",
        rich_help_panel=TRAINING,
    ),
]
ReinitOpt = Annotated[
    bool,
    typer.Option(
        "--reinit-embeddings-each-epoch",
        help="Re-draw the embedding tables after every epoch (the network and thresholds are kept).",
        rich_help_panel=TABLES,
    ),
]


def parse_dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--mlp must be comma-separated integers, got '{text}'") from None
    if not dims:
        raise ConfigError("--mlp needs at least one layer")
    return dims


def model_config(
    model: str, embed_dim: int, mlp: str, dropout: float, batch_norm: bool, cross_layers: int, norm: str = "l1"
) -> ModelConfig:
    return ModelConfig(
        name=str(model).lower(),
        embed_dim=embed_dim,
        mlp_dims=parse_dims(mlp),
        dropout=dropout,
        batch_norm=batch_norm,
        cross_layers=cross_layers,
        norm=str(norm),
    )


class ModelDefaults:
    """The core's model defaults in the form the options take (the MLP as a comma list)."""

    def __init__(self) -> None:
        base = ModelConfig("deepfm")
        self.model = base.name
        self.embed_dim = base.embed_dim
        self.mlp = ",".join(map(str, base.mlp_dims))
        self.dropout = base.dropout
        self.batch_norm = base.batch_norm
        self.cross_layers = base.cross_layers
        self.norm = base.norm


def parse_task_weights(text: str | None) -> tuple[float, ...]:
    """``--task-weights 1,0.5`` as a tuple of floats (empty for none)."""
    if text is None or not text.strip():
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--task-weights must be comma-separated numbers, got '{text}'") from None


def train_config(**kwargs: object) -> TrainConfig:
    """Build and validate the training options; questionable combinations get one warning line
    each on stderr (also with ``--json``)."""
    plain = {k: str(v) if isinstance(v, StrEnum) else v for k, v in kwargs.items()}
    if "task_weights" in plain:
        plain["task_weights"] = parse_task_weights(plain["task_weights"])  # type: ignore[arg-type]
    cfg = TrainConfig(**plain)  # type: ignore[arg-type]
    cfg.validate()
    for line in cfg.warnings():
        ui.err.print(Text(line), soft_wrap=True)
    return cfg
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")]
NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc",
        help="Data-parallel processes (torch.distributed: gloo on the CPU, NCCL on GPUs, one GPU each); the same "
        "global --batch-size split over them. Same as 'torchrun --standalone --nproc_per_node N -m optembed_cli ...'.",
        min=1,
        rich_help_panel=DEVICE,
    ),
]
StreamOpt = Annotated[
    bool,
    typer.Option(
        "--stream",
        help="Read the splits from Parquet in chunks of row groups instead of loading them (automatic for a split "
        "that does not fit in memory).",
        rich_help_panel=DEVICE,
    ),
]
ShuffleBufferOpt = Annotated[
    int,
    typer.Option(
        "--shuffle-buffer",
        help="Rows per streamed chunk, the shuffle buffer (row groups are shuffled, then the rows inside a chunk).",
        min=1,
        metavar="ROWS",
        rich_help_panel=DEVICE,
    ),
]


class _TaskDefaults:
    """The defaults of the task options in the form they take (the weights as a comma list)."""

    task_weights: str | None = None
    select = TrainConfig().select


class _Runtime:
    """The defaults of the run options that are no configuration field."""

    nproc = 1
    stream = False
    shuffle_buffer = DEFAULT_BUFFER_ROWS
    resume = False


MODEL_OPTIONS = group(
    ModelDefaults(), model=ModelOpt, embed_dim=EmbedDimOpt, mlp=MlpOpt, dropout=DropoutOpt, batch_norm=BatchNormOpt,
    cross_layers=CrossLayersOpt,
)
TRAINING_OPTIONS = group(
    TrainConfig(), epochs=EpochsOpt, batch_size=BatchOpt, lr=LrOpt, weight_decay=WdOpt, embedding_l2=EmbL2Opt,
    lr_decay=LrDecayOpt, monitor=MonitorOpt, patience=PatienceOpt, eval_batch_size=EvalBatchOpt, seed=SeedOpt,
    amp=AmpOpt, compile=CompileOpt, embedding_optimizer=EmbOptimizerOpt, embedding_lr=EmbLrOpt,
    evals_per_epoch=EvalsOpt,
)
TRAINING_OPTIONS = OptionGroup(
    TRAINING_OPTIONS.options + group(_TaskDefaults(), task_weights=TaskWeightsOpt, select=SelectOpt).options
)
# the frequency-adaptive rate and re-drawn tables (supernet and retrain, not the baselines)
EMBEDDING_OPTIONS = group(
    TrainConfig(), freq_lr=FreqLrOpt, freq_lr_c0=FreqC0Opt, freq_lr_power=FreqPowerOpt,
    reinit_embeddings_each_epoch=ReinitOpt,
)
PRUNING_OPTIONS = group(
    TrainConfig(), alpha=AlphaOpt, threshold_lr=TLrOpt, threshold_optimizer=TOptOpt, full_width_share=FullWidthOpt,
    sandwich=SandwichOpt,
)
RUN_OPTIONS = group(_Runtime(), nproc=NprocOpt, stream=StreamOpt, shuffle_buffer=ShuffleBufferOpt, resume=ResumeOpt)
