"""The instant help: ``optembed --help`` imports no torch; commands are built from their modules
when needed; the parser's written-out choices are the core's; a bad choice is one line that
suggests the nearest one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer

from optembed_cli.option_groups import Option, OptionGroup, Values, with_groups

ROOT = Path(__file__).resolve().parent.parent


def _imported(*args: str) -> set[str]:
    """The modules ``python -X importtime -m optembed_cli ARGS`` imports (from its stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "optembed_cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:") and "|" in ln]
    assert lines, "no import-time lines: -X importtime did not run"
    return {ln.rsplit("|", 1)[1].strip() for ln in lines}


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("preprocess", "--help"), ("artifacts", "--help")])
def test_help_imports_no_torch(args: tuple[str, ...]) -> None:
    modules = _imported(*args)
    assert "optembed_cli.main" in modules  # the command line did load
    heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "duckdb", "pyarrow") and args[0] == "--help")
    assert not [m for m in modules if m.split(".")[0] == "torch"], "torch imported"
    assert not heavy, heavy


def test_top_help_lists_every_command_with_its_docstring(cli) -> None:
    """The placeholders' text (read from the source) is what the imported command says."""
    import importlib
    import inspect

    from optembed_cli.lazy import reflow
    from optembed_cli.main import COMMANDS

    res = cli("--help")
    assert res.exit_code == 0
    flat = " ".join(res.stdout.replace("│", " ").split())
    for entry in COMMANDS:
        func = getattr(importlib.import_module(entry.module), entry.function)
        first = reflow(inspect.getdoc(func) or "").split("\n\n")[0]
        assert " ".join(first.split()) in flat, entry.name


def test_written_out_choices_are_the_cores() -> None:
    from optembed.export.bundle import RUNTIMES
    from optembed_cli.options import INITS, STAGES
    from optembed_cli.options import RUNTIMES as CLI_RUNTIMES
    from pipelines import baseline, compress, evaluate, export, preprocess, retrain, search, supernet

    assert INITS == retrain.INITS
    assert set(STAGES) == {m.STAGE for m in (preprocess, supernet, search, retrain, baseline, compress, evaluate, export)}
    assert CLI_RUNTIMES == RUNTIMES


def test_option_groups_take_the_dataclass_defaults(cli) -> None:
    """The defaults the help shows are the configuration dataclasses' own."""
    from optembed.models.config import ModelConfig
    from optembed.training.config import TrainConfig
    from optembed_cli.training_options import MODEL_OPTIONS, TRAINING_OPTIONS

    from optembed_cli.training_options import parse_task_weights

    train = {o.name: o.default for o in TRAINING_OPTIONS.options}
    train["task_weights"] = parse_task_weights(train["task_weights"])  # the option takes a comma list
    assert all(train[k] == getattr(TrainConfig(), k) for k in train) and len(train) >= 10
    model = {o.name: o.default for o in MODEL_OPTIONS.options}
    assert model["embed_dim"] == ModelConfig("deepfm").embed_dim
    assert model["mlp"] == ",".join(map(str, ModelConfig("deepfm").mlp_dims))
    for command in ("supernet", "retrain", "baseline"):
        res = cli(command, "--help")
        assert res.exit_code == 0 and "--embed-dim" in res.stdout and "--lr-decay" in res.stdout


def test_option_group_expands_and_gathers() -> None:
    """A group's options become the command's parameters; the command gets them as one dict."""
    import inspect

    grp = OptionGroup((Option("a", Annotated[int, typer.Option()], 1), Option("b", Annotated[str, typer.Option()], "x")))
    seen: list[dict] = []

    @with_groups(g=grp)
    def command(first: int = 0, *, g: Values, last: bool = False) -> None:
        seen.append({"first": first, "g": g, "last": last})

    assert list(inspect.signature(command).parameters) == ["first", "a", "b", "last"]
    command(first=3, a=5, b="y", last=True)
    assert seen == [{"first": 3, "g": {"a": 5, "b": "y"}, "last": True}]
    with pytest.raises(TypeError, match="declared twice"):
        with_groups(g=grp)(lambda *, g, a=1: None)


@pytest.mark.parametrize(("args", "line"), [
    (("retrain", "--init", "rewnd"),
     "error: --init: 'rewnd' is not one of auto, fresh, rewind, supernet; did you mean 'rewind'?"),
    (("supernet", "--mode", "prune"),
     "error: --mode: 'prune' is not one of optembed, prune-only, dims-only, none; did you mean 'prune-only'?"),
    (("artifacts", "--stage", "retrian"), "did you mean 'retrain'?"),
    (("preprocess", "x.txt", "--format", "cvs"), "error: --format: 'cvs' is not one of criteo, avazu, kdd12, csv, parquet; did you mean 'csv'?"),
    (("supernet", "--model", "xgboost"), "error: --model: 'xgboost' is not one of fnn, deepfm, dcn, ipnn"),
])
def test_bad_choice_is_one_line_with_the_nearest(cli, args: tuple[str, ...], line: str) -> None:
    res = cli(*args)
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and line in lines[0], res.stderr
    if "xgboost" in args:
        assert "did you mean" not in lines[0]  # nothing close: no guess


def test_did_you_mean_picks_the_closest() -> None:
    from optembed_cli.suggest import did_you_mean, not_one_of

    assert did_you_mean("rewnd", ["auto", "fresh", "rewind", "supernet"]) == "rewind"
    assert did_you_mean("SUPERNT", ["auto", "supernet"]) == "supernet"
    assert did_you_mean("zzz", ["auto", "fresh"]) is None
    assert not_one_of("--x", "a", ["b"]) == "--x: 'a' is not one of b"
