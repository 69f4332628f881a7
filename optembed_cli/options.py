"""Options shared by the commands: help panels, fixed choices (as str enums) and common flags.

This module imports no torch: ``optembed --help`` and every command's parser read it. Choices
whose names live in torch modules of the core are in :mod:`optembed_cli.core_choices`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from optembed.data.formats import FORMATS
from optembed.training.config import AMP_MODES, DEFAULT_DISTILL, EMBEDDING_OPTIMIZERS, FREQ_LR_FORMS, MONITORS, THRESHOLD_OPTIMIZERS
from pipelines.store import ENV_VAR, Store
from pipelines.tracking import TRACKERS

# help panels: every command's options are grouped under these titles
INPUT = "Input"
MODEL = "Model"
TRAINING = "Training"
EMBEDDING = "Embedding optimizer"
TABLES = "Embedding tables"
PRUNING = "Pruning"
SEARCH = "Search"
QUANTIZER = "Quantizer"
OUTPUT = "Output"
DEVICE = "Device"
BASELINE = "Baseline"


# Names the core keeps in modules that import torch, written out here so that a parser needs no
# torch; tests/test_cli_startup.py checks them against the core's own tuples.
INITS = ("auto", "fresh", "rewind", "supernet")  # pipelines.retrain.INITS
STAGES = ("preprocess", "supernet", "search", "retrain", "baseline", "compress", "evaluate", "export")  # each stage's STAGE
RUNTIMES = ("onnx", "torch")  # optembed.export.bundle.RUNTIMES


def choices(name: str, values: tuple[str, ...] | list[str]) -> type[StrEnum]:
    """A str enum of the core's own names: values stay the very strings the core expects."""
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


Amp = choices("Amp", AMP_MODES)
ThresholdOptimizer = choices("ThresholdOptimizer", THRESHOLD_OPTIMIZERS)
EmbeddingOptimizer = choices("EmbeddingOptimizer", EMBEDDING_OPTIMIZERS)
FreqLr = choices("FreqLr", FREQ_LR_FORMS)
Monitor = choices("Monitor", MONITORS)
Format = choices("Format", FORMATS)
Init = choices("Init", INITS)
Runtime = choices("Runtime", RUNTIMES)
CountOn = choices("CountOn", ("train", "all"))
SynthFormat = choices("SynthFormat", ("criteo", "avazu"))
StageName = choices("StageName", STAGES)
Tracker = choices("Tracker", TRACKERS)


def complete_device(incomplete: str) -> list[str]:
    """Shell completion of --device (cuda:N is accepted too)."""
    return [d for d in ("auto", "cpu", "cuda") if d.startswith(incomplete)]


ArtifactsOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifacts",
        help=f"Artifact store folder (default: ${ENV_VAR} or ./artifacts).",
        metavar="DIR",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if an identical artifact exists.", rich_help_panel=OUTPUT)]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print only the manifest as JSON on stdout (progress and warnings go to stderr as plain lines).",
        rich_help_panel=OUTPUT,
    ),
]
TrackOpt = Annotated[
    Tracker | None,
    typer.Option(
        "--track",
        help="Log the finished artifact as an MLflow run (parameters, curves, metrics, tags) to $MLFLOW_TRACKING_URI, "
        "experiment $MLFLOW_EXPERIMENT_NAME (default 'optembed'); needs the mlflow package.",
        show_default=False,
        rich_help_panel=OUTPUT,
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Upstream artifact: id prefix or folder (default: the newest; its id is printed).",
        metavar="ID",
        show_default=False,
        rich_help_panel=INPUT,
    ),
]
TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="Distil from this trained model (a retrain artifact of the same data, e.g. the Original's): "
        "its probabilities are soft labels beside the labels.",
        metavar="ID",
        show_default=False,
        rich_help_panel=INPUT,
    ),
]
DistillOpt = Annotated[
    float | None,
    typer.Option(
        "--distill",
        help="Weight of the teacher's probabilities in the loss (the labels' 1 - W); default 0.5 with --teacher.",
        metavar="W",
        show_default=False,
        rich_help_panel=INPUT,
    ),
]


def distill_weight(teacher: str | None, distill: float | None) -> float:
    """The distillation weight: as given, else the default with a teacher and 0 without."""
    if distill is not None:
        return distill
    return DEFAULT_DISTILL if teacher is not None else 0.0


DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto (CUDA when present) | cpu | cuda (or cuda:N).",
        autocompletion=complete_device,
        metavar="DEVICE",
        rich_help_panel=DEVICE,
    ),
]


LabelOpt = Annotated[
    str | None,
    typer.Option(
        help="csv/parquet: the label column (default 'label'), or a comma list of them for several tasks "
        "(click,convert: the first is the primary task).",
        metavar="COLUMN[,COLUMN...]",
        show_default=False,
        rich_help_panel=INPUT,
    ),
]
FieldsOpt = Annotated[
    str | None,
    typer.Option(
        help="csv/parquet: comma-separated field columns (default: all but the label).", metavar="COLUMNS",
        show_default=False, rich_help_panel=INPUT,
    ),
]
NumericOpt = Annotated[
    str | None,
    typer.Option(
        help="csv/parquet: numeric fields, bucketed into --numeric-bins quantile bins fitted on the training "
        "split (empty and NaN values are missing).", metavar="COLUMNS",
        show_default=False, rich_help_panel=INPUT,
    ),
]


SkipBadRowsOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad-rows", help="Drop malformed rows (counted in the result) instead of failing.", rich_help_panel=INPUT
    ),
]
PopulationOpt = Annotated[
    int, typer.Option(help="Candidates per generation (and random ones at the start).", rich_help_panel=SEARCH)
]
GenerationsOpt = Annotated[int, typer.Option(help="Generations after the random one.", rich_help_panel=SEARCH)]


def open_store(artifacts: Path | None) -> Store:
    return Store(artifacts)


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None
