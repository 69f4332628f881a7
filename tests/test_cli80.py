"""80 columns and the ``run`` options: tables and progress bars that wrap instead of cutting
(no '…'), ``run --data`` with csv options and a JSON row per variant, errors that name the
configuration's keys, and the messages of a file in another format or a folder without a bundle."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from optembed.errors import ConfigError
from optembed_cli.commands.evaluate import comparison_table
from optembed_cli.ui import progress_bars, short_count
from pipelines.run_schema import as_keys
from pipelines.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _render(renderable: object, width: int = 80) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue()


def _row(variant: str, model: str = "deepfm") -> dict:
    return {"variant": variant, "id": "0123456789abcdef", "model": model, "test_auc": 0.801234, "test_auc_se": 0.0021,
            "test_logloss": 0.443211, "sparsity": 0.912345, "embedding_bytes": 123_456_789, "ratio_vs_original": 123.4}


def test_comparison_table_fits_80_columns_and_cuts_nothing() -> None:
    rows = [_row("original"), _row("optembed (no retrain) [abc123]"), _row("optembed-e + pq"), _row("autodim", "dcn")]
    split = {"rows": 1_234_567, "positives": 234_567, "base_rate_logloss": 0.4567, "train_positive_ratio": 0.19}
    text = _render(comparison_table(rows, split))
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("123.4x") == len(rows)  # the last column is whole on every row
    flat = " ".join(text.split())
    for word in ("optembed", "retrain)", "[abc123]", "0.8012 ±0.0041", "01234567", "118 MB", "123.4x", "autodim (dcn)"):
        assert word in flat, word


@pytest.mark.parametrize("description", ["supernet optembed epoch 12/50", "search optembed: row levels 13/26"])
def test_progress_bar_keeps_to_one_line_at_80_columns(description: str) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    bars = progress_bars(console)
    task = bars.add_task(description, total=1_234_567, unit="sample")
    bars.advance(task, 600_000)
    bars.tasks[0].finished_speed = 123_456.0  # a measured rate, so its cell is as wide as it gets
    console.print(bars.get_renderable())
    lines = buf.getvalue().rstrip("\n").splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert "…" not in lines[0] and description in lines[0]
    assert "600k/1.23M" in lines[0] and "123.46k sample/s" in lines[0]


def test_short_counts() -> None:
    assert [short_count(v) for v in (0, 950, 12_345, 600_000, 1_234_567, 25e9)] == ["0", "950", "12.3k", "600k", "1.23M", "25.0G"]


def test_flags_said_as_toml_keys() -> None:
    class Data:
        label = None
        split = (float("nan"), 0.1, 0.1)
        fmt = "criteo"

    said = as_keys("--label is required: no 'label' column", "data", Data(), aliases={"fmt": "format"})
    assert said == "[data] label = ... is required: no 'label' column"
    assert as_keys("--split must be finite", "data", Data()) == "[data] split = [nan, 0.1, 0.1] must be finite"
    assert as_keys("pass --format csv --label COLUMN", "data", Data(), aliases={"fmt": "format"}) == (
        'pass [data] format = "criteo" [data] label = COLUMN'
    )
    assert as_keys("--nproc is no key", "data", Data()) == "--nproc is no key"  # not a key of the section: kept


def _planted_csv(path: Path, rows: int = 1500, seed: int = 0) -> Path:
    """A csv whose label follows field ``a`` (a learnable signal) with a noise field and a number."""
    rng = random.Random(seed)
    lines = ["y,a,noise,price"]
    for _ in range(rows):
        a = rng.randrange(12)
        y = int(rng.random() < (0.8 if a < 6 else 0.2))
        lines.append(f"{y},a{a},n{rng.randrange(30)},{rng.randrange(200)}")
    path.write_text("\n".join(lines) + "\n")
    return path


RUN = ("--format", "csv", "--label", "y", "--numeric", "price", "--fields", "a,noise,price", "--seed", "5",
       "--epochs", "1", "--batch-size", "64", "--population", "4", "--generations", "1", "--embed-dim", "4",
       "--mlp", "16", "--device", "cpu", "--variants", "original,optembed,optembed-noretrain", "--no-latency")


def test_run_data_csv_options_json_rows_and_80_columns(tmp_path: Path, cli) -> None:
    data = _planted_csv(tmp_path / "clicks.csv")
    root = tmp_path / "artifacts"
    res = cli("run", "--data", data, *RUN, "--artifacts", root, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    store = Store(root)
    pre = store.list("preprocess")[-1]
    assert pre.params["label"] == "y" and pre.params["numeric"] == ["price"] and pre.params["fields"] == ["a", "noise", "price"]
    assert {m.params["train"]["seed"] for m in store.list("supernet") + store.list("retrain")} == {5}
    # every variant under its --variants name, matching the evaluation's own rows
    assert list(out["variants"]) == ["original", "optembed", "optembed-noretrain"]
    rows = {r["id"]: r for r in json.loads(store.list("evaluate")[-1].output("metrics").read_text())["models"]}
    retrains = {m.metrics["variant"]: m.fingerprint for m in store.list("retrain")}
    assert out["variants"]["original"]["id"] == retrains["original"]
    assert out["variants"]["optembed"]["id"] == retrains["optembed"]
    assert out["variants"]["optembed-noretrain"]["id"] == store.list("search")[-1].fingerprint
    for name, row in out["variants"].items():
        ref = rows[row["id"]]
        assert (row["test_auc"], row["test_logloss"], row["embedding_bytes"], row["sparsity"]) == (
            ref["test_auc"], ref["test_logloss"], ref["embedding_bytes"], ref["sparsity"]), name
    assert out["variants"]["original"]["test_auc"] > 0.7  # the planted signal was learned
    # the same run (cached) as text at 80 columns: nothing cut, in the tables or the store listing
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    for args in (("run", "--data", str(data), *RUN, "--artifacts", str(root)), ("artifacts", "--artifacts", str(root))):
        proc = subprocess.run([sys.executable, "-m", "optembed_cli", *args], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "…" not in proc.stdout and proc.stdout.strip(), proc.stdout
    assert "evaluation (test split)" in proc.stdout or "artifacts in" in proc.stdout


def test_run_label_missing_in_toml_names_the_key(tmp_path: Path, cli) -> None:
    data = _planted_csv(tmp_path / "clicks.csv", rows=50)
    config = tmp_path / "run.toml"
    config.write_text('[data]\npath = "clicks.csv"\nformat = "csv"\n')
    res = cli("run", config, "--artifacts", tmp_path / "artifacts")
    assert res.exit_code == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "[data] label =" in line and "--label" not in line and str(config) in line, line
    flags = cli("run", config, "--label", "y", "--artifacts", tmp_path / "artifacts")
    assert flags.exit_code == 2 and "--label applies to runs without a configuration file" in flags.stderr
    assert data.exists()


def test_run_without_label_asks_for_the_flag(tmp_path: Path, cli) -> None:
    data = _planted_csv(tmp_path / "clicks.csv", rows=50)
    res = cli("run", "--data", data, "--format", "csv", "--artifacts", tmp_path / "artifacts")
    assert res.exit_code == 2 and "--label" in res.stderr.strip().splitlines()[-1]


def test_csv_read_as_criteo_says_it_looks_like_csv(tmp_path: Path, cli) -> None:
    data = _planted_csv(tmp_path / "clicks.csv", rows=50)
    res = cli("preprocess", data, "--format", "criteo", "--artifacts", tmp_path / "artifacts")
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "looks like csv" in lines[0] and "--format csv" in lines[0] and "--skip-bad-rows" not in lines[0], lines[0]


def test_predict_folder_without_bundle_json(tmp_path: Path, cli) -> None:
    root = tmp_path / "artifacts"
    for folder in (tmp_path / "bundle", root / "somewhere"):  # outside and inside the store alike
        folder.mkdir(parents=True)
        res = cli("predict", folder, tmp_path / "x.txt", "--out", tmp_path / "s.parquet", "--artifacts", root)
        assert res.exit_code == 2
        line = res.stderr.strip()
        assert "bundle.json" in line and "store" not in line, line


def test_run_unknown_variant_suggests_the_nearest() -> None:
    from pipelines.chain import ChainConfig

    with pytest.raises(ConfigError, match="did you mean 'optembed-noretrain'"):
        ChainConfig(data=Path("x.txt"), variants=("optembed-noretrian",)).validate()
