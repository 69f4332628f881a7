"""``optembed search``: evolutionary search of one embedding width per field on a supernet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from optembed.evolution import EvolutionConfig
from optembed_cli import ui
from optembed_cli.options import ArtifactsOpt, ForceOpt, FromOpt, JsonOpt
from optembed_cli.training_options import AmpOpt, DeviceOpt
from pipelines import search as stage
from pipelines.store import Manifest

DEFAULTS = EvolutionConfig()


@ui.handle_errors
def search(
    source: FromOpt = None,
    population: Annotated[int, typer.Option(help="Candidates per generation (and random ones at the start).")] = DEFAULTS.population,
    generations: Annotated[int, typer.Option(help="Generations after the random one.")] = DEFAULTS.generations,
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
    """Search the widths that keep the supernet's validation AUC highest (no training)."""
    evolution = EvolutionConfig(
        population=population, generations=generations, topk=topk, crossover=crossover, mutation=mutation,
        mutation_prob=mutation_prob, param_budget=param_budget, target_sparsity=target_sparsity, seed=seed,
    )
    config = stage.SearchStage(
        source=source, evolution=evolution, device=device, rows_per_pass=rows_per_pass, block=block,
        amp=amp, force=force,
    )
    config.validate()  # every option before the store is read
    ui.run_stage(stage.run, config, artifacts, json, render, stage.UPSTREAM, source)


def render(manifest: Manifest) -> None:
    rows = stage.read_convergence(manifest)
    table = Table(title="search convergence", header_style="bold")
    for col in ("generation", "best val AUC", "mean val AUC", "best params", "sparsity", "new evals", "seconds"):
        table.add_column(col, justify="right")
    step = max(1, len(rows) // 15)
    shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    for r in shown:
        table.add_row(
            str(r["generation"]), f"{r['best_auc']:.5f}", f"{r['mean_auc']:.5f}", f"{r['best_params']:,}",
            f"{r['best_sparsity']:.4f}", str(r["evaluated"]), f"{r['seconds']:.2f}",
        )
    ui.out.print(table)
    ui.out.print(ui.metrics_table("search", manifest.metrics))
