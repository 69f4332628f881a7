"""The preprocess command through the CLI: JSON output, caching, and every bad-input case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, shared_file
from test_preprocess import tiny_rows, write_criteo


def good_file(tmp_path: Path, n: int = 40) -> Path:
    return write_criteo(tmp_path / "good.txt", tiny_rows(n))


def artifact_dirs(store: Path) -> list[Path]:
    stage = store / "preprocess"
    return sorted(stage.iterdir()) if stage.exists() else []


def test_json_cached_force_and_listing(tmp_path: Path, store_dir: Path, cli) -> None:
    src = good_file(tmp_path)
    first = cli("preprocess", src, "--json")
    assert first.exit_code == 0, first.output
    manifest = json.loads(first.stdout)
    assert manifest["stage"] == "preprocess" and manifest["metrics"]["rows"] == 40
    assert (store_dir / "preprocess" / manifest["fingerprint"] / "train.parquet").is_file()

    again = cli("preprocess", src)
    assert again.exit_code == 0 and "cached" in again.stdout and manifest["fingerprint"] in again.stdout
    forced = cli("preprocess", src, "--force", "--json")
    assert json.loads(forced.stdout)["created"] >= manifest["created"]

    listing = cli("artifacts")
    assert listing.exit_code == 0 and manifest["fingerprint"] in listing.stdout
    shown = cli("show", manifest["fingerprint"][:6])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["fingerprint"] == manifest["fingerprint"]

    other = cli("--help")
    assert other.exit_code == 0


def test_artifacts_option_overrides_env(tmp_path: Path, store_dir: Path, cli) -> None:
    src = good_file(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    res = cli("preprocess", src, "--artifacts", elsewhere, "--json")
    assert res.exit_code == 0
    assert artifact_dirs(elsewhere) and not artifact_dirs(store_dir)


def _replace_line(rows_text: str, index: int, transform) -> str:
    lines = rows_text.splitlines()
    lines[index] = transform(lines[index])
    return "\n".join(lines) + "\n"


BAD_CASES = {
    "missing": (None, [], "not found"),
    "empty": ("", [], "empty"),
    "columns": (lambda t: _replace_line(t, 16, lambda l: l.rsplit("\t", 1)[0]), [], "line 17 has 39 columns, expected 40"),
    "label": (lambda t: _replace_line(t, 5, lambda l: "7" + l[1:]), [], "label outside {0,1}"),
    "numeric": (lambda t: _replace_line(t, 3, lambda l: l.replace("\t", "\tabc", 1)), [], "non-numeric"),
    "format": (lambda t: t, ["--format", "xml"], "--format: 'xml' is not one of criteo"),
    "split": (lambda t: t, ["--split", "0.7,0.2,0.2"], "sum to 1"),
    "split-syntax": (lambda t: t, ["--split", "a,b"], "three numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_one_line_exit_2_no_artifact(tmp_path: Path, store_dir: Path, cli, case: str) -> None:
    make, extra, message = BAD_CASES[case]
    src = tmp_path / "data.txt"
    if make is not None:
        base = good_file(tmp_path).read_text()
        src.write_text(make(base) if callable(make) else make)
    res = cli("preprocess", src, *extra)
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in res.output
    assert artifact_dirs(store_dir) == []


def test_format_guessed_and_said(tmp_path: Path, store_dir: Path, cli) -> None:
    res = cli("preprocess", good_file(tmp_path))
    assert res.exit_code == 0, res.output
    assert "format: criteo, guessed from 40 tab-separated columns" in res.stderr
    avazu = tmp_path / "clicks.csv"
    avazu.write_text("id,click,hour,C1\n1,0,14102100,1005\n2,1,14102101,1005\n")
    wrong = cli("preprocess", avazu, "--format", "criteo")
    assert wrong.exit_code == 2 and "--format avazu" in wrong.stderr, wrong.stderr


def test_skip_bad_rows_records_counts(tmp_path: Path, store_dir: Path, cli) -> None:
    text = good_file(tmp_path, 60).read_text()
    text = _replace_line(text, 3, lambda l: l.replace("\t", "\tabc", 1))
    text = _replace_line(text, 9, lambda l: l.rsplit("\t", 2)[0])
    src = tmp_path / "bad.txt"
    src.write_text(text)
    res = cli("preprocess", src, "--skip-bad-rows", "--json")
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    assert manifest["metrics"]["bad_rows_skipped"] == 2 and manifest["metrics"]["rows"] == 58


def test_fields_not_in_header(tmp_path: Path, store_dir: Path, cli) -> None:
    src = shared_file("criteo_sample_200.csv")
    res = cli("preprocess", src, "--format", "csv", "--fields", "C1,NOPE")
    assert res.exit_code == 2 and "field 'NOPE' is not in the header" in res.stderr
    assert artifact_dirs(store_dir) == []


def test_real_criteo_sample_json(store_dir: Path, cli) -> None:
    src = shared_file("criteo_10k.txt")
    res = cli("preprocess", src, "--format", "criteo", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["metrics"]["rows"] == 9999


@pytest.mark.slow
def test_entry_point_usage_errors_are_one_line(tmp_path: Path) -> None:
    for args in (["preprocess"], ["preprocess", "x", "--bogus"]):
        proc = subprocess.run(
            [sys.executable, "-m", "optembed_cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
