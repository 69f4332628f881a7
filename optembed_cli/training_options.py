"""Model and training options shared by ``supernet`` and ``retrain``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from optembed_cli import ui
from optembed.errors import ConfigError
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Backbone: fnn | deepfm | dcn | ipnn.")]
EmbedDimOpt = Annotated[int, typer.Option(help="Full embedding width D.")]
MlpOpt = Annotated[str, typer.Option("--mlp", help="Hidden layer sizes, comma-separated.")]
DropoutOpt = Annotated[float, typer.Option(help="MLP dropout.")]
BatchNormOpt = Annotated[bool, typer.Option("--batch-norm/--no-batch-norm", help="BatchNorm in the MLP.")]
CrossLayersOpt = Annotated[int, typer.Option(help="DCN cross layers.")]
NormOpt = Annotated[str, typer.Option(help="Row norm for pruning: l1 | l2.")]
EpochsOpt = Annotated[int, typer.Option(help="Maximum epochs.")]
BatchOpt = Annotated[int, typer.Option(help="Training batch size.")]
LrOpt = Annotated[float, typer.Option(help="Adam learning rate (embeddings and network).")]
WdOpt = Annotated[float, typer.Option(help="Adam weight decay.")]
AlphaOpt = Annotated[float, typer.Option(help="Weight of the threshold regulariser alpha * sum(exp(-t)).")]
TLrOpt = Annotated[float, typer.Option(help="Learning rate of the pruning thresholds.")]
TOptOpt = Annotated[str, typer.Option(help="Optimizer of the thresholds: adam | sgd.")]
PatienceOpt = Annotated[
    int,
    typer.Option(
        help="Stop after this many epochs in a row without a validation AUC gain (0: never stop early); "
        "the best epoch is kept either way."
    ),
]
EvalBatchOpt = Annotated[int, typer.Option(help="Evaluation batch size.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, shuffling and width sampling.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
AmpOpt = Annotated[str, typer.Option(help="Mixed precision: none | bf16.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
EmbOptimizerOpt = Annotated[
    str,
    typer.Option(
        help="Optimizer of the embedding tables: adam (dense, with the network) | sparse-adam (batch rows only; "
        "no weight decay) | rowwise-adagrad (batch rows only; one accumulator per row). The network keeps Adam."
    ),
]
EmbLrOpt = Annotated[float | None, typer.Option(help="Learning rate of the embedding tables (default: --lr).")]
FreqLrOpt = Annotated[
    str,
    typer.Option(
        help="Frequency-adaptive embedding learning rate from the preprocess counts n: none | "
        "clip: lr * (c0 / max(c0, n))^p | smooth: lr * (1 + n / c0)^-p."
    ),
]
FreqC0Opt = Annotated[float, typer.Option(help="--freq-lr constant c0 (a count).")]
FreqPowerOpt = Annotated[float, typer.Option(help="--freq-lr exponent p.")]
EvalsOpt = Annotated[
    int,
    typer.Option(
        help="Validations per epoch, the last at its end; the best one's checkpoint is kept. "
        "0: auto, one per ~2,000 optimizer steps (at most 10), so long epochs are judged more often.",
    ),
]
ReinitOpt = Annotated[
    bool,
    typer.Option(
        "--reinit-embeddings-each-epoch",
        help="Re-draw the embedding tables after every epoch (the network and thresholds are kept).",
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
    model: str, embed_dim: int, mlp: str, dropout: float, batch_norm: bool, cross_layers: int, norm: str
) -> ModelConfig:
    return ModelConfig(
        name=model.lower(),
        embed_dim=embed_dim,
        mlp_dims=parse_dims(mlp),
        dropout=dropout,
        batch_norm=batch_norm,
        cross_layers=cross_layers,
        norm=norm,
    )


def train_config(**kwargs: object) -> TrainConfig:
    """Build and validate the training options; questionable combinations get one warning line
    each on stderr (also with ``--json``)."""
    cfg = TrainConfig(**kwargs)  # type: ignore[arg-type]
    cfg.validate()
    for line in cfg.warnings():
        ui.err.print(Text(line), soft_wrap=True)
    return cfg
