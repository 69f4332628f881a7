"""``optembed demo``: the whole pipeline on a generated synthetic Criteo-format file.

Two presets: the quick one (the default; a few minutes on two CPU cores) and ``--full`` (more
rows, a wider model, more epochs and generations). Both show every variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ConfigError
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from optembed_cli import ui
from optembed_cli.commands.run import run_chain
from optembed_cli.options import ArtifactsOpt, DeviceOpt, open_store
from pipelines import chain


@dataclass(frozen=True)
class Preset:
    rows: int
    epochs: int
    batch_size: int
    embed_dim: int
    mlp: tuple[int, ...]
    population: int
    generations: int
    topk: int


QUICK = Preset(rows=30_000, epochs=1, batch_size=256, embed_dim=8, mlp=(64, 32), population=10, generations=4, topk=5)
FULL = Preset(rows=100_000, epochs=4, batch_size=1024, embed_dim=16, mlp=(128, 64), population=20, generations=8, topk=8)


@ui.handle_errors
def demo(
    full: Annotated[
        bool, typer.Option("--full", help="The larger preset (100,000 rows, 4 epochs, a wider model): tens of minutes on a CPU.")
    ] = False,
    rows: Annotated[
        int | None, typer.Option(help="Rows of synthetic Criteo-format data (default: 30,000; 100,000 with --full).", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs of each supernet and retrain (default: 1; 4 with --full).", show_default=False)
    ] = None,
    device: DeviceOpt = "auto",
    artifacts: ArtifactsOpt = None,
) -> None:
    """Generate a small synthetic Criteo file and run every stage on it, ending with a comparison.

    The quick preset (default) takes about 3 minutes on two idle CPU cores; --full about 15-50.

    Examples:

      optembed demo

      optembed demo --full --device cuda
    """
    from optembed.data.synth import generate
    from optembed.training.device import resolve_device

    preset = FULL if full else QUICK
    rows = preset.rows if rows is None else rows
    epochs = preset.epochs if epochs is None else epochs
    if rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    TrainConfig(epochs=epochs, batch_size=preset.batch_size).validate()
    resolve_device(device)
    store = open_store(artifacts)
    data = store.root / "_data" / f"synth-criteo-{rows}-s{seed}.txt"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        ui.info(f"generating {rows:,} synthetic Criteo rows -> {data}")
        tmp = data.with_name(data.name + ".partial")
        generate(tmp, rows, fmt="criteo", seed=seed)
        tmp.with_name(tmp.name + ".truth.json").replace(data.with_name(data.name + ".truth.json"))
        tmp.replace(data)
    else:
        ui.info(f"reusing {data}")
    cfg = demo_config(preset, rows, epochs, device, data)
    ui.info(
        f"demo preset: {'full' if full else 'quick'} ({rows:,} rows, {epochs} epoch{'s' if epochs != 1 else ''}, "
        f"embedding width {preset.embed_dim}, search {preset.population} x {preset.generations} generations)"
        + ("" if full else "; --full runs the larger one")
    )
    run_chain(cfg, artifacts, as_json=False)
    ui.info("see all artifacts with: optembed artifacts" + (f" --artifacts {artifacts}" if artifacts else ""))


def demo_config(preset: Preset, rows: int, epochs: int, device: str, data: object) -> chain.ChainConfig:
    """The chain the demo runs for ``preset`` (with ``rows`` and ``epochs`` as given)."""
    from pathlib import Path

    train = TrainConfig(epochs=epochs, batch_size=preset.batch_size)
    return chain.ChainConfig(
        data=Path(str(data)),
        preprocess=PreprocessConfig(fmt="criteo"),
        model=ModelConfig("deepfm", embed_dim=preset.embed_dim, mlp_dims=preset.mlp),
        supernet=train,
        retrain=TrainConfig(epochs=epochs, batch_size=preset.batch_size),
        search={"population": preset.population, "generations": preset.generations, "topk": preset.topk},
        # the demo's tables are small and grow with its rows: quantize every field over rows / 50
        # rows (2,000 for 100,000 rows), 64 codes of 2 groups
        compress={"variants": ["original", "optembed"], "min_rows": demo_min_rows(rows), "groups": 2, "codebook": 64},
        device=device,
        plot=_has_matplotlib(),
    )


def demo_min_rows(rows: int) -> int:
    """The demo's ``compress`` floor: fields with more than ``rows / 50`` rows are quantized."""
    return max(100, rows // 50)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
