"""``optembed search``: evolutionary search of one embedding width per field on a supernet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from optembed.evolution import EvolutionConfig
from optembed.evolution.objectives import parse_tolerances
from optembed_cli import ui
from optembed_cli.core_choices import RowRank
from optembed_cli.options import PRUNING, ArtifactsOpt, ForceOpt, FromOpt, GenerationsOpt, JsonOpt, PopulationOpt
from optembed_cli.training_options import AmpOpt, DeviceOpt
from pipelines import search as stage
from pipelines.store import Manifest

DEFAULTS = EvolutionConfig()


@ui.handle_errors
def search(
    source: FromOpt = None,
    population: PopulationOpt = DEFAULTS.population,
    generations: GenerationsOpt = DEFAULTS.generations,
    topk: Annotated[int, typer.Option(help="Best candidates kept as parents each generation.")] = DEFAULTS.topk,
    crossover: Annotated[
        int | None, typer.Option(help="Crossover children per generation (default: half of population - topk).", show_default=False)
    ] = None,
    mutation: Annotated[
        int | None, typer.Option(help="Mutants per generation (default: the rest of population - topk).", show_default=False)
    ] = None,
    mutation_prob: Annotated[float, typer.Option(help="Chance that a mutant redraws each field's width.")] = DEFAULTS.mutation_prob,
    param_budget: Annotated[
        int | None, typer.Option(help="Most embedding parameters a candidate may keep.", show_default=False)
    ] = None,
    target_sparsity: Annotated[
        float | None, typer.Option(help="Least sparsity a candidate must reach (a budget of (1-s)*rows*D).", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = DEFAULTS.seed,
    max_auc_drop: Annotated[
        str,
        typer.Option(
            help="Accuracy bound: return the SMALLEST model whose validation AUC is within this of the best "
            "candidate (row levels per field, then widths, sharing it: the widths get what the rows left). A multi-task supernet: every task's AUC within this of "
            "the reference candidate's (the one whose worst task is nearest that task's best); one value for all "
            "tasks or a comma list, one per task (primary first).",
            metavar="DROP[,DROP...]",
        ),
    ] = "0.001",
    noise_z: Annotated[
        float,
        typer.Option(
            help="Standard errors of a paired AUC difference (DeLong, same validation rows) subtracted before "
            "the --max-auc-drop test: small validation sets prune less. 0: point estimates.",
        ),
    ] = DEFAULTS.noise_z,
    max_auc: Annotated[
        bool,
        typer.Option("--max-auc", help="The paper's search instead: the supernet's learned row mask and the widths of highest AUC (several tasks: of highest mean AUC)."),
    ] = False,
    rows: Annotated[
        bool, typer.Option("--rows/--no-rows", help="Search per-field row levels (accuracy-bounded search of a row-pruning supernet).", rich_help_panel=PRUNING)
    ] = True,
    row_levels: Annotated[
        str,
        typer.Option(
            help="Fractions of a field's rows (its most important, see --row-rank) to try, comma-separated; 0 empties "
            f"a field (default: {', '.join(f'{q:g}' for q in stage.DEFAULT_LEVELS)}).",
            metavar="FRACTIONS", show_default=False, rich_help_panel=PRUNING,
        ),
    ] = ",".join(f"{q:g}" for q in stage.DEFAULT_LEVELS),
    row_rank: Annotated[
        RowRank, typer.Option(help="Which rows a level keeps: impact (training count x distance from the field's mean row) | norm (largest embedding norm, OptEmbed's criterion).", rich_help_panel=PRUNING)
    ] = RowRank.impact,
    min_traffic: Annotated[
        float, typer.Option(help="A positive row level keeps at least this fraction of its field's training traffic (more rows in ranking order if needed); 0: the row fraction alone. Emptying a field is not bound by it.", rich_help_panel=PRUNING)
    ] = stage.DEFAULT_MIN_TRAFFIC,
    rows_per_pass: Annotated[
        int | None, typer.Option(help="Rows (candidates x batch) per backbone call (default: 262144 CUDA, 4096 CPU).", show_default=False)
    ] = None,
    block: Annotated[
        int,
        typer.Option(
            help="Columns per block of the first layer that all candidates share (0: multiply each candidate's "
            "masked input by the whole layer; same scores up to rounding, slower).",
        ),
    ] = 16,
    device: DeviceOpt = "auto",
    amp: AmpOpt = "none",
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Search per-field row levels and widths on a supernet (no training): by default the smallest
    model within --max-auc-drop of the best validation AUC; --max-auc for the paper's search.

    Examples:

      optembed search --population 20 --generations 10

      optembed search --from 3fa2 --max-auc-drop 0.002 --no-rows
    """
    evolution = EvolutionConfig(
        population=population, generations=generations, topk=topk, crossover=crossover, mutation=mutation,
        mutation_prob=mutation_prob, param_budget=param_budget, target_sparsity=target_sparsity, seed=seed,
        max_auc_drop=None if max_auc else parse_tolerances(max_auc_drop), noise_z=noise_z,
    )
    config = stage.SearchStage(
        source=source, evolution=evolution, device=device, rows_per_pass=rows_per_pass, block=block,
        amp=str(amp), rows=rows, row_levels=parse_levels(row_levels), row_rank=str(row_rank), min_traffic=min_traffic, force=force,
    )
    config.validate()  # every option before the store is read
    ui.run_stage(stage.run, config, artifacts, json, render, stage.UPSTREAM, source)


