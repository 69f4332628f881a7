"""Artifacts that cannot lie: file sizes and hashes, the manifest's self-hash, strict JSON and
provenance (recorded, kept out of the fingerprint, a note when a cached result was computed
elsewhere)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from optembed.checksum import file_sha256
from optembed.errors import ArtifactError
from optembed_cli.main import app
from pipeline_fixtures import small_supernet, synthetic_preprocess
from pipelines import provenance
from pipelines.store import manifest as manifest_mod
from pipelines.stage import execute
from pipelines.store import MANIFEST, Manifest, Store, manifest_digest

SEARCH = ["--population", "4", "--topk", "2", "--generations", "1", "--device", "cpu"]
SUPERNET = ["--model", "deepfm", "--embed-dim", "8", "--mlp", "32,16", "--epochs", "1", "--batch-size", "512",
            "--patience", "5", "--device", "cpu"]


def build_with(metrics: dict[str, Any], payload: bytes = b"hello"):
    def build(tmp: Path, manifest: Manifest) -> None:
        (tmp / "out.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "part.txt").write_text("x")
        manifest.outputs = {"out": "out.bin", "sub": "sub"}
        manifest.metrics = metrics

    return build


def strict_load(path: Path) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON token {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "internal error" not in lines[0] and "Traceback" not in stderr
    return lines[0]


def test_manifest_records_files_hash_and_is_strict_json(tmp_path: Path) -> None:
    store = Store(tmp_path)
    m = execute(store, "demo", 1, {"x": 1}, {}, build_with({"auc": float("nan"), "loss": [float("inf"), 1.5]}))
    on_disk = strict_load(m.path / MANIFEST)  # a strict parser accepts it
    assert on_disk["metrics"] == {"auc": None, "loss": [None, 1.5]}
    assert on_disk["files"] == {
        "out.bin": {"size": 5, "sha256": file_sha256(m.path / "out.bin")},
        "sub/part.txt": {"size": 1, "sha256": file_sha256(m.path / "sub" / "part.txt")},
    }
    assert on_disk["manifest_sha256"] == manifest_digest(on_disk) == m.manifest_sha256
    prov = on_disk["provenance"]
    for key in ("optembed", "torch", "python", "duckdb", "git_commit", "device", "device_name", "torch_threads"):
        assert key in prov, key
    assert prov["torch"] == torch.__version__ and prov["torch_threads"] == torch.get_num_threads()
    loaded = store.load(m.path)
    assert loaded.verified and loaded.output("out").read_bytes() == b"hello" and loaded.verify() == 2


def test_provenance_stays_out_of_the_fingerprint_and_cached_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    first = execute(store, "demo", 1, {"x": 1}, {}, build_with({}), device="cpu")
    assert first.provenance["device"] == "cpu" and not first.notes
    same = execute(store, "demo", 1, {"x": 1}, {}, build_with({}), device="cpu")
    assert same.cached and same.notes == []
    real = provenance.collect

    def elsewhere(device: Any = None) -> dict[str, Any]:
        return {**real(device), "torch_threads": first.provenance["torch_threads"] + 1, "torch": "9.9.9"}

    monkeypatch.setattr(provenance, "collect", elsewhere)
    again = execute(store, "demo", 1, {"x": 1}, {}, build_with({}), device="cpu")
    assert again.cached and again.fingerprint == first.fingerprint
    assert len(again.notes) == 1 and "torch threads" in again.notes[0] and "torch 9.9.9" not in again.notes[0]
    assert "(now 9.9.9)" in again.notes[0] and "--force" in again.notes[0]
    no_torch = execute(store, "demo", 1, {"x": 2}, {}, build_with({}))  # no device: nothing computed with torch
    assert execute(store, "demo", 1, {"x": 2}, {}, build_with({})).notes == [] and no_torch.provenance["device"] is None


def test_git_absent_is_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_git(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError("git")

    provenance.git_state.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        info = provenance.collect("cpu")
        assert info["git_commit"] is None and info["git_dirty"] is None
    finally:
        provenance.git_state.cache_clear()


def test_old_manifest_without_records_still_loads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    m = execute(store, "demo", 1, {}, {}, build_with({"n": 1}))
    data = json.loads((m.path / MANIFEST).read_text())
    for key in ("files", "provenance", "manifest_sha256"):
        data.pop(key)
    (m.path / MANIFEST).write_text(json.dumps(data))
    old = store.load(m.path)
    assert not old.verified and old.verify() == 0 and old.output("out").read_bytes() == b"hello"
    assert execute(store, "demo", 1, {}, {}, build_with({})).cached


def test_edited_manifest_is_reported_as_modified(tmp_path: Path) -> None:
    store = Store(tmp_path)
    m = execute(store, "demo", 1, {}, {}, build_with({"auc": 0.7}))
    text = (m.path / MANIFEST).read_text()
    (m.path / MANIFEST).write_text(text.replace('"auc": 0.7', '"auc": 0.9'))
    with pytest.raises(ArtifactError, match="modified after it was written"):
        store.load(m.path)
    with pytest.raises(ArtifactError, match="with --force"):
        execute(store, "demo", 1, {}, {}, build_with({"auc": 0.7}))
    res = CliRunner().invoke(app, ["show", m.fingerprint[:8], "--artifacts", str(tmp_path)])
    assert res.exit_code == 2 and "modified" in one_error_line(res.stderr)
    listing = CliRunner().invoke(app, ["artifacts", "--artifacts", str(tmp_path)])
    assert listing.exit_code == 0 and m.fingerprint in listing.stdout and "broken" in listing.stdout
    assert "modified" in listing.stderr
    rebuilt = execute(store, "demo", 1, {}, {}, build_with({"auc": 0.7}), force=True)
    assert store.load(rebuilt.path).metrics == {"auc": 0.7}


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-json-object"])
def test_unreadable_manifest_is_listed_as_broken(tmp_path: Path, damage: str) -> None:
    store = Store(tmp_path)
    good = execute(store, "demo", 1, {"i": 1}, {}, build_with({}))
    bad = execute(store, "demo", 1, {"i": 2}, {}, build_with({}))
    text = (bad.path / MANIFEST).read_text()
    (bad.path / MANIFEST).write_text({"truncated": text[: len(text) // 2], "empty": "", "not-json-object": "[1]"}[damage])
    found, broken = store.scan()
    assert [m.fingerprint for m in found] == [good.fingerprint]
    assert [b.name for b in broken] == [bad.fingerprint] and "manifest" in broken[0].reason
    res = CliRunner().invoke(app, ["artifacts", "--artifacts", str(tmp_path), "--json"])
    rows = json.loads(res.stdout)
    assert res.exit_code == 0 and {r["fingerprint"]: r.get("broken") is not None for r in rows} == {
        good.fingerprint: False, bad.fingerprint: True}
    res = CliRunner().invoke(app, ["artifacts", "--artifacts", str(tmp_path)])
    assert bad.fingerprint in res.stdout and "broken" in res.stdout
    res = CliRunner().invoke(app, ["show", bad.fingerprint[:6], "--artifacts", str(tmp_path)])
    assert res.exit_code == 2 and "manifest" in one_error_line(res.stderr)


# -- damaged files of a real chain ---------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("integrity")
    store, pre, _ = synthetic_preprocess(root, rows=3000)
    sn = small_supernet(store, epochs=1)
    return {"root": store.root, "preprocess": pre, "supernet": sn}


@pytest.fixture
def copy(chain: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the chain's store, to damage."""
    root = tmp_path / "store"
    shutil.copytree(chain["root"], root)
    store = Store(root)
    return {"store": store, "preprocess": store.resolve(chain["preprocess"].fingerprint),
            "supernet": store.resolve(chain["supernet"].fingerprint)}


