"""``optembed synth``: generate synthetic CTR data in a raw format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from optembed_cli import ui
from optembed_cli.options import SynthFormat


@ui.handle_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Output file.", show_default=False)],
    rows: Annotated[int, typer.Option(help="Number of rows.")] = 100_000,
    format: Annotated[SynthFormat, typer.Option("--format", "-f", help="Raw format to write.")] = "criteo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    tasks: Annotated[
        int,
        typer.Option(
            help="Labels: 1, or 2 for a click and a sparse conversion among the clicks (a CSV with a header; "
            "preprocess it with --label click,convert).",
            min=1,
        ),
    ] = 1,
) -> None:
    """Write synthetic data with planted structure (and OUT.truth.json describing it).

    Examples:

      optembed synth data.txt --rows 200000

      optembed synth clicks.csv --format avazu

      optembed synth conversions.csv --tasks 2
    """
    from optembed.data.synth import generate

    start = time.perf_counter()
    truth = generate(out, rows, fmt=str(format), seed=seed, tasks=tasks)
    ui.out.print(
        f"wrote {rows:,} {format} rows to {out} in {ui.elapsed(start)} "
        f"(positive ratio {truth.positive_ratio:.3f}, noise fields: {', '.join(truth.noise_fields)})"
    )
    if truth.tasks is not None:
        ratios = ", ".join(f"{name} {rate:.3f}" for name, rate in truth.tasks["positive_ratio"].items())
        ui.out.print(f"labels: {ratios}; preprocess with --label {','.join(truth.tasks['names'])}")
