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
from optembed_cli.options import (
    DEVICE, INPUT, MODEL, OUTPUT, SEARCH, TRAINING, ArtifactsOpt, Format, JsonOpt, Model, complete_device, open_store,
)
from optembed_cli.training_options import parse_dims
from optembed.models.config import ModelConfig
from pipelines import chain
from pipelines.store import Manifest

_MODEL = ModelConfig("deepfm")  # the defaults of --data runs are the core's
_TRAIN = chain.TrainConfig()


@ui.handle_errors
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML configuration (see README).", show_default=False)] = None,
    data: Annotated[
        Path | None, typer.Option(help="Raw data file (instead of a configuration).", show_default=False, rich_help_panel=INPUT)
    ] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Format of --data.", rich_help_panel=INPUT)] = "criteo",
    model: Annotated[
        Model, typer.Option("--model", "-m", help="Backbone for --data.", case_sensitive=False, rich_help_panel=MODEL)
    ] = "deepfm",
    embed_dim: Annotated[int, typer.Option(help="Embedding width for --data.", rich_help_panel=MODEL)] = _MODEL.embed_dim,
    mlp: Annotated[
        str, typer.Option("--mlp", help="MLP sizes for --data.", metavar="SIZES", rich_help_panel=MODEL)
    ] = ",".join(map(str, _MODEL.mlp_dims)),
    epochs: Annotated[
        int, typer.Option(help="Most epochs of supernet and retrain for --data.", rich_help_panel=TRAINING)
    ] = _TRAIN.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Training batch size for --data (0: auto, from the training rows).", rich_help_panel=TRAINING)
    ] = _TRAIN.batch_size,
    population: Annotated[int, typer.Option(help="Search population for --data.", rich_help_panel=SEARCH)] = 40,
    generations: Annotated[int, typer.Option(help="Search generations for --data.", rich_help_panel=SEARCH)] = 30,
    variants: Annotated[
        str, typer.Option(help=f"Comma-separated variants, from: {', '.join(chain.ALL_VARIANTS)}.", metavar="NAMES")
    ] = ",".join(chain.VARIANTS),
    compress: Annotated[
        str, typer.Option(help="Comma-separated re-trained variants to compress too (default options) for --data.", metavar="VARIANTS")
    ] = "",
    device: Annotated[
        str,
        typer.Option(
            help="auto | cpu | cuda (overrides the configuration).", show_default=False, metavar="DEVICE",
            autocompletion=complete_device, rich_help_panel=DEVICE,
        ),
    ] = "",
    plot: Annotated[bool, typer.Option("--plot", help="Write evaluation plots.", rich_help_panel=OUTPUT)] = False,
    latency: Annotated[
        bool | None,
        typer.Option(
            "--latency/--no-latency",
            help="Measure inference latency (default: the configuration's [run] latency, else on for a GPU only).",
            show_default=False,
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    artifacts: ArtifactsOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run preprocess -> supernet -> search -> retrain (-> compress) -> evaluate and compare the variants.

    The plan (stage k of N) and an estimate of the time left are printed as it goes; finished
    stages are reused, so an interrupted run continues where it stopped.

    Examples:

      optembed run experiment.toml

      optembed run --data train.txt --epochs 4 --population 20 --generations 10 --json > result.json
    """
    if config is not None:
        cfg = chain.load_config(config)
    elif data is not None:
        cfg = chain.ChainConfig(
            data=data,
            preprocess=PreprocessConfig(fmt=str(format)),
            model=ModelConfig(str(model).lower(), embed_dim=embed_dim, mlp_dims=parse_dims(mlp)),
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
    if latency is not None:
        cfg.latency = latency
    done = run_chain(cfg, artifacts, json)
    if json:
        ui.announce(done["evaluate"], True)


def run_chain(cfg: chain.ChainConfig, artifacts: Path | None, as_json: bool) -> dict[str, Manifest]:
    """Run the chain with progress on stderr (plain lines without a terminal or under --json),
    a warning line per questionable training run, and (without --json) the comparison table."""
    store = open_store(artifacts)
    for line in cfg.warnings():
        ui.err.print(Text(line), soft_wrap=True)
    if ui.settings.verbose:
        ui.info(f"configuration: {cfg}")
    with ui.reporter(as_json=as_json) as rep:
        done = chain.run(cfg, store, rep, after=lambda name, m: ui.training_warnings(store, m, name))
    for manifest in done.values():
        ui.notes(manifest)
    if not as_json:
        evaluate_cmd.render(done["evaluate"])
    return done