def _cli(store: Store, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--artifacts", str(store.root)], catch_exceptions=False)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _reader(kind: str, c: dict[str, Any]) -> list[str]:
    """The command that opens the damaged file (not cached, so it reads it)."""
    if kind == "split":
        return ["supernet", "--from", c["preprocess"].fingerprint, *SUPERNET, "--seed", "11"]
    return ["search", "--from", c["supernet"].fingerprint, *SEARCH]


def _target(kind: str, c: dict[str, Any]) -> Path:
    return c["preprocess"].output("train") if kind == "split" else c["supernet"].output("model")


@pytest.mark.parametrize("kind", ["split", "model"])
def test_flipped_bytes_are_detected_on_open(copy: dict[str, Any], kind: str) -> None:
    target = _target(kind, copy)
    assert target.stat().st_size <= manifest_mod.CHEAP_HASH_BYTES  # hashed whenever it is opened
    _flip(target, target.stat().st_size // 2)
    res = _cli(copy["store"], *_reader(kind, copy))
    line = one_error_line(res.stderr)
    assert res.exit_code == 2 and target.name in line and "sha256" in line and "--force" in line


@pytest.mark.parametrize("kind", ["split", "model"])
def test_flipped_bytes_in_large_files_need_verify(copy: dict[str, Any], kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_mod, "CHEAP_HASH_BYTES", 0)  # every file counts as large: sizes only on open
    target = _target(kind, copy)
    _flip(target, target.stat().st_size // 2)
    store: Store = copy["store"]
    owner = copy["preprocess"] if kind == "split" else copy["supernet"]
    assert owner.output("train" if kind == "split" else "model") == target  # same size: passes the open check
    listing = _cli(store, "artifacts")
    assert listing.exit_code == 0
    verified = _cli(store, "artifacts", "--verify")
    assert verified.exit_code == 2 and target.name in one_error_line(verified.stderr)
    shown = _cli(store, "show", owner.fingerprint, "--verify")
    line = one_error_line(shown.stderr)
    assert shown.exit_code == 2 and target.name in line and "sha256" in line and "--force" in line
    other = copy["supernet"] if kind == "split" else copy["preprocess"]
    fine = _cli(store, "show", other.fingerprint, "--verify")
    assert fine.exit_code == 0 and "verified" in fine.stderr


@pytest.mark.parametrize("kind", ["split", "model"])
def test_truncated_file_is_one_line(copy: dict[str, Any], kind: str) -> None:
    target = _target(kind, copy)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    res = _cli(copy["store"], *_reader(kind, copy))
    line = one_error_line(res.stderr)
    assert res.exit_code == 2 and target.name in line and "truncated" in line


def test_init_copied_over_model_is_detected(copy: dict[str, Any]) -> None:
    sn: Manifest = copy["supernet"]
    shutil.copyfile(sn.path / "init.pt", sn.path / "model.pt")  # type: ignore[operator]
    res = _cli(copy["store"], *_reader("model", copy))
    line = one_error_line(res.stderr)
    assert res.exit_code == 2 and "model.pt" in line
    assert _cli(copy["store"], "artifacts", "--verify").exit_code == 2


def test_missing_file_is_one_line(copy: dict[str, Any]) -> None:
    sn: Manifest = copy["supernet"]
    (sn.path / "row_mask.pt").unlink()  # type: ignore[operator]
    res = _cli(copy["store"], "retrain", "--from", sn.fingerprint, "--epochs", "1", "--device", "cpu")
    line = one_error_line(res.stderr)
    assert res.exit_code == 2 and "row_mask.pt is missing" in line


def test_cached_artifact_from_another_thread_count_gets_a_note(chain: dict[str, Any]) -> None:
    sn: Manifest = chain["supernet"]
    recorded = sn.provenance["torch_threads"]
    before = torch.get_num_threads()
    torch.set_num_threads(recorded + 1)
    try:
        res = CliRunner().invoke(
            app, ["supernet", "--from", chain["preprocess"].fingerprint, *SUPERNET, "--artifacts", str(chain["root"])],
            catch_exceptions=False,
        )
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0 and "cached" in res.stdout, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"torch threads {recorded} (now {recorded + 1})" in notes[0]