def parse_levels(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"--row-levels takes comma-separated fractions, got {text!r}") from None
    if not levels:
        raise typer.BadParameter("--row-levels needs at least one fraction")
    return levels


def render(manifest: Manifest) -> None:
    rows = stage.read_convergence(manifest)
    table = Table(title="search convergence", header_style="bold")
    for col in ("generation", "chosen val AUC", "mean val AUC", "chosen params", "sparsity", "new evals", "seconds"):
        table.add_column(col, justify="right")
    step = max(1, len(rows) // 15)
    shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    for r in shown:
        table.add_row(
            str(r["generation"]), f"{r['best_auc']:.5f}", f"{r['mean_auc']:.5f}", f"{r['best_params']:,}",
            f"{r['best_sparsity']:.4f}", str(r["evaluated"]), f"{r['seconds']:.2f}",
        )
    ui.out.print(table)
    tasks = manifest.metrics.get("tasks") or {}
    if tasks:
        by_task = Table(title="chosen candidate per task (validation)", header_style="bold")
        for col in ("task", "val AUC", "reference", "best seen", "full width", "max drop"):
            by_task.add_column(col, justify="left" if col == "task" else "right")
        for name, r in tasks.items():
            drop, ref = r.get("max_auc_drop"), r.get("reference_val_auc")
            by_task.add_row(name, f"{r['best_val_auc']:.5f}", "-" if ref is None else f"{ref:.5f}", f"{r['max_val_auc']:.5f}",
                            f"{r['full_width_val_auc']:.5f}", "-" if drop is None else f"{drop:g}")
        ui.out.print(by_task)
    levels = stage.read_row_levels(manifest)
    if levels:
        rows_table = Table(title="row levels (fraction of a field's rows kept, top by norm)", header_style="bold")
        for col in ("field", "rows", "kept", "level"):
            rows_table.add_column(col, justify="left" if col == "field" else "right")
        for r in levels:
            if r["level"] < 1.0:
                rows_table.add_row(r["field"], f"{r['rows']:,}", f"{r['kept']:,}", "emptied" if r["level"] == 0 else f"{r['level']:g}")
        rows_table.caption = f"{sum(r['level'] == 1.0 for r in levels)} other fields keep every row"
        ui.out.print(rows_table)
    ui.out.print(ui.metrics_table("search", manifest.metrics))
