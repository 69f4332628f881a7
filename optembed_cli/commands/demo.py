"""``optembed demo``: the whole pipeline on a generated synthetic Criteo-format file."""

from __future__ import annotations

from typing import Annotated

import typer

from optembed.data.preprocess import PreprocessConfig
from optembed_cli import ui
from optembed_cli.commands import preprocess as preprocess_cmd
from optembed_cli.options import ArtifactsOpt, ForceOpt, open_store
from pipelines import preprocess


@ui.handle_errors
def demo(
    rows: Annotated[int, typer.Option(help="Rows of synthetic Criteo-format data to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
) -> None:
    """Generate a small synthetic Criteo file and run every stage on it."""
    from optembed.data.synth import generate

    store = open_store(artifacts)
    data = store.root / "_data" / f"synth-criteo-{rows}-s{seed}.txt"
    if not data.exists() or force:
        data.parent.mkdir(parents=True, exist_ok=True)
        ui.out.print(f"[bold]1. synth[/]: generating {rows:,} rows -> {data}")
        tmp = data.with_name(data.name + ".partial")
        generate(tmp, rows, fmt="criteo", seed=seed)
        tmp.with_name(tmp.name + ".truth.json").replace(data.with_name(data.name + ".truth.json"))
        tmp.replace(data)
    else:
        ui.out.print(f"[bold]1. synth[/]: reusing {data}")
    ui.out.print("[bold]2. preprocess[/]")
    with ui.reporter() as rep:
        manifest = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig(fmt="criteo"), force=force), store, rep)
    ui.announce(manifest, False)
    preprocess_cmd.render(manifest)
