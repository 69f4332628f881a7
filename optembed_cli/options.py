"""Options shared by the commands: help panels, fixed choices (as str enums) and common flags."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from optembed.data.formats import FORMATS
from optembed.embedders.autodim import TRANSFORMS
from optembed.embedders.pep import GRANULARITIES
from optembed.embedders.qr import OPERATIONS
from optembed.evolution.row_levels import ROW_RANKS
from optembed.models.base import MODES
from optembed.models.config import MODEL_NAMES, NORMS
from optembed.quantization.config import CODE_DTYPES, COMPRESS_METHODS, KMEANS_BACKENDS, POPULARITY
from optembed.training.config import AMP_MODES, EMBEDDING_OPTIMIZERS, FREQ_LR_FORMS, MONITORS, THRESHOLD_OPTIMIZERS
from pipelines import baseline, compress, evaluate, export, preprocess, retrain, search, supernet
from pipelines.store import ENV_VAR, Store

# help panels: every command's options are grouped under these titles
INPUT = "Input"
MODEL = "Model"
TRAINING = "Training"
EMBEDDING = "Embedding optimizer"
PRUNING = "Pruning"
SEARCH = "Search"
QUANTIZER = "Quantizer"
OUTPUT = "Output"
DEVICE = "Device"
BASELINE = "Baseline"


def _choices(name: str, values: tuple[str, ...] | list[str]) -> type[StrEnum]:
    """A str enum of the core's own names: values stay the very strings the core expects."""
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


Model = _choices("Model", MODEL_NAMES)
Mode = _choices("Mode", MODES)
Norm = _choices("Norm", NORMS)
Amp = _choices("Amp", AMP_MODES)
ThresholdOptimizer = _choices("ThresholdOptimizer", THRESHOLD_OPTIMIZERS)
EmbeddingOptimizer = _choices("EmbeddingOptimizer", EMBEDDING_OPTIMIZERS)
FreqLr = _choices("FreqLr", FREQ_LR_FORMS)
Monitor = _choices("Monitor", MONITORS)
Format = _choices("Format", FORMATS)
CodeDtype = _choices("CodeDtype", ("auto", *CODE_DTYPES))
CompressMethod = _choices("CompressMethod", COMPRESS_METHODS)
Popularity = _choices("Popularity", POPULARITY)
KmeansBackend = _choices("KmeansBackend", KMEANS_BACKENDS)
Init = _choices("Init", ("auto", "fresh", "rewind", "supernet"))
CountOn = _choices("CountOn", ("train", "all"))
SynthFormat = _choices("SynthFormat", ("criteo", "avazu"))
RowRank = _choices("RowRank", ROW_RANKS)
BaselineMethod = _choices("BaselineMethod", baseline.METHODS)
QrOperation = _choices("QrOperation", OPERATIONS)
PepGranularity = _choices("PepGranularity", GRANULARITIES)
AutoDimTransform = _choices("AutoDimTransform", TRANSFORMS)
StageName = _choices(
    "StageName", tuple(m.STAGE for m in (preprocess, supernet, search, retrain, baseline, compress, evaluate, export))
)


def complete_device(incomplete: str) -> list[str]:
    """Shell completion of --device (cuda:N is accepted too)."""
    return [d for d in ("auto", "cpu", "cuda") if d.startswith(incomplete)]


def complete_format(incomplete: str) -> list[str]:
    """Shell completion of preprocess --format (checked by the stage, which names the choices)."""
    return [f for f in FORMATS if f.startswith(incomplete)]


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
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto (CUDA when present) | cpu | cuda (or cuda:N).",
        autocompletion=complete_device,
        metavar="DEVICE",
        rich_help_panel=DEVICE,
    ),
]


def open_store(artifacts: Path | None) -> Store:
    return Store(artifacts)


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None
