"""``optembed evaluate``: AUC (with its 95% interval), logloss beside the base rate's, sparsity, bytes and
(optionally) latency side by side."""

from __future__ import annotations

import json as _json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from optembed.metrics import z_value
from optembed_cli import ui
from optembed_cli.options import OUTPUT, ArtifactsOpt, DeviceOpt, ForceOpt, JsonOpt, TrackOpt
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
    track: TrackOpt = None,
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
    ui.run_stage(stage.run, config, artifacts, json, render, track=track)


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


def auc_cell(r: dict[str, Any]) -> str:
    """Test AUC with the half-width of its 95% DeLong interval: ``0.7312 ±0.0041``."""
    text = f"{r['test_auc']:.4f}"
    se = r.get("test_auc_se")
    if isinstance(se, float) and se == se:
        text += f" ±{z_value(stage.LEVEL) * se:.4f}"
    return text


def size_text(n: int) -> str:
    """Bytes for people, 3-4 significant digits: ``912 B``, ``12.3 KB``, ``1.05 MB``."""
    for scale, unit in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n} B"


def base_rate_line(split: dict[str, Any]) -> str:
    """The caption under the comparison: two lines, each within 80 columns."""
    return (
        f"test split: {split['rows']:,} rows, {split['positives']:,} positive\n"
        f"base rate logloss {split['base_rate_logloss']:.4f} (the training positive rate, "
        f"{split['train_positive_ratio']:.4f}, for every row)"
    )


def comparison_table(rows: list[dict[str, Any]], split: dict[str, Any] | None) -> Table:
    """The comparison: at most 80 columns wide with the usual labels (long ones wrap, numbers
    never do); the backbone in the title, or beside each variant when they differ; a D column
    (the embedding width) when the models' widths differ; the base rate as the caption."""
    models = sorted({str(r["model"]) for r in rows})
    title = "evaluation (test split)" + (f": {models[0]}" if len(models) == 1 else "")
    table = Table(
        title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
        caption=base_rate_line(split) if split else None, caption_justify="left",
    )
    dims = {r.get("dim") for r in rows} - {None}
    show_dim = len(dims) > 1  # models of different embedding widths D: say each one's
    columns = ("variant", "id", *(("D",) if show_dim else ()), "test AUC ±95%", "logloss", "sparsity", "emb. bytes", "ratio")
    for col in columns:
        left = col in ("variant", "id")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "variant",
                         min_width=(10 if show_dim else 12) if col == "variant" else None)
    for r in rows:
        variant = r["variant"] + (f" ({r['model']})" if len(models) > 1 else "")
        cells = [variant, r["id"][:8], *((str(r.get("dim", "?")),) if show_dim else ()), auc_cell(r),
                 f"{r['test_logloss']:.4f}", f"{r['sparsity']:.4f}", size_text(int(r["embedding_bytes"])),
                 f"{r['ratio_vs_original']:.1f}x"]
        table.add_row(*(Text(str(c)) for c in cells))
    return table


def distilled_line(rows: list[dict[str, Any]]) -> str:
    """``distilled from b93b89c2 (weight 0.5, the original row): optembed, qr`` for the rows
    trained with a teacher; empty when none was."""
    by_teacher: dict[tuple[str, float], list[str]] = {}
    for r in rows:
        if r.get("teacher"):
            by_teacher.setdefault((r["teacher"], float(r.get("distill") or 0.0)), []).append(r["variant"])
    ids = {r["id"]: r["variant"] for r in rows}
    parts = []
    for (teacher, weight), names in by_teacher.items():
        shown = f", the {ids[teacher]} row" if teacher in ids else ""
        parts.append(f"distilled from {teacher[:8]} (weight {weight:g}{shown}): {', '.join(names)}")
    return "\n".join(parts)


def speed_table(rows: list[dict[str, Any]]) -> Table:
    """Files and measured latency, beside the comparison."""
    table = Table(title="files and latency", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for col in ("variant", "file bytes", "p50 ms (spread)", "samples/s"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col != "variant",
                         min_width=12 if col == "variant" else None)
    for r in rows:
        table.add_row(Text(r["variant"]), f"{r['file_bytes']:,}", latency_cell(r),
                      f"{r['throughput_samples_per_s']:,.0f}" if "throughput_samples_per_s" in r else "-")
    return table


def render(manifest: Manifest) -> None:
    data = _json.loads(manifest.output("metrics").read_text())
    rows = data["models"]
    timed = any("latency_p50_ms" in r for r in rows)
    ui.out.print(comparison_table(rows, data.get("test")))
    if timed:
        ui.out.print(speed_table(rows))
    variants = [r["variant"] for r in rows]
    ui.print_legend(variants)
    line = distilled_line(rows)
    if line:
        ui.out.print(Text(line))
    if not any(v.split(" ")[0] == "original" for v in variants):
        ui.info(
            "no Original row to compare with: train it with 'optembed retrain --full --from SUPERNET_ID' "
            "(same data, full width), then evaluate again"
        )
    if not timed:
        ui.info("latency not measured (--latency measures it); file sizes: report.md")
    extra = [v for k, v in manifest.outputs.items() if k.startswith("plot_") or k == "report"]
    if manifest.path is not None and extra:
        ui.out.print("written: " + ", ".join(str(manifest.path / f) for f in extra))
