"""`optembed run CONFIG.toml`: malformed configurations fail with one line before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

CASES = [
    ('data = "train.txt"\n', "'data' must be a [data] table, got str"),
    ('supernet = 3\n[data]\npath = "train.txt"\n', "'supernet' must be a [supernet] table, got int"),
    ('[data]\npath = "train.txt"\n[supernet]\nepochs = 2.5\n', "[supernet] epochs = 2.5 should be of type int"),
    ('[data]\npath = "train.txt"\n[model]\nembed_dim = "x"\n', "[model] embed_dim = 'x' should be of type int"),
    ('[data]\npath = "train.txt"\n[retrain]\nlr = "fast"\n', "[retrain] lr = 'fast' should be of type float"),
    ('[data]\npath = "train.txt"\n[search]\npopulation = "many"\n', "[search] population = 'many' should be of type int"),
    ('[data]\npath = "train.txt"\n[search]\npopulation = 4\ntopk = 9\n', "[search] topk = 9 must be in 1..population (4), got 9"),
    ("[data]\npath = 42\n", "[data] path = 42 should be a file name"),
    ('[data]\npath = "missing.txt"\n', "input file not found"),
    ('[data]\npath = "train.txt"\nsplit = "abc"\n', "[data] split = 'abc' should be of type list of 3 float"),
    ('[data]\npath = "train.txt"\nsplit = [nan, 0.1, 0.1]\n', "[data] split = [nan, 0.1, 0.1] must be a finite number, got nan"),
    ('[data]\npath = "train.txt"\nmemory_limit = 2\n', "[data] memory_limit = 2 should be of type str"),
    ('[data]\npath = "train.txt"\n[model]\nmlp_dims = [8, "x"]\n', "[model] mlp_dims = [8, 'x'] should be of type list of int"),
    ('[data]\npath = "train.txt"\n[model]\ndropout = nan\n', "dropout must be a finite number"),
    ('[data]\npath = "train.txt"\n[supernet]\nlr = nan\n', "[supernet] lr = nan must be a finite number, got nan"),
    ('[data]\npath = "train.txt"\n[retrain]\nalpha = inf\n', "[retrain] alpha = inf must be a finite number, got inf"),
    ('[data]\npath = "train.txt"\n[supernet]\nbatch_size = 1000000000000\n', "[supernet] batch_size = 1000000000000"),
    ('[data]\npath = "train.txt"\n[search]\npopulation = 100000000000\ntopk = 2\n', "[search] population = 100000000000"),
    ('[data]\npath = "train.txt"\n[search]\nmutation_prob = nan\n', "[search] mutation_prob = nan must be a finite number"),
    ('[data]\npath = "train.txt"\n[search]\nrows_per_pass = "x"\n', "[search] rows_per_pass = 'x' should be of type int"),
    ('[data]\npath = "train.txt"\n[compress]\nvariants = "optembed"\n', "[compress] variants = 'optembed' should be of type list of str"),
    ('[data]\npath = "train.txt"\n[compress]\nfinetune_lr = "x"\n', "[compress] finetune_lr = 'x' should be of type float"),
    ('[data]\npath = "train.txt"\n[run]\nvariants = "optembed"\n', "[run] variants = 'optembed' should be of type list of str"),
    ('[data]\npath = "train.txt"\n[run]\nplot = "yes"\n', "[run] plot = 'yes' should be of type bool"),
    ('[data]\npath = "train.txt"\n[run]\ndevice = "tpu"\n', "unknown device 'tpu'"),
]


@pytest.mark.parametrize("text,message", CASES)
def test_bad_configuration_is_one_line_and_writes_nothing(tmp_path: Path, cli, text: str, message: str) -> None:
    (tmp_path / "train.txt").write_text("0\t" + "\t".join(["1"] * 13 + ["a"] * 26) + "\n")
    config = tmp_path / "run.toml"
    config.write_text(text)
    root = tmp_path / "artifacts"
    res = cli("run", config, "--artifacts", root)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not list(root.glob("*/*/manifest.json"))


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("binary.toml", b"\x00\x01\xff\xfe" * 16, "not a TOML text file"),
        ("nul.toml", b"[data]\x00\n", "not a TOML text file"),
        ("big.toml", b"# " + b"x" * (2 << 20) + b"\n", "too many for a TOML configuration"),
        ("missing.toml", None, "configuration file not found"),
        ("folder.toml", "folder", "is a folder"),
    ],
)
def test_unreadable_configuration_is_one_line(tmp_path: Path, cli, name: str, content: bytes | str | None, message: str) -> None:
    config = tmp_path / name
    if content == "folder":
        config.mkdir()
    elif isinstance(content, bytes):
        config.write_bytes(content)
    root = tmp_path / "artifacts"
    res = cli("run", config, "--artifacts", root)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not root.exists() or not list(root.glob("*/*"))


def test_float_keys_accept_integers(tmp_path: Path) -> None:
    from pipelines.chain import load_config

    config = tmp_path / "run.toml"
    config.write_text('[data]\npath = "train.txt"\n[supernet]\nlr = 1\nalpha = 0\n[model]\nmlp_dims = [8, 4]\n')
    cfg = load_config(config)
    assert cfg.supernet.lr == 1 and cfg.supernet.alpha == 0 and tuple(cfg.model.mlp_dims) == (8, 4)
