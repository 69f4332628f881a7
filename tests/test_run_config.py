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
    ('[data]\npath = "train.txt"\n[search]\npopulation = 4\ntopk = 9\n', "--topk must be in 1..population (4), got 9"),
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


def test_float_keys_accept_integers(tmp_path: Path) -> None:
    from pipelines.chain import load_config

    config = tmp_path / "run.toml"
    config.write_text('[data]\npath = "train.txt"\n[supernet]\nlr = 1\nalpha = 0\n[model]\nmlp_dims = [8, 4]\n')
    cfg = load_config(config)
    assert cfg.supernet.lr == 1 and cfg.supernet.alpha == 0 and tuple(cfg.model.mlp_dims) == (8, 4)
