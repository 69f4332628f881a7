"""Bad option values are refused before any work: one stderr line, exit code 2, no artifact.

A sample of scripts/faults.py's matrix, run in-process; plus the checks themselves (finite
numbers in range, output paths, memory estimates that refuse absurd sizes only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optembed.errors import ConfigError
from optembed.validation import (
    check_number,
    check_output_file,
    check_search_memory,
    check_training_memory,
    search_bytes,
    training_bytes,
)

BIG = str(10**12)
TINY = ["--embed-dim", "4", "--mlp", "8", "--epochs", "1", "--device", "cpu"]
GIB = 1 << 30


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A tiny preprocess and supernet artifact (the stages' checks read their schema)."""
    from optembed.data.preprocess import PreprocessConfig
    from optembed.data.synth import generate
    from optembed.models.config import ModelConfig
    from optembed.training.config import TrainConfig
    from pipelines import preprocess, supernet
    from pipelines.store import Store

    root = tmp_path_factory.mktemp("bad-values")
    data = root / "synth.txt"
    generate(data, 1500, fmt="criteo", seed=1)
    store = Store(root / "artifacts")
    pre = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig()), store)
    sn = supernet.run(
        supernet.SupernetStage(
            model=ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)),
            train=TrainConfig(epochs=1, batch_size=512),
            source=pre.fingerprint,
            device="cpu",
        ),
        store,
    )
    return store.root, {"data": str(data), "preprocess": pre.fingerprint, "supernet": sn.fingerprint}


def artifact_folders(root: Path) -> set[Path]:
    return set(root.glob("*/*")) if root.exists() else set()


CASES: dict[str, tuple[list[str], str]] = {
    "supernet lr nan": (["supernet", *TINY, "--lr", "nan"], "--lr must be a finite number, got nan"),
    "supernet lr inf": (["supernet", *TINY, "--lr", "inf"], "--lr must be a finite number, got inf"),
    "supernet lr negative": (["supernet", *TINY, "--lr", "-1"], "--lr must be positive, got -1"),
    "supernet alpha nan": (["supernet", *TINY, "--alpha", "nan"], "--alpha must be a finite number"),
    "supernet dropout nan": (["supernet", *TINY, "--dropout", "nan"], "dropout must be a finite number"),
    "supernet dropout 1": (["supernet", *TINY, "--dropout", "1"], "dropout must be in [0, 1), got 1"),
    "supernet batch absurd": (["supernet", *TINY, "--batch-size", BIG], "--batch-size 1,000,000,000,000"),
    "supernet eval batch absurd": (["supernet", *TINY, "--eval-batch-size", BIG], "more than the"),
    "supernet embed dim absurd": (["supernet", "--embed-dim", str(10**9), "--mlp", "8"], "more than the"),
    "search population absurd": (["search", "--population", str(10**11), "--topk", "2"], "--population 100,000,000,000"),
    "search generations absurd": (["search", "--generations", str(10**11)], "more than the"),
    "search mutation prob nan": (["search", "--mutation-prob", "nan"], "--mutation-prob must be a finite number"),
    "retrain lr nan": (["retrain", "--lr", "nan"], "--lr must be a finite number"),
    "compress finetune lr nan": (["compress", "--finetune-lr", "nan"], "--finetune-lr must be a finite number"),
    "compress temperature inf": (["compress", "--temperature", "inf"], "--temperature must be a finite number"),
    "compress codebook share nan": (["compress", "--codebook-share", "nan"], "--codebook-share must be a finite"),
    "preprocess split nan": (["preprocess", "{data}", "--split", "nan,0.1,0.1"], "--split must be a finite number"),
    "preprocess memory limit": (["preprocess", "{data}", "--memory-limit", "lots"], "--memory-limit must be a size"),
    "evaluate eval batch 0": (["evaluate", "--eval-batch-size", "0"], "--eval-batch-size must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_is_one_line_exit_2_and_no_artifact(
    chain: tuple[Path, dict[str, str]], cli, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    root, values = chain
    monkeypatch.setenv("OPTEMBED_ARTIFACTS", str(root))
    args, message = CASES[case]
    before = artifact_folders(root)
    res = cli(*[a.format(**values) for a in args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert artifact_folders(root) == before


@pytest.mark.parametrize(
    "target,message",
    [("nowhere/out.txt", "does not exist"), (".", "is a folder"), ("out.txt --rows 0", "at least 1")],
)
def test_synth_bad_output_is_one_line(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, target: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = cli("synth", *target.split(), "--rows", "10") if "--rows" not in target else cli("synth", *target.split())
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_synth_writes_no_partial_file(tmp_path: Path) -> None:
    from optembed.data.synth import generate

    generate(tmp_path / "out.txt", 50, seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "out.txt.truth.json"]


@pytest.mark.parametrize(
    "value,kwargs,message",
    [
        (float("nan"), {}, "must be a finite number, got nan"),
        (float("-inf"), {}, "must be a finite number, got -inf"),
        ("1", {}, "must be a number"),
        (True, {}, "must be a number"),
        (None, {}, "must be a number"),
        (0.0, {"low": 0.0, "low_open": True}, "must be positive, got 0"),
        (-1, {"low": 0.0}, "must be at least 0, got -1"),
        (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, "must be in [0, 1), got 1"),
        (10**400, {"high": 5.0}, "must be at most 5"),
    ],
)
def test_check_number_refuses(value: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        check_number("--x", value, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith("--x ") and message in str(info.value)


def test_check_number_accepts() -> None:
    check_number("--x", 0.5, 0.0, 1.0)
    check_number("--x", 1, 0.0, 1.0)
    check_number("--x", None, optional=True)
    check_number("--x", 10**400)


def test_check_output_file(tmp_path: Path) -> None:
    check_output_file(tmp_path / "new.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_file(tmp_path / "a" / "b.txt")
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path)


def test_memory_estimates_refuse_absurd_values_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 128 GiB machine: a Criteo-sized model at batch 1M and a 10,000 population pass."""
    import optembed.validation as v

    monkeypatch.setattr(v, "memory_limit", lambda device="cpu": 128 * GIB)
    criteo = {"rows": 30_000_000, "n_fields": 39, "embed_dim": 64, "mlp_dims": (1024, 512, 256)}
    check_training_memory(1_000_000, 1_000_000, **criteo)
    check_training_memory(2048, 32768, **criteo)
    check_search_memory(10_000, 30, 39, 500_000)
    check_search_memory(40, 30, 39, 4_500_000)
    assert training_bytes(2048, 32768, **criteo) < 16 * GIB
    assert sum(search_bytes(40, 30, 39, 4_500_000)) < GIB
    with pytest.raises(ConfigError, match=r"needs at least .* more than the 128.0 GiB"):
        check_training_memory(10**12, 32768, **criteo)
    with pytest.raises(ConfigError, match="--population 100,000,000,000"):
        check_search_memory(10**11, 30, 39, 1000)
    with pytest.raises(ConfigError, match="--generations 100,000,000,000"):
        check_search_memory(40, 10**11, 39, 1000)


def test_memory_limit_is_known_here() -> None:
    from optembed.validation import memory_limit

    assert memory_limit("cpu") > 0
