"""``optembed export``: a retrain or compress artifact -> a deployment bundle (ONNX, torch.export)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from optembed_cli import ui
from optembed_cli.options import OUTPUT, ArtifactsOpt, ForceOpt, FromOpt, JsonOpt
from pipelines import export as stage
from pipelines.store import Manifest


@ui.handle_errors
def export(
    source: FromOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also copy the bundle to this folder (it stays in the store too).", metavar="DIR",
                     show_default=False, rich_help_panel=OUTPUT),
    ] = None,
    format: Annotated[
        str,
        typer.Option("--format", "-f", metavar="[onnx|pt2|all]", help="Graphs to write: onnx, pt2 (torch.export) or all.",
                     rich_help_panel=OUTPUT),
    ] = "all",
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Export a retrain or compress artifact as a self-contained deployment bundle.

    The bundle holds the model file, the network as ONNX and a torch.export program, the preprocessing spec and vocabularies, a self-hashed
    bundle.json (who made it, every file's sha256) and a README. --out must lie outside the store.

    Examples:

      optembed export --out bundle/               # the newest retrain or compress artifact

      optembed export --from 9c01 --format onnx --out bundle/
    """
    config = stage.ExportStage(source=source, out=out, formats=stage.parse_formats(format), force=force)
    config.validate()
    ui.run_stage(stage.run, config, artifacts, json, lambda m: render(m, out), upstream=stage.SOURCES, source=source)


def render(manifest: Manifest, out: Path | None = None) -> None:
    """The export's numbers and the folder the bundle was written to: ``out`` when given (the
    store keeps its own copy, named after it), else the artifact's folder."""
    m = manifest.metrics
    shown = {k: m[k] for k in (
        "variant", "source_stage", "test_auc", "test_logloss", "onnx_opset", "max_abs_diff_onnx", "max_abs_diff_pt2",
        "onnx_bytes", "pt2_bytes",
    ) if m.get(k) is not None}
    for task, numbers in m.get("tasks", {}).items():  # a model of several tasks: each one's test numbers
        shown.update({f"test_auc_{task}": numbers["test_auc"], f"test_logloss_{task}": numbers["test_logloss"]})
    ui.out.print(ui.metrics_table("export", shown))
    assert manifest.path is not None
    if out is None:
        ui.out.print(f"bundle: {manifest.path}")
    else:
        ui.out.print(f"bundle: {Path(os.path.abspath(out))} (also in the store: {manifest.path})")
