"""Model and training options shared by ``supernet`` and ``retrain``."""

from __future__ import annotations

from typing import Annotated

import typer

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
PatienceOpt = Annotated[int, typer.Option(help="Epochs without validation AUC gain before stopping.")]
EvalBatchOpt = Annotated[int, typer.Option(help="Evaluation batch size.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, shuffling and width sampling.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
AmpOpt = Annotated[str, typer.Option(help="Mixed precision: none | bf16.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]


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
    cfg = TrainConfig(**kwargs)  # type: ignore[arg-type]
    cfg.validate()
    return cfg
