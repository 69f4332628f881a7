"""``optembed predict``: score a raw data file with an export bundle."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated

import typer

from optembed.errors import ArtifactError
from optembed.progress import Prefixed
from optembed_cli import ui
from optembed_cli.options import DEVICE, INPUT, OUTPUT, ArtifactsOpt, Format, JsonOpt, Runtime, SkipBadRowsOpt
from pipelines import predict as stage
from pipelines.store import Store


@ui.handle_errors
def predict(
    bundle: Annotated[str, typer.Argument(help="Bundle folder (from export --out), or an export/retrain/compress artifact id.", metavar="BUNDLE", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Raw data file, in the format the model was trained on.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Scores file: .parquet or .csv (row, score, label; score_<task> per task of a multi-task model).", metavar="FILE",
                                      show_default=False, rich_help_panel=OUTPUT)],
    format: Annotated[
        Format | None,
        typer.Option("--format", "-f", case_sensitive=False,
                     help="Input format (default: the one the model was trained on).", show_default=False, rich_help_panel=INPUT),
    ] = None,
    runtime: Annotated[
        Runtime | None,
        typer.Option(case_sensitive=False, help="Engine: onnx (onnxruntime) or torch (the network rebuilt from the bundle's model.pt); default onnx when installed.",
                     show_default=False, rich_help_panel=DEVICE),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows scored per call.", rich_help_panel=DEVICE)] = 4096,
    threads: Annotated[int | None, typer.Option(help="CPU threads of the runtime and DuckDB (default: all).", show_default=False, rich_help_panel=DEVICE)] = None,
    skip_bad_rows: SkipBadRowsOpt = False,
    artifacts: ArtifactsOpt = None,
    json: JsonOpt = False,
) -> None:
    """Score every row of a raw data file with an export bundle; AUC and logloss when labelled.

    A model of several tasks writes score (the primary task's) and score_<task> for every task,
    and AUC and logloss of every task whose label column the file has.

    The bundle's own preprocessing (unseen
    values -> OOV, empty -> missing), batches through ONNX Runtime or torch (the network rebuilt
    from the bundle's model.pt by optembed's own code; model.pt2 is never loaded), one score per
    row in input order; with labels, AUC and logloss. The bundle is checked first (bundle.json's
    own hash, every file's hash, no links, the graphs without running them); by artifact id,
    bundle.json is also checked against the store.

    Examples:

      optembed predict bundle/ test.txt --out scores.parquet

      optembed predict 3f9a test.txt --out scores.csv --runtime torch
    """
    folder = Path(bundle)
    if folder.is_dir() and not (folder / "bundle.json").exists() and not (folder / "manifest.json").exists():
        raise ArtifactError(f"{folder} is not an export bundle: it holds no bundle.json (make one with 'optembed export --out DIR')")
    config = stage.PredictConfig(
        bundle=bundle, data=data, out=out, fmt=str(format).lower() if format else None,
        runtime=str(runtime).lower() if runtime else None, batch_size=batch_size, skip_bad_rows=skip_bad_rows, threads=threads,
    )
    with ui.reporter(as_json=json) as rep:
        result = stage.run(config, Store(artifacts), Prefixed(rep, "predict"))
    if json:
        ui.out.print(jsonlib.dumps(result.to_dict(), indent=2), markup=False, highlight=False)
        return
    shown = {"rows": result.rows, "runtime": result.runtime}
    if result.has_label:
        shown.update(auc=result.metrics.get("auc"), logloss=result.metrics.get("logloss"))
    for task, numbers in result.metrics.get("tasks", {}).items():  # several tasks: each labelled one's
        shown.update({f"auc_{task}": numbers["auc"], f"logloss_{task}": numbers["logloss"]})
    skipped = sum(result.bad_rows.values())
    if skipped:
        shown["bad_rows_skipped"] = skipped
    shown["seconds"] = round(result.seconds, 2)
    ui.out.print(ui.metrics_table("predict", shown))
    ui.out.print(f"scores: {result.out}")
