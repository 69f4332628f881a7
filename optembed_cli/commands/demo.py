"""``optembed demo``: the whole pipeline on a generated synthetic Criteo-format file."""

from __future__ import annotations

from typing import Annotated

import typer

from optembed.data.preprocess import PreprocessConfig
from optembed.errors import ConfigError
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from optembed_cli import ui
from optembed_cli.commands.run import run_chain
from optembed_cli.options import ArtifactsOpt, open_store
from pipelines import chain


@ui.handle_errors
def demo(
    rows: Annotated[int, typer.Option(help="Rows of synthetic Criteo-format data to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    epochs: Annotated[int, typer.Option(help="Epochs of each supernet and retrain.")] = 4,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    artifacts: ArtifactsOpt = None,
) -> None:
    """Generate a small synthetic Criteo file and run every stage on it, ending with a comparison."""
    from optembed.data.synth import generate
    from optembed.training.device import resolve_device

    if rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    TrainConfig(epochs=epochs, batch_size=2048).validate()
    resolve_device(device)
    store = open_store(artifacts)
    data = store.root / "_data" / f"synth-criteo-{rows}-s{seed}.txt"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        ui.out.print(f"generating {rows:,} synthetic Criteo rows -> {data}")
        tmp = data.with_name(data.name + ".partial")
        generate(tmp, rows, fmt="criteo", seed=seed)
        tmp.with_name(tmp.name + ".truth.json").replace(data.with_name(data.name + ".truth.json"))
        tmp.replace(data)
    else:
        ui.out.print(f"reusing {data}")
    cfg = chain.ChainConfig(
        data=data,
        preprocess=PreprocessConfig(fmt="criteo"),
        model=ModelConfig("deepfm", embed_dim=16, mlp_dims=(128, 64)),
        supernet=TrainConfig(epochs=epochs, batch_size=2048),
        retrain=TrainConfig(epochs=epochs, batch_size=2048),
        search={"population": 20, "generations": 8, "topk": 8},
        # the demo's tables are small and grow with its rows: quantize every field over rows / 50
        # rows (2,000 for 100,000 rows), 64 codes of 2 groups
        compress={"variants": ["original", "optembed"], "min_rows": demo_min_rows(rows), "groups": 2, "codebook": 64},
        device=device,
        plot=_has_matplotlib(),
    )
    run_chain(cfg, artifacts, quiet=False)
    ui.out.print("see all artifacts with: optembed artifacts" + (f" --artifacts {artifacts}" if artifacts else ""))


def demo_min_rows(rows: int) -> int:
    """The demo's ``compress`` floor: fields with more than ``rows / 50`` rows are quantized."""
    return max(100, rows // 50)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
