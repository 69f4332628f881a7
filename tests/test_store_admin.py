"""Store housekeeping and confinement: ``rm`` (refused while others depend on it, ``--cascade``),
``gc`` (temporary, resume and broken folders, ``--dry-run``), and no path outside the store."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from optembed.errors import ArtifactError
from optembed_cli.main import app
from pipelines.stage import execute
from pipelines.store import MANIFEST, RESUME_PREFIX, Manifest, Store, manifest_digest


def writer(payload: str = "x"):
    def build(tmp: Path, manifest: Manifest) -> None:
        (tmp / "out.txt").write_text(payload)
        manifest.outputs = {"out": "out.txt"}

    return build


def small_chain(store: Store) -> dict[str, Manifest]:
    """base <- mid <- top, and base <- side; plus an unrelated artifact."""
    base = execute(store, "base", 1, {}, {}, writer())
    mid = execute(store, "mid", 1, {}, {"base": base}, writer())
    top = execute(store, "top", 1, {}, {"mid#0": mid}, writer())
    side = execute(store, "side", 1, {}, {"base": base}, writer())
    other = execute(store, "base", 1, {"other": True}, {}, writer())
    return {"base": base, "mid": mid, "top": top, "side": side, "other": other}


def cli(store: Store, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--artifacts", str(store.root)], catch_exceptions=False)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "internal error" not in lines[0], stderr
    return lines[0]


def ids(store: Store) -> set[str]:
    return {m.fingerprint for m in store.list()}


def test_rm_refuses_while_others_depend_and_cascades(tmp_path: Path) -> None:
    store = Store(tmp_path)
    c = small_chain(store)
    assert {m.fingerprint for m in store.dependents(c["base"], store.list())} == {
        c["mid"].fingerprint, c["top"].fingerprint, c["side"].fingerprint}
    refused = cli(store, "rm", c["base"].fingerprint[:8])
    line = one_line(refused.stderr)
    assert refused.exit_code == 2 and "3 artifact(s) depend on it" in line and "--cascade" in line
    assert ids(store) == {m.fingerprint for m in c.values()}

    dry = cli(store, "rm", c["base"].fingerprint, "--cascade", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.count("would remove") == 4
    assert ids(store) == {m.fingerprint for m in c.values()}

    leaf = cli(store, "rm", c["top"].fingerprint)
    assert leaf.exit_code == 0 and f"removed top/{c['top'].fingerprint}" in leaf.stdout
    (tmp_path / "mid" / f"{RESUME_PREFIX}{c['mid'].fingerprint}").mkdir()
    gone = cli(store, "rm", c["base"].fingerprint, "--cascade")
    assert gone.exit_code == 0, gone.output
    assert ids(store) == {c["other"].fingerprint}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_rm_of_a_broken_artifact_and_bad_refs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    c = small_chain(store)
    (c["side"].path / MANIFEST).write_text("{")  # type: ignore[operator]
    res = cli(store, "rm", c["side"].fingerprint[:10])
    assert res.exit_code == 0 and "(broken)" in res.stdout and not c["side"].path.exists()  # type: ignore[union-attr]
    for ref, message in [("ffffffff", "no artifact matches"), ("", "give the id"), ("/etc", "not an artifact folder")]:
        bad = cli(store, "rm", ref)
        assert bad.exit_code == 2 and message in one_line(bad.stderr), (ref, bad.stderr)


def test_gc_removes_stale_temporary_resume_and_broken_folders(tmp_path: Path) -> None:
    store = Store(tmp_path)
    c = small_chain(store)
    base_dir = tmp_path / "base"
    dead_tmp = base_dir / ".tmp-0123-999999999"  # no such process
    live_tmp = base_dir / f".tmp-4567-{os.getppid()}"  # a live process, recent: a run in progress
    finished = base_dir / f"{RESUME_PREFIX}{c['base'].fingerprint}"  # its artifact exists
    old = base_dir / f"{RESUME_PREFIX}{'a' * 16}"  # an interrupted run, long ago
    recent = base_dir / f"{RESUME_PREFIX}{'b' * 16}"  # an interrupted run, resumable
    for folder in (dead_tmp, live_tmp, finished, old, recent):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"\0" * 10)
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    (c["side"].path / MANIFEST).write_text('{"stage": "side"')  # type: ignore[operator]  # truncated
    stray = tmp_path / "side" / "notes"  # not an artifact name: listed as broken, never removed
    stray.mkdir()
    expected = {dead_tmp.name, finished.name, old.name, c["side"].fingerprint}

    dry = cli(store, "gc", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.count("would remove") == len(expected), dry.stdout
    assert all(name in dry.stdout for name in expected)
    assert dead_tmp.exists() and c["side"].path.exists()  # type: ignore[union-attr]

    done = cli(store, "gc")
    assert done.exit_code == 0 and done.stdout.count("removed") == len(expected), done.stdout
    left = {p.name for d in tmp_path.iterdir() for p in d.iterdir()}
    assert not left & expected
    assert {live_tmp.name, recent.name, "notes"} <= left
    assert ids(store) == {m.fingerprint for k, m in c.items() if k != "side"}
    assert "nothing to remove" in cli(store, "gc").stdout
    assert cli(store, "gc", "--older-than", "-1").exit_code == 2


def test_paths_stay_inside_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    c = small_chain(store)
    res = cli(store, "artifacts", "--stage", "../x")  # --stage is a fixed choice: the parser refuses it
    assert res.exit_code == 2 and "'../x' is not one of" in " ".join(res.output.replace("│", " ").split())
    with pytest.raises(ArtifactError, match="invalid stage name"):
        store.lookup("../../etc", "ab")
    with pytest.raises(ArtifactError, match="invalid artifact id"):
        store.lookup("base", "../x")

    # an artifact folder copied out of the store is not accepted as --from
    outside = tmp_path / "elsewhere" / "base" / c["base"].fingerprint
    outside.parent.mkdir(parents=True)
    shutil.copytree(c["base"].path, outside)  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match="not an artifact folder of the store"):
        store.resolve(str(outside))
    res = cli(store, "show", str(tmp_path / "elsewhere"))
    assert res.exit_code == 2 and "not an artifact folder" in one_line(res.stderr)

    # a manifest loaded from another store cannot become the upstream of a new artifact
    foreign = Store(tmp_path / "other")
    alien = execute(foreign, "base", 1, {"f": 1}, {}, writer())
    with pytest.raises(ArtifactError, match="not in the store"):
        execute(store, "mid", 1, {}, {"base": alien}, writer())
    assert not (tmp_path / "store" / "mid" / "x").exists() and len(store.list("mid")) == 1


def _rewrite(m: Manifest, **changes: Any) -> None:
    data = json.loads((m.path / MANIFEST).read_text())  # type: ignore[operator]
    data.update(changes)
    data["manifest_sha256"] = manifest_digest(data)  # a consistent but hostile manifest
    (m.path / MANIFEST).write_text(json.dumps(data))  # type: ignore[operator]


def test_hostile_manifest_paths_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    c = small_chain(store)
    _rewrite(c["base"], outputs={"out": "../../../secret.txt"})
    with pytest.raises(ArtifactError, match="outside its folder"):
        store.load(c["base"].path).output("out")  # type: ignore[arg-type]
    _rewrite(c["other"], outputs={"out": str(secret)})
    with pytest.raises(ArtifactError, match="outside its folder"):
        store.load(c["other"].path).output("out")  # type: ignore[arg-type]
    os.symlink(secret, c["mid"].path / "link.txt")  # type: ignore[operator]
    _rewrite(c["mid"], outputs={"out": "link.txt"})
    with pytest.raises(ArtifactError, match="links outside its folder"):
        store.load(c["mid"].path).output("out")  # type: ignore[arg-type]
    _rewrite(c["top"], upstream={"mid#0": "../../x"})
    with pytest.raises(ArtifactError, match="malformed|invalid artifact id"):
        from pipelines.readers import resolve_chain

        resolve_chain(store, store.load(c["top"].path))  # type: ignore[arg-type]
    _rewrite(c["side"], fingerprint="0" * 16)  # a manifest moved to another artifact's folder
    with pytest.raises(ArtifactError, match="not the folder it is in"):
        store.load(c["side"].path)  # type: ignore[arg-type]
