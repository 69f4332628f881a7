"""``optembed run``: the whole chain from one TOML configuration (or flags), reusing cached stages."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ConfigError, DataError, OptembedError
from optembed.evolution.config import EvolutionConfig
from optembed_cli import track as tracking
from optembed_cli import ui
from optembed_cli.commands import evaluate as evaluate_cmd
from optembed_cli.data_hints import explain
from optembed_cli.option_groups import Values, with_groups
from optembed_cli.options import (
    DEVICE, OUTPUT, ArtifactsOpt, FieldsOpt, Format, GenerationsOpt, Init, JsonOpt, LabelOpt, NumericOpt, PopulationOpt,
    TrackOpt, complete_device, open_store, split_list,
)
from optembed_cli.training_options import MODEL_OPTIONS, TRAINING_OPTIONS, model_config
from pipelines import chain
from pipelines.store import Manifest

SEARCH = EvolutionConfig()
# the options of a --data run: with a configuration file its keys say these instead
DATA_ONLY = (
    "format", "label", "fields", "numeric", "seed", "population", "generations", "variants", "retrain_init", "distill", "distill_supernet", "selection",
    "compress",
    *MODEL_OPTIONS.names, "epochs", "batch_size",
)


@ui.handle_errors
@with_groups(model=MODEL_OPTIONS, train=TRAINING_OPTIONS.only("epochs", "batch_size"))
def run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Argument(help="TOML configuration (see README).", show_default=False)] = None,
    data: Annotated[
        Path | None, typer.Option(help="Raw data file (instead of a configuration).", show_default=False, rich_help_panel="Input")
    ] = None,
    format: Annotated[
        Format | None,
        typer.Option(
            "--format", "-f", case_sensitive=False, show_default=False, rich_help_panel="Input",
            help="Format of --data (default: guessed from the file, as preprocess does; the guess is printed).",
        ),
    ] = None,
    label: LabelOpt = None,
    fields: FieldsOpt = None,
    numeric: NumericOpt = None,
    *,
    model: Values,
    train: Values,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the supernet and retrain runs and of the search (the split keeps its own seed; "
            "default: each stage's).",
            show_default=False,
            rich_help_panel="Training",
        ),
    ] = None,
    population: PopulationOpt = SEARCH.population,
    generations: GenerationsOpt = SEARCH.generations,
    variants: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated variants, from: {', '.join(chain.ALL_VARIANTS)} (default: "
            f"{', '.join(chain.VARIANTS)}).",
            metavar="NAMES",
            show_default=False,
        ),
    ] = ",".join(chain.VARIANTS),
    retrain_init: Annotated[
        Init,
        typer.Option(
            "--retrain-init",
            help="Start of the masked variants' re-training: auto (fresh when distilled, else supernet) | fresh | "
            "rewind (the supernet's initial weights, as the paper) | supernet.",
            rich_help_panel="Training",
        ),
    ] = "auto",
    distill: Annotated[
        float,
        typer.Option(
            metavar="W",
            help="Weight of the Original's probabilities in the compressed variants' training (they learn from "
            "the Original, trained first); 0: from the labels alone.",
            rich_help_panel="Training",
        ),
    ] = chain.DEFAULT_DISTILL,
    distill_supernet: Annotated[
        bool,
        typer.Option(
            "--distill-supernet",
            help="The supernets learn from the Original too (with --distill's weight), so that the search judges "
            "widths on a model as good as the Original.",
            rich_help_panel="Training",
        ),
    ] = False,
    selection: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Training rows the supernets hold out for the search to score on, so that the validation split "
            "stays out of its choices (0: the search scores on validation).",
            rich_help_panel="Training",
        ),
    ] = 0.0,
    compress: Annotated[
        str, typer.Option(help="Comma-separated re-trained variants to compress too (default options).", metavar="VARIANTS")
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
    track: TrackOpt = None,
) -> None:
    """Run preprocess -> supernet -> search -> retrain (-> compress) -> evaluate and compare the variants.

    The plan (stage k of N) and an estimate of the time left are printed as it goes; finished
    stages are reused, so an interrupted run continues where it stopped. The data, model,
    training and search options apply to --data runs; a configuration file sets them as keys.
    With --json, "variants" holds every variant's test AUC, logloss, bytes, sparsity, artifact id,
    re-training init and teacher under its name (as --variants writes it).

    Examples:

      optembed run experiment.toml

      optembed run --data clicks.csv --label y --numeric price --seed 1

      optembed run --data train.txt --epochs 4 --population 20 --json > out.json
    """
    if config is not None:
        given = [name for name in DATA_ONLY if ctx.get_parameter_source(name) == click_commandline()]
        if data is not None or given:
            flag = "--data" if data is not None else "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to runs without a configuration file; set it in {config} instead")
        cfg = chain.load_config(config)
    elif data is not None:
        fmt, delimiter = data_format(data, format, label)
        search = {"population": population, "generations": generations, "topk": min(15, max(2, population // 2))}
        training = {**train, **({"seed": seed} if seed is not None else {})}
        cfg = chain.ChainConfig(
            data=data,
            preprocess=PreprocessConfig(
                fmt=fmt, label=label, fields=split_list(fields), numeric=split_list(numeric), delimiter=delimiter
            ),
            model=model_config(**model),
            supernet=chain.TrainConfig(**training),
            retrain=chain.TrainConfig(**training),
            search={**search, **({"seed": seed} if seed is not None else {})},
            variants=tuple(split_list(variants) or ()),
            compress={"variants": split_list(compress)} if split_list(compress) else {},
            retrain_init=str(retrain_init),
            distill=distill,
            distill_supernet=distill_supernet,
            selection=selection,
        )
    else:
        raise ConfigError("give a configuration file or --data FILE")
    if device:
        cfg.device = device
    cfg.plot = cfg.plot or plot
    if latency is not None:
        cfg.latency = latency
    done = run_chain(cfg, artifacts, json, track)
    if json:
        ui.announce(done["evaluate"], True, extra={"variants": chain.variant_results(cfg, done)})


def click_commandline() -> object:
    """The parameter source of a value typed on the command line."""
    from optembed_cli.lazy import click

    return click.core.ParameterSource.COMMANDLINE


def data_format(data: Path, given: object, label: str | None) -> tuple[str, str | None]:
    """The format (and csv delimiter) of ``--data``: the given one, else guessed and said on stderr."""
    from optembed.data.sniff import infer_format

    if given is not None:
        return str(given).lower(), None
    if not data.is_file() or data.stat().st_size == 0:
        return ("parquet" if data.suffix.lower() == ".parquet" else "criteo"), None  # the chain says why
    guess = infer_format(data, label)
    ui.info(f"format: {guess.fmt}, guessed from {guess.reason} (--format overrides)")
    return guess.fmt, guess.delimiter


def run_chain(cfg: chain.ChainConfig, artifacts: Path | None, as_json: bool, track: object = None) -> dict[str, Manifest]:
    """Run the chain with progress on stderr (plain lines without a terminal or under --json),
    a warning line per questionable training run, and (without --json) the comparison table.
    With ``track`` every stage is logged as its own run, nested under one run of the chain."""
    store = open_store(artifacts)
    for line in cfg.warnings():
        ui.err.print(Text(line), soft_wrap=True)
    if ui.settings.verbose:
        ui.info(f"configuration: {cfg}")
    tracker = tracking.open_tracker(track)
    parent = tracker.start_chain(Path(cfg.data).name) if tracker else None

    def after(name: str, manifest: Manifest) -> None:
        ui.training_warnings(store, manifest, name)
        tracking.log(tracker, manifest, parent=parent, name=name)

    try:
        with ui.reporter(as_json=as_json) as rep:
            try:
                done = chain.run(cfg, store, rep, after=after)
            except DataError as exc:
                clearer = explain(exc, Path(cfg.data), cfg.preprocess.fmt)
                if clearer is None:
                    raise
                raise clearer from None
    except BaseException:
        if tracker is not None and parent is not None:
            with contextlib.suppress(OptembedError):  # the run's own error is the one to show
                tracker.end(parent, failed=True)
        raise
    if tracker is not None and parent is not None:
        tracker.end(parent)
    for manifest in done.values():
        ui.notes(manifest)
    if not as_json:
        evaluate_cmd.render(done["evaluate"])
    return done
