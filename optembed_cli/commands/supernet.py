"""``optembed supernet``: train the OptEmbed supernet (row pruning + one-shot width supernet)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.table import Table

from optembed_cli import ui
from optembed_cli.core_choices import Mode
from optembed_cli.option_groups import Values, with_groups
from optembed_cli.options import (
    PRUNING, ArtifactsOpt, DistillOpt, ForceOpt, FromOpt, JsonOpt, TeacherOpt, TrackOpt, distill_weight,
)
from optembed_cli.training_options import (
    EMBEDDING_OPTIONS, MODEL_OPTIONS, PRUNING_OPTIONS, RUN_OPTIONS, TRAINING_OPTIONS, DeviceOpt, ModelDefaults, NormOpt,
    model_config, train_config,
)
from optembed.embedders.table import SupernetMode
from optembed.models.checkpoint import read_model_payload
from pipelines import supernet as stage
from pipelines.readers import load_row_mask
from pipelines.store import Manifest


@ui.handle_errors
@with_groups(model=MODEL_OPTIONS, train=TRAINING_OPTIONS, embedding=EMBEDDING_OPTIONS, pruning=PRUNING_OPTIONS, run=RUN_OPTIONS)
def supernet(
    source: FromOpt = None,
    mode: Annotated[
        Mode,
        typer.Option(
            help="optembed (rows + widths) | prune-only (OptEmbed-E) | dims-only (OptEmbed-D) | none (plain model).",
            rich_help_panel=PRUNING,
        ),
    ] = "optembed",
    *,
    model: Values,
    norm: NormOpt = ModelDefaults().norm,
    selection: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Training rows held out of the supernet's training for the search to score on, so that the "
            "validation split stays out of its choices (0: the search scores on validation).",
            rich_help_panel=PRUNING,
        ),
    ] = 0.0,
    teacher: TeacherOpt = None,
    distill: DistillOpt = None,
    train: Values,
    embedding: Values,
    pruning: Values,
    device: DeviceOpt = "auto",
    run: Values,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
    track: TrackOpt = None,
) -> None:
    """Train the supernet on a preprocess artifact; keep the best checkpoint and its row mask.

    Examples:

      optembed supernet --epochs 4 --batch-size 512 --embed-dim 16 --mlp 128,64

      optembed supernet --from 3fa2 --mode dims-only --device cuda

      optembed supernet --teacher ORIGINAL_ID   # distilled from the Original
    """
    ui.relaunch(run["nproc"])  # --nproc N: this command again as N data-parallel workers
    config = stage.SupernetStage(
        model=model_config(**model, norm=norm),
        mode=str(mode),
        train=replace(train_config(**train, **embedding, **pruning), distill=distill_weight(teacher, distill)),
        teacher=teacher,
        selection=selection,
        source=source,
        device=device,
        stream=run["stream"],
        shuffle_buffer=run["shuffle_buffer"],
        resume=run["resume"],
        force=force,
    )
    SupernetMode.parse(str(mode))  # an unknown mode: one line before anything runs
    ui.run_stage(stage.run, config, artifacts, json, render, stage.UPSTREAM, source, track=track)


def render(manifest: Manifest) -> None:
    ui.out.print(ui.metrics_table(f"supernet {manifest.params['model']['name']} ({manifest.params['mode']})", manifest.metrics))
    info = load_row_mask(manifest)
    if not info["pruned"]:
        return
    payload = read_model_payload(manifest.output("model"))
    table = Table(title="rows kept per field", header_style="bold")
    for col in ("field", "rows", "kept", "kept %", "threshold"):
        table.add_column(col, justify="left" if col == "field" else "right")
    for name, rows, kept, t in zip(
        payload["field_names"], info["rows_per_field"], info["kept_per_field"], info["thresholds"], strict=True
    ):
        table.add_row(name, f"{rows:,}", f"{kept:,}", f"{100 * kept / rows:.1f}", f"{t:.4f}")
    ui.out.print(table)
