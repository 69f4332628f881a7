"""The README's first command: `optembed demo` runs the whole chain (small here) and ends with a table."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.store import Store


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
    again = cli("demo", "--rows", "20000", "--epochs", "1", "--device", "cpu", "--artifacts", root)
    assert again.exit_code == 0 and "(cached)" in again.output
