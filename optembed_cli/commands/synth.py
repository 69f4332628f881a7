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
) -> None:
    """Write synthetic data with planted structure (and OUT.truth.json describing it).

    Examples:

      optembed synth data.txt --rows 200000

      optembed synth clicks.csv --format avazu
    """
    from optembed.data.synth import generate

    start = time.perf_counter()
    truth = generate(out, rows, fmt=str(format), seed=seed)
    ui.out.print(
        f"wrote {rows:,} {format} rows to {out} in {ui.elapsed(start)} "
        f"(positive ratio {truth.positive_ratio:.3f}, noise fields: {', '.join(truth.noise_fields)})"
    )
