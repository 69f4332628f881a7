"""``optembed retrain``: re-train under the found masks and export per-field dense tables."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from optembed_cli import ui
from optembed_cli.option_groups import Values, with_groups
from optembed_cli.options import (
    INPUT, ArtifactsOpt, DistillOpt, ForceOpt, FromOpt, Init, JsonOpt, TeacherOpt, TrackOpt, distill_weight,
)
from optembed_cli.training_options import (
    EMBEDDING_OPTIONS, MODEL_OPTIONS, RUN_OPTIONS, TRAINING_OPTIONS, DeviceOpt, model_config, train_config,
)
from pipelines import retrain as stage
from pipelines.store import Manifest


@ui.handle_errors
@with_groups(model=MODEL_OPTIONS, train=TRAINING_OPTIONS, embedding=EMBEDDING_OPTIONS, run=RUN_OPTIONS)
def retrain(
    source: FromOpt = None,
    full: Annotated[
        bool, typer.Option("--full", help="Train the Original model: no row mask, full width.", rich_help_panel=INPUT)
    ] = False,
    init: Annotated[
        Init,
        typer.Option(
            help="auto (supernet for masked variants, fresh with --teacher or --full) | fresh | rewind (the "
            "supernet's initial weights) | supernet (its trained weights, kept as epoch 0 when no epoch beats them).",
            rich_help_panel=INPUT,
        ),
    ] = "auto",
    teacher: TeacherOpt = None,
    distill: DistillOpt = None,
    *,
    model: Values,
    train: Values,
    embedding: Values,
    device: DeviceOpt = "auto",
    run: Values,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
    track: TrackOpt = None,
) -> None:
    """Re-train from a search (OptEmbed) or supernet (OptEmbed-E) artifact, or --full; export the compact model.

    The model options apply only to --full from a preprocess artifact; otherwise the supernet's
    architecture is reused. Without --from the newest search or supernet artifact is used (its
    id is printed).

    Examples:

      optembed retrain                        # OptEmbed from the newest search

      optembed retrain --from SUPERNET_ID --full   # the Original model, for the comparison

      optembed retrain --from SEARCH_ID --teacher ORIGINAL_ID   # OptEmbed, distilled from the Original
    """
    ui.relaunch(run["nproc"])  # --nproc N: this command again as N data-parallel workers
    config = stage.RetrainStage(
        source=source,
        full=full,
        init=str(init),
        teacher=teacher,
        train=replace(train_config(**train, **embedding), distill=distill_weight(teacher, distill)),
        model=model_config(**model),
        device=device,
        stream=run["stream"],
        shuffle_buffer=run["shuffle_buffer"],
        resume=run["resume"],
        force=force,
    )
    ui.run_stage(stage.run, config, artifacts, json, render, upstream=("search", "supernet"), source=source, track=track)


def render(manifest: Manifest) -> None:
    metrics = {k: v for k, v in manifest.metrics.items() if k != "widths"}
    ui.out.print(ui.metrics_table(f"retrain ({manifest.metrics['variant']})", metrics))
    change = ui.size_change(manifest.metrics["dense_bytes"], manifest.metrics["compact_bytes"])
    ui.out.print(
        f"compact model: {manifest.output('compact')} ({manifest.metrics['compact_bytes']:,} bytes, "
        f"{change} the dense masked model file)"
    )
