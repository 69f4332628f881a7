"""``optembed evaluate``: AUC, logloss, sparsity, parameters, bytes and (optionally) latency side by side."""

from __future__ import annotations

import json as _json
from typing import Annotated, Any

import typer
from rich.table import Table

from optembed_cli import ui
from optembed_cli.options import OUTPUT, ArtifactsOpt, DeviceOpt, ForceOpt, JsonOpt
from pipelines import evaluate as stage
from pipelines.store import Manifest, Store


@ui.handle_errors
def evaluate(
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            help="retrain, compress, supernet or search artifact (repeatable; default: all retrain runs of the newest data).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Also write PNG plots into the artifact.", rich_help_panel=OUTPUT)] = False,
    latency: Annotated[
        bool | None,
        typer.Option(
            "--latency/--no-latency",
            help="Measure inference latency and throughput (warm-up, then 5 trials; the spread is shown). "
            "Default: on for a GPU, off on a CPU (slow there, and noisy on a busy machine).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    eval_batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 32768,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Evaluate models on the test split and compare them in one table (a legend explains it).

    Examples:

      optembed evaluate

      optembed evaluate --from 3fa2 --from 9c01 --latency --plot
    """
    from optembed.training.device import resolve_device

    if latency is None:
        latency = resolve_device(device).type == "cuda"
    config = stage.EvaluateStage(
        sources=sources or [], device=device, eval_batch_size=eval_batch_size, latency=latency, plot=plot, force=force
    )
    if not sources:
        stage.preflight(config, Store(artifacts))  # a refused evaluation prints only its error
        _say_sources(config, artifacts)
    ui.run_stage(stage.run, config, artifacts, json, render)


def _say_sources(config: stage.EvaluateStage, artifacts: Any) -> None:
    """Name the artifacts picked by default (all retrain runs of the newest data)."""
    try:
        picked = stage.pick_sources(config, Store(artifacts))
    except Exception:  # noqa: BLE001 - the stage itself reports the problem
        return
    pre = {m.upstream.get("preprocess", "?") for m in picked}
    ui.info(
        f"evaluating the {len(picked)} retrain artifact{'s' if len(picked) != 1 else ''} of the newest data "
        f"(preprocess {', '.join(p[:10] for p in sorted(pre))}): "
        + ", ".join(f"{m.metrics.get('variant', '?')} {m.fingerprint[:10]}" for m in picked)
    )


def latency_cell(r: dict[str, Any]) -> str:
    """p50 milliseconds, with the spread over the trials when measured: ``0.412 (0.40-0.45)``."""
    if "latency_p50_ms" not in r:
        return "-"
    text = f"{r['latency_p50_ms']:.3f}"
    if "latency_p50_ms_min" in r:
        text += f" ({r['latency_p50_ms_min']:.2f}-{r['latency_p50_ms_max']:.2f})"
    return text


def render(manifest: Manifest) -> None:
    rows = _json.loads(manifest.output("metrics").read_text())["models"]
    timed = any("latency_p50_ms" in r for r in rows)
    table = Table(title="evaluation (test split)", header_style="bold")
    cols = ["model", "variant", "id", "test AUC", "logloss", "sparsity", "emb. bytes", "ratio", "file bytes"]
    if timed:
        cols += ["p50 ms (spread)", "samples/s"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "variant", "id") else "right")
    for r in rows:
        cells = [
            r["model"], r["variant"], r["id"][:10], f"{r['test_auc']:.5f}", f"{r['test_logloss']:.5f}",
            f"{r['sparsity']:.4f}", f"{r['embedding_bytes']:,}", f"{r['ratio_vs_original']:.1f}x", f"{r['file_bytes']:,}",
        ]
        if timed:
            cells += [
                latency_cell(r),
                f"{r['throughput_samples_per_s']:,.0f}" if "throughput_samples_per_s" in r else "-",
            ]
        table.add_row(*cells)
    ui.out.print(table)
    variants = [r["variant"] for r in rows]
    ui.print_legend(variants)
    if not any(v.split(" ")[0] == "original" for v in variants):
        ui.info(
            "no Original row to compare with: train it with 'optembed retrain --full --from SUPERNET_ID' "
            "(same data, full width), then evaluate again"
        )
    if not timed:
        ui.info("latency not measured (--latency measures it)")
    extra = [v for k, v in manifest.outputs.items() if k.startswith("plot_") or k == "report"]
    if manifest.path is not None and extra:
        ui.out.print("written: " + ", ".join(str(manifest.path / f) for f in extra))
