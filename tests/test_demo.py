"""The README's first command: `optembed demo` runs the whole chain (small here) and ends with a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optembed_cli.commands.demo import FULL, QUICK, demo_config
from optembed.training.diagnostics import too_few_steps
from pipelines.chain import plan
from pipelines.store import Store


def test_quick_preset_is_small_and_shows_every_variant() -> None:
    assert QUICK.rows < FULL.rows and QUICK.epochs <= FULL.epochs and QUICK.embed_dim <= FULL.embed_dim
    for preset in (QUICK, FULL):  # enough optimizer steps per epoch to learn (no warning)
        assert too_few_steps(int(preset.rows * 0.8), preset.batch_size) is None
    steps = plan(demo_config(QUICK, QUICK.rows, QUICK.epochs, "cpu", Path("x.txt")))
    assert {"retrain original", "retrain optembed-e", "retrain optembed-d", "retrain optembed"} <= set(steps)
    assert {"compress original", "compress optembed"} <= set(steps)


@pytest.mark.slow
def test_demo_runs_every_stage_and_compares_the_variants(tmp_path: Path, cli) -> None:
    root = tmp_path / "artifacts"
    res = cli("demo", "--rows", "20000", "--epochs", "1", "--device", "cpu", "--artifacts", root)
    assert res.exit_code == 0, res.output
    store = Store(root)
    stages = {m.stage for m in store.list()}
    assert stages == {"preprocess", "supernet", "search", "retrain", "compress", "evaluate"}
    rows = json.loads(store.list("evaluate")[-1].output("metrics").read_text())["models"]
    variants = {r["variant"] for r in rows}
    assert {"original", "optembed-e", "optembed-d", "optembed", "original + pq", "optembed + pq"} <= variants
    assert "evaluation (test split)" in res.stdout
    assert "OptEmbed-E: row pruning only" in res.stdout and "ratio:" in res.stdout  # the legend
    assert "plan: 14 stages" in res.stderr and "[14/14] evaluate" in res.stderr
    assert "latency_p50_ms" not in rows[0]  # not measured on a CPU by default
    again = cli("demo", "--rows", "20000", "--epochs", "1", "--device", "cpu", "--artifacts", root)
    assert again.exit_code == 0 and "(cached)" in again.output
