"""The artifact store: fingerprints, caching, --force, atomic publish, lookup."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from optembed.errors import ArtifactError
from pipelines.stage import execute
from pipelines.store import MANIFEST, Manifest, Store, default_root, fingerprint


def test_fingerprint_is_stable_and_sensitive() -> None:
    base = fingerprint("s", 1, {"a": 1, "b": [1, 2]}, {"up": "abc"})
    assert base == fingerprint("s", 1, {"b": [1, 2], "a": 1}, {"up": "abc"})  # key order is irrelevant
    variants = [
        fingerprint("t", 1, {"a": 1, "b": [1, 2]}, {"up": "abc"}),
        fingerprint("s", 2, {"a": 1, "b": [1, 2]}, {"up": "abc"}),
        fingerprint("s", 1, {"a": 2, "b": [1, 2]}, {"up": "abc"}),
        fingerprint("s", 1, {"a": 1, "b": [2, 1]}, {"up": "abc"}),
        fingerprint("s", 1, {"a": 1, "b": [1, 2]}, {"up": "abd"}),
    ]
    assert len({base, *variants}) == 6
    assert len(base) == 16 and int(base, 16) >= 0


def writer_of(payload: str, calls: list[int]):
    def build(tmp: Path, manifest: Manifest) -> None:
        calls.append(1)
        (tmp / "out.txt").write_text(payload)
        manifest.outputs = {"out": "out.txt"}
        manifest.metrics = {"n": len(calls)}

    return build


def test_execute_caches_and_force_reruns(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls: list[int] = []
    first = execute(store, "demo", 1, {"x": 1}, {}, writer_of("hello", calls))
    assert not first.cached and calls == [1]
    assert first.path == tmp_path / "demo" / first.fingerprint
    assert first.output("out").read_text() == "hello"
    on_disk = json.loads((first.path / MANIFEST).read_text())
    assert on_disk["stage"] == "demo" and on_disk["params"] == {"x": 1} and on_disk["schema_version"] == 1
    assert on_disk["outputs"] == {"out": "out.txt"} and on_disk["created"]

    again = execute(store, "demo", 1, {"x": 1}, {}, writer_of("other", calls))
    assert again.cached and calls == [1] and again.fingerprint == first.fingerprint
    assert again.output("out").read_text() == "hello"

    forced = execute(store, "demo", 1, {"x": 1}, {}, writer_of("new", calls), force=True)
    assert not forced.cached and calls == [1, 1]
    assert forced.output("out").read_text() == "new"
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [first.fingerprint]

    other = execute(store, "demo", 1, {"x": 2}, {}, writer_of("x2", calls))
    assert other.fingerprint != first.fingerprint
    downstream = execute(store, "next", 1, {}, {"demo": other}, writer_of("d", calls))
    assert downstream.upstream == {"demo": other.fingerprint}


def test_crash_mid_write_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def crashing(tmp: Path, manifest: Manifest) -> None:
        (tmp / "half.bin").write_bytes(b"\0" * 100)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        execute(store, "demo", 1, {"x": 1}, {}, crashing)
    assert list((tmp_path / "demo").iterdir()) == []
    assert store.list() == []


def test_crash_during_force_keeps_previous(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = execute(store, "demo", 1, {}, {}, writer_of("v1", []))

    def crashing(tmp: Path, manifest: Manifest) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        execute(store, "demo", 1, {}, {}, crashing, force=True)
    assert first.output("out").read_text() == "v1"
    assert len(store.list("demo")) == 1


def test_stale_temp_folders_are_cleaned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    dead = tmp_path / "demo" / ".tmp-abc-999999999"  # no such pid
    dead.mkdir(parents=True)
    (dead / "junk").write_text("x")
    mine = store.temp_dir("demo", "def")
    mine.mkdir()
    assert store.clean_stale("demo") == 1
    assert not dead.exists() and mine.exists()


def test_identical_run_publishing_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of the same inputs: the one that finds the other's artifact in place at its final
    rename keeps that artifact (exit 0) instead of failing on the non-empty folder."""
    store = Store(tmp_path)
    real, pid = os.replace, os.getpid()

    def racing(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.startswith(".tmp-") and not Path(dst).exists():
            monkeypatch.setattr(os, "replace", real)
            with monkeypatch.context() as other:  # the other run: another process id
                other.setattr(os, "getpid", lambda: pid + 1)
                execute(store, "demo", 1, {}, {}, writer_of("theirs", []))  # publishes under dst meanwhile
        real(src, dst)

    monkeypatch.setattr(os, "replace", racing)
    mine = execute(store, "demo", 1, {}, {}, writer_of("mine", []))
    assert mine.path == tmp_path / "demo" / mine.fingerprint
    assert mine.output("out").read_text() == "theirs"
    assert [p.name for p in (tmp_path / "demo").iterdir()] == [mine.fingerprint]


def test_cleaning_skips_a_temp_folder_published_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    other = tmp_path / "demo" / f".tmp-abc-{os.getppid()}"  # a live run's folder
    other.mkdir(parents=True)
    real = Path.lstat

    def gone(self: Path) -> os.stat_result:
        if self == other:
            raise FileNotFoundError(2, "renamed meanwhile", str(self))
        return real(self)

    monkeypatch.setattr(Path, "lstat", gone)
    assert store.clean_stale("demo") == 0
    assert store.garbage() == []


def test_resolve_by_prefix_path_newest_and_stage(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = execute(store, "alpha", 1, {"i": 1}, {}, writer_of("a", []))
    b = execute(store, "alpha", 1, {"i": 2}, {}, writer_of("b", []))
    edited = {**b.to_dict(), "created": "9999-01-01T00:00:00+00:00"}
    edited.pop("manifest_sha256")  # an edited manifest without its self-hash loads as unverified
    (b.path / MANIFEST).write_text(json.dumps(edited))
    assert store.resolve(a.fingerprint[:10]).fingerprint == a.fingerprint
    assert store.resolve(str(a.path)).fingerprint == a.fingerprint
    assert store.resolve(None, "alpha").fingerprint == b.fingerprint
    with pytest.raises(ArtifactError, match="expected beta"):
        store.resolve(a.fingerprint, "beta")
    with pytest.raises(ArtifactError, match="no beta artifact"):
        store.resolve(None, "beta")
    with pytest.raises(ArtifactError, match="no artifact matches"):
        store.resolve("zzzz")
    with pytest.raises(ArtifactError, match="ambiguous"):
        store.resolve("")


def test_manifest_schema_version_is_checked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = execute(store, "alpha", 1, {}, {}, writer_of("a", []))
    data = json.loads((a.path / MANIFEST).read_text())
    data["schema_version"] = 99
    (a.path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema version 99"):
        store.load(a.path)


def test_store_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTEMBED_ARTIFACTS", raising=False)
    assert default_root() == Path("artifacts")
    monkeypatch.setenv("OPTEMBED_ARTIFACTS", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"
    assert default_root(tmp_path / "opt") == tmp_path / "opt"
    assert Store().root == (tmp_path / "env").resolve()
    assert os.environ["OPTEMBED_ARTIFACTS"].endswith("env")


def test_one_rule_decides_what_work_folders_gc_and_the_writer_remove(tmp_path: Path) -> None:
    """gc and the writer's cleaning apply the same rule to temporary and aside folders; they differ
    only in whether this process's own folders count as a live run's (the writer's do)."""
    store = Store(tmp_path)
    demo = tmp_path / "demo"
    published = execute(store, "demo", 1, {}, {}, writer_of("v1", []))
    me, live, dead = os.getpid(), os.getppid(), 999999999
    cases = {  # name -> (gc removes it, the writer removes it)
        f".tmp-aaa-{dead}": (True, True),
        f".tmp-bbb-{live}": (False, False),
        f".tmp-ccc-{me}": (True, False),
        ".tmp-nopid": (True, True),
        f".old-{published.fingerprint}-{dead}": (True, False),  # the writer only cleans ``.tmp-`` folders
        f".old-{'f' * 16}-{live}": (False, False),  # the only copy of its artifact: never removed
        f".tmp-old-{published.fingerprint}-{live}": (False, False),
        f".tmp-old-{published.fingerprint}-{dead}": (True, True),
    }
    old = {f".tmp-ddd-{live}": (True, True)}  # a live run's folder untouched for two days
    for name in [*cases, *old]:
        (demo / name).mkdir()
        (demo / name / MANIFEST).write_text("{}")  # (an aside folder holds a whole copy)
    stamp = time.time() - 2 * 24 * 3600
    os.utime(demo / next(iter(old)), (stamp, stamp))
    cases |= old
    removed_by_gc = {p.name for p, _ in store.garbage() if p.parent == demo}
    assert removed_by_gc == {name for name, (gc, _) in cases.items() if gc}
    assert store.clean_stale("demo") == sum(writer for _, writer in cases.values())
    left = {p.name for p in demo.iterdir()}
    assert left == {published.fingerprint} | {name for name, (_, writer) in cases.items() if not writer}
