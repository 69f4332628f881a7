"""``optembed baseline``: train one of the paper's baselines (QR, PEP, AutoField, AutoDim) for ``evaluate``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from optembed.errors import ConfigError
from optembed_cli import ui
from optembed_cli.core_choices import AutoDimTransform, BaselineMethod, PepGranularity, QrOperation
from optembed_cli.option_groups import Values, with_groups
from optembed_cli.options import (
    BASELINE, ArtifactsOpt, DistillOpt, ForceOpt, FromOpt, JsonOpt, TeacherOpt, TrackOpt, distill_weight,
)
from optembed_cli.training_options import MODEL_OPTIONS, TRAINING_OPTIONS, DeviceOpt, model_config, train_config
from pipelines import baseline as stage
from pipelines.store import Manifest


@ui.handle_errors
@with_groups(model=MODEL_OPTIONS, train=TRAINING_OPTIONS)
def baseline(
    method: Annotated[BaselineMethod, typer.Option(help="The baseline: QR, PEP, AutoField or AutoDim.", rich_help_panel=BASELINE)],
    source: FromOpt = None,
    teacher: TeacherOpt = None,
    distill: DistillOpt = None,
    collisions: Annotated[int, typer.Option(help="QR: ids per quotient row (2 halves a large field's table).", rich_help_panel=BASELINE)] = 2,
    operation: Annotated[QrOperation, typer.Option(help="QR: how quotient and remainder rows combine.", rich_help_panel=BASELINE)] = "mult",
    min_rows: Annotated[int, typer.Option(help="QR: fields with at most this many values stay whole tables.", rich_help_panel=BASELINE)] = 100,
    granularity: Annotated[PepGranularity, typer.Option(help="PEP: one threshold for the whole table (global), per column (dim), per field, or per field and column.", rich_help_panel=BASELINE)] = "field-dim",
    threshold_init: Annotated[float, typer.Option(help="PEP: initial threshold logit s (sigmoid(s) ~ 0: nothing pruned).", rich_help_panel=BASELINE)] = -15.0,
    target_sparsity: Annotated[float, typer.Option(help="PEP: element sparsity at which the mask is taken and retrained.", rich_help_panel=BASELINE)] = 0.5,
    keep_fields: Annotated[int, typer.Option(help="AutoField: keep the K most probable fields (0: keep probability > 0.5).", rich_help_panel=BASELINE)] = 0,
    candidates: Annotated[str, typer.Option(help="AutoDim: candidate widths, comma-separated (default: 2, 4, 8, ... up to the embedding width).", metavar="WIDTHS", rich_help_panel=BASELINE)] = "",
    transform: Annotated[AutoDimTransform, typer.Option(help="AutoDim: how a candidate reaches the full width: linear (the paper) or zero padding.", rich_help_panel=BASELINE)] = "linear",
    arch_lr: Annotated[float, typer.Option(help="AutoField/AutoDim: Adam learning rate of the architecture weights (validation batches).", rich_help_panel=BASELINE)] = 3e-4,
    temperature: Annotated[float, typer.Option(help="AutoField/AutoDim: initial Gumbel-softmax temperature.", rich_help_panel=BASELINE)] = 1.0,
    temperature_decay: Annotated[float, typer.Option(help="AutoField/AutoDim: temperature decrease per training lookup (floor 0.01).", rich_help_panel=BASELINE)] = 5e-5,
    *,
    model: Values,
    train: Values,
    device: DeviceOpt = "auto",
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
    track: TrackOpt = None,
) -> None:
    """Train a baseline embedding (QR, PEP, AutoField or AutoDim) on a preprocess artifact; evaluate reads the result.

    Examples:

      optembed baseline --method qr --collisions 4 --embed-dim 16 --mlp 128,64

      optembed baseline --method autofield --epochs 4 --batch-size 512
    """
    options: dict[str, object]
    method, operation, granularity, transform = str(method), str(operation), str(granularity), str(transform)
    search = {"arch_lr": arch_lr, "temperature": temperature, "temperature_decay": temperature_decay}
    if method == "qr":
        options = {"collisions": collisions, "operation": operation, "min_rows": min_rows}
    elif method == "pep":
        options = {"granularity": granularity, "threshold_init": threshold_init, "target_sparsity": target_sparsity}
    elif method == "autofield":
        options = {"keep_fields": keep_fields, **search}
    else:
        options = {"transform": transform, **search}
        if candidates:
            options["candidates"] = parse_widths(candidates)
    config = stage.BaselineStage(
        method=method,
        model=model_config(**model),
        train=replace(train_config(**train), distill=distill_weight(teacher, distill)),
        options=options,
        source=source,
        teacher=teacher,
        device=device,
        force=force,
    )
    ui.run_stage(stage.run, config, artifacts, json, render, track=track)


def parse_widths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--candidates must be comma-separated integers, got '{text}'") from None


def render(manifest: Manifest) -> None:
    ui.out.print(ui.metrics_table(f"baseline ({manifest.metrics['variant']})", manifest.metrics))
    ui.out.print(f"model: {manifest.output('model')}")
