"""``optembed run``: the whole chain from one TOML configuration (or flags), reusing cached stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ConfigError
from optembed_cli import ui
from optembed_cli.commands import evaluate as evaluate_cmd
from optembed_cli.options import ArtifactsOpt, JsonOpt, open_store
from optembed_cli.training_options import parse_dims
from optembed.models.config import ModelConfig
from pipelines import chain


@ui.handle_errors
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML configuration (see README).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(help="Raw data file (instead of a configuration).")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="Format of --data.")] = "criteo",
    model: Annotated[str, typer.Option("--model", "-m", help="Backbone for --data.")] = "deepfm",
    embed_dim: Annotated[int, typer.Option(help="Embedding width for --data.")] = 64,
    mlp: Annotated[str, typer.Option("--mlp", help="MLP sizes for --data.")] = "1024,512,256",
    epochs: Annotated[int, typer.Option(help="Epochs of supernet and retrain for --data.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Training batch size for --data.")] = 2048,
    population: Annotated[int, typer.Option(help="Search population for --data.")] = 40,
    generations: Annotated[int, typer.Option(help="Search generations for --data.")] = 30,
    variants: Annotated[str, typer.Option(help="Comma-separated variants.")] = ",".join(chain.VARIANTS),
    compress: Annotated[
        str, typer.Option(help="Comma-separated re-trained variants to compress too (default options) for --data.")
    ] = "",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (overrides the configuration).")] = "",
    plot: Annotated[bool, typer.Option("--plot", help="Write evaluation plots.")] = False,
    artifacts: ArtifactsOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run preprocess -> supernet -> search -> retrain (-> compress) -> evaluate and compare the variants."""
    if config is not None:
        cfg = chain.load_config(config)
    elif data is not None:
        cfg = chain.ChainConfig(
            data=data,
            preprocess=PreprocessConfig(fmt=format),
            model=ModelConfig(model, embed_dim=embed_dim, mlp_dims=parse_dims(mlp)),
            supernet=chain.TrainConfig(epochs=epochs, batch_size=batch_size),
            retrain=chain.TrainConfig(epochs=epochs, batch_size=batch_size),
            search={"population": population, "generations": generations, "topk": min(15, max(2, population // 2))},
            variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
            compress={"variants": [v.strip() for v in compress.split(",") if v.strip()]} if compress.strip() else {},
        )
    else:
        raise ConfigError("give a configuration file or --data FILE")
    if device:
        cfg.device = device
    cfg.plot = cfg.plot or plot
    done = run_chain(cfg, artifacts, json)
    if json:
        ui.announce(done["evaluate"], True)


def run_chain(cfg: chain.ChainConfig, artifacts: Path | None, quiet: bool) -> dict:
    store = open_store(artifacts)
    for line in cfg.warnings():
        ui.err.print(Text(line), soft_wrap=True)
    with ui.reporter(quiet=quiet) as rep:
        done = chain.run(cfg, store, rep)
    for manifest in done.values():
        ui.notes(manifest)
    if not quiet:
        evaluate_cmd.render(done["evaluate"])
    return done
