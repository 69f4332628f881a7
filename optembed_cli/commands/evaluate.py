"""``optembed evaluate``: AUC, logloss, sparsity, parameters, bytes and latency side by side."""

from __future__ import annotations

import json as _json
from typing import Annotated

import typer
from rich.table import Table

from optembed_cli import ui
from optembed_cli.options import ArtifactsOpt, ForceOpt, JsonOpt
from pipelines import evaluate as stage
from pipelines.store import Manifest


@ui.handle_errors
def evaluate(
    sources: Annotated[
        list[str] | None,
        typer.Option("--from", help="retrain, compress, supernet or search artifact (repeatable; default: all retrain runs of the newest data)."),
    ] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Also write PNG plots into the artifact.")] = False,
    latency: Annotated[bool, typer.Option("--latency/--no-latency", help="Measure inference latency and throughput.")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    eval_batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 32768,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Evaluate models on the test split and compare them in one table."""
    config = stage.EvaluateStage(
        sources=sources or [], device=device, eval_batch_size=eval_batch_size, latency=latency, plot=plot, force=force
    )
    ui.run_stage(stage.run, config, artifacts, json, render)


def render(manifest: Manifest) -> None:
    rows = _json.loads(manifest.output("metrics").read_text())["models"]
    table = Table(title="evaluation (test split)", header_style="bold")
    cols = ("model", "variant", "id", "test AUC", "logloss", "sparsity", "emb. bytes", "ratio", "file bytes", "p50 ms", "samples/s")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "variant", "id") else "right")
    for r in rows:
        table.add_row(
            r["model"], r["variant"], r["id"][:10], f"{r['test_auc']:.5f}", f"{r['test_logloss']:.5f}",
            f"{r['sparsity']:.4f}", f"{r['embedding_bytes']:,}", f"{r['ratio_vs_original']:.1f}x", f"{r['file_bytes']:,}",
            f"{r['latency_p50_ms']:.3f}" if "latency_p50_ms" in r else "-",
            f"{r['throughput_samples_per_s']:,.0f}" if "throughput_samples_per_s" in r else "-",
        )
    ui.out.print(table)
    extra = [v for k, v in manifest.outputs.items() if k.startswith("plot_") or k == "report"]
    if manifest.path is not None and extra:
        ui.out.print("written: " + ", ".join(str(manifest.path / f) for f in extra))
