"""The versioned artifact store: ``<root>/<stage>/<fingerprint>/manifest.json`` + outputs.

A stage's fingerprint hashes its name, version, parameters and upstream fingerprints, so
the same inputs map to the same folder and a finished stage is found and skipped. Outputs
are written to a temporary folder inside the store and renamed into place only when the
stage succeeds, so an interrupted run never leaves a half-written artifact.

Integrity: the manifest lists every file of the artifact with its size and sha256
(``files``) and a hash of its own content (``manifest_sha256``). Opening an output checks
its size, and its hash when the file is small (:data:`CHEAP_HASH_BYTES`); :meth:`Manifest.verify`
hashes everything. Manifests written before these fields existed still load (unverified).
Every path the store touches stays inside its root: stage names and fingerprints are
checked, outputs may not point outside their artifact folder, and artifacts are only read
from the store itself.

Links: an artifact holds regular files only. A symbolic link, a hard-linked file (also a file
somewhere else) or a special file in an artifact folder is reported by :meth:`Manifest.problems`
(``--verify``) and refused by every reader (:meth:`Manifest.file`, :meth:`Manifest.output`,
:meth:`Store.load`); nothing the store does follows one.

Republishing (``--force``) swaps the new folder and the old one in one step where the system
can (``renameat2`` with ``RENAME_EXCHANGE``), else renames the old one aside first; a copy left
aside by a killed writer is renamed back by the next reader, writer or ``gc``
(:mod:`pipelines.swap`), and ``gc`` never removes the only copy of an artifact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optembed.checksum import file_sha256
from optembed.errors import ArtifactError
from optembed.links import entry_problem, folder_problems, path_problem
from pipelines import swap

SCHEMA_VERSION = 1
ENV_VAR = "OPTEMBED_ARTIFACTS"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
RESUME_PREFIX = ".resume-"
STALE_SECONDS = 24 * 3600
CHEAP_HASH_BYTES = 4 << 20  # outputs up to this size are hashed every time they are opened
_HEX = re.compile(r"^[0-9a-f]*$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{1,64}$")
_ARTIFACT_NAME = re.compile(r"^[0-9a-f]{16}$")
_TORCH_WRITE_FAILED = ("file write failed", "inline_container.cc", "unexpected pos")
_WRITE_ERRNOS = {errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, stage_version: int, params: dict[str, Any], upstream: dict[str, str]) -> str:
    """A 16-hex-digit hash of everything that determines a stage's result."""
    payload = canonical_json(
        {"stage": stage, "stage_version": stage_version, "params": params, "upstream": upstream}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def strict_json_value(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, tuples as lists and other objects as strings,
    so that ``json.dumps(..., allow_nan=False)`` succeeds and strict parsers accept the result."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): strict_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        with contextlib.suppress(Exception):
            return strict_json_value(value.item())
    return str(value)


def strict_dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN/Infinity tokens) of ``value``."""
    return json.dumps(strict_json_value(value), indent=indent, allow_nan=False)


def manifest_digest(data: dict[str, Any]) -> str:
    """The sha256 of a manifest's content (everything but ``manifest_sha256`` itself)."""
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every regular file under ``folder`` (relative POSIX paths), except
    the manifest itself. A link or special file is refused (an artifact holds regular files only)."""
    links = folder_problems(folder)
    if links:
        raise ArtifactError(f"{folder / links[0][0]} {links[0][1]}")
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        records[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return records


def check_stage_name(stage: str) -> str:
    if not isinstance(stage, str) or not _STAGE_NAME.match(stage):
        raise ArtifactError(f"invalid stage name {stage!r}: a stage is lower-case letters, digits, '-' or '_'")
    return stage


def check_fingerprint(fp: str) -> str:
    if not isinstance(fp, str) or not _FINGERPRINT.match(fp):
        raise ArtifactError(f"invalid artifact id {fp!r}: an id is hexadecimal")
    return fp


def write_error(exc: BaseException, what: str, after: str = "") -> ArtifactError | None:
    """One-line :class:`ArtifactError` for a failed write (disk full, quota, read-only, I/O) of
    ``what``, or ``None`` when ``exc`` is not such a failure. ``after`` is appended (what was
    kept or removed). Covers ``OSError`` and torch's ``RuntimeError`` from ``torch.save``."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    hint = "; free some space and rerun"
    if code == errno.EDQUOT or "quota exceeded" in text:
        reason = "disk quota exceeded"
    elif code == errno.ENOSPC or "no space left" in text:
        reason = "no space left on device"
    elif any(marker in text for marker in _TORCH_WRITE_FAILED):
        reason = "the file write failed (is the disk full?)"
    elif isinstance(exc, OSError) and code in _WRITE_ERRNOS:
        reason, hint = (exc.strerror or os.strerror(code)).lower(), ""  # type: ignore[arg-type]
    else:
        return None
    tail = f"; {after}" if after else ""
    return ArtifactError(f"{reason} while writing {what}{_filename(exc)}{hint}{tail}")


def release_frames(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and the exceptions chained to it: the frames of a failed
    write hold its half-written file open (on a full disk, the space), and the error raised
    instead would keep them reachable through its context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        todo += [current.__context__, current.__cause__]


def _filename(exc: BaseException) -> str:
    name = getattr(exc, "filename", None)
    return f" ({name})" if name else ""


@dataclass
class Manifest:
    stage: str
    stage_version: int
    fingerprint: str
    params: dict[str, Any]
    upstream: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> size, sha256
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, device, threads (not fingerprinted)
    manifest_sha256: str = ""
    path: Path | None = field(default=None, compare=False)
    cached: bool = field(default=False, compare=False)
    notes: list[str] = field(default_factory=list, compare=False, repr=False)  # one-line remarks for the user
    _hashed: set[str] = field(default_factory=set, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("path", "cached", "notes", "_hashed"):
            data.pop(key)
        return data

    def to_json(self) -> str:
        return strict_dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Manifest:
        skip = ("path", "cached", "notes", "_hashed")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in skip}
        return cls(**known, path=path)

    @property
    def verified(self) -> bool:
        """Whether the manifest records its files (manifests written before that are unverified)."""
        return bool(self.files)

    def output(self, name: str) -> Path:
        """Absolute path of one named output, after checking its size (and its hash when cheap)."""
        if self.path is None:
            raise ArtifactError(f"artifact {self.fingerprint} has no location on disk")
        if name not in self.outputs:
            raise ArtifactError(f"{self.stage} artifact {self.fingerprint} has no output '{name}'")
        return self.file(self.outputs[name])

    def file(self, rel: str, must_exist: bool = True) -> Path:
        """Absolute path of a file inside the artifact, checked like :meth:`output`.

        A path leading outside the artifact folder is refused. A recorded file that is missing
        is an error unless ``must_exist`` is false (the caller then reports it).
        """
        if self.path is None:
            raise ArtifactError(f"artifact {self.fingerprint} has no location on disk")
        path = self._inside(rel)
        link = path_problem(self.path, rel)
        if link is not None:
            raise self._damaged(rel, link)
        record = self.files.get(rel)
        if record is None:
            return path
        if not path.is_file():
            if must_exist:
                raise self._damaged(rel, "is missing")
            return path
        problem = self._check(rel, path, record, hash_it=record.get("size", 0) <= CHEAP_HASH_BYTES)
        if problem:
            raise self._damaged(rel, problem)
        return path

    def problems(self, depth: str = "full") -> list[str]:
        """One line per damaged file: missing, of another size, or (when hashed) changed.

        ``depth``: ``"size"`` compares sizes only, ``"cheap"`` also hashes files up to
        :data:`CHEAP_HASH_BYTES`, ``"full"`` hashes every file. An artifact republished (``--force``)
        while it was being checked is checked again under its new manifest, once.
        """
        found = self._file_problems(depth)
        if found and self.path is not None:
            fresh = self._republished()
            if fresh is not None:
                return fresh._file_problems(depth)
        return found

    def _republished(self) -> Manifest | None:
        """The manifest now on disk when it is another one than this (a republish), else None."""
        try:
            data = json.loads((self.path / MANIFEST).read_text())  # type: ignore[operator]
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("manifest_sha256") in (None, self.manifest_sha256):
            return None
        return Manifest.from_dict(data, path=self.path)

    def _file_problems(self, depth: str) -> list[str]:
        if depth not in ("size", "cheap", "full"):
            raise ValueError(f"unknown depth {depth!r}")
        if self.path is None:
            return [f"artifact {self.fingerprint} has no location on disk"]
        found = []
        if os.path.islink(self.path):
            found.append(f"the artifact folder {self.path} is a symbolic link (refused)")
            return found
        found += [f"{rel} {problem}" for rel, problem in folder_problems(self.path)]
        for rel, record in self.files.items():
            try:
                path = self._inside(rel)
            except ArtifactError as exc:
                found.append(str(exc))
                continue
            if entry_problem(path) is not None:  # a link: reported above, never followed
                continue
            if not path.is_file():
                found.append(f"{rel} is missing")
                continue
            small = record.get("size", 0) <= CHEAP_HASH_BYTES
            problem = self._check(rel, path, record, hash_it=depth == "full" or (depth == "cheap" and small))
            if problem:
                found.append(f"{rel} {problem}")
        return found

    def verify(self) -> int:
        """Hash every recorded file; raise one :class:`ArtifactError` naming the first damaged
        file. Returns the number of files checked (0 for a manifest without records)."""
        self._hashed.clear()
        problems = self.problems("full")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ArtifactError(f"{self.stage} artifact {self.fingerprint}: {problems[0]}{more}; {self.fix}")
        return len(self.files)

    @property
    def fix(self) -> str:
        return f"rerun the {self.stage} stage with --force to rebuild it"

    def _inside(self, rel: str) -> Path:
        assert self.path is not None
        rel_path = Path(rel)
        if not rel or rel_path.is_absolute() or ".." in rel_path.parts:
            raise ArtifactError(f"{self.stage} artifact {self.fingerprint} names a file outside its folder: {rel!r}")
        path = self.path / rel_path
        if path.exists() and not path.resolve().is_relative_to(self.path.resolve()):
            raise ArtifactError(f"{self.stage} artifact {self.fingerprint}: {rel} links outside its folder")
        return path

    def _check(self, rel: str, path: Path, record: dict[str, Any], hash_it: bool) -> str:
        size = path.stat().st_size
        if size != record.get("size"):
            return f"is {size:,} bytes, the manifest says {record.get('size', 0):,} (truncated or replaced)"
        if hash_it and rel not in self._hashed:
            if file_sha256(path) != record.get("sha256"):
                return "has changed since it was written (sha256 mismatch)"
            self._hashed.add(rel)
        return ""

    def _damaged(self, rel: str, problem: str) -> ArtifactError:
        where = self.path / rel if self.path is not None else rel
        return ArtifactError(f"{self.stage} artifact {self.fingerprint}: {rel} {problem} ({where}); {self.fix}")

    @property
    def id(self) -> str:
        return self.fingerprint


@dataclass
class Broken:
    """A folder in the store that does not load as an artifact, and why."""

    path: Path
    reason: str

    @property
    def stage(self) -> str:
        return self.path.parent.name

    @property
    def name(self) -> str:
        return self.path.name


def default_root(option: str | Path | None = None) -> Path:
    """Store root: explicit option > ``$OPTEMBED_ARTIFACTS`` > ``./artifacts``."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("artifacts")


class Store:
    """A folder of artifacts, one sub-folder per stage."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = default_root(root).resolve()

    # -- reading ---------------------------------------------------------------------------
    def load(self, path: Path) -> Manifest:
        """Read and check one manifest: strict JSON, schema version, self-hash, identity."""
        file = path / MANIFEST
        link = path_problem(path, MANIFEST)
        if link is not None:
            raise ArtifactError(f"{file} {link}")
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"no manifest.json in {path}") from None
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ArtifactError(f"unreadable manifest {file}: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"unreadable manifest {file}: not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"artifact {path} has manifest schema version {data.get('schema_version')}, "
                f"this optembed reads version {SCHEMA_VERSION}"
            )
        stage = data.get("stage")
        recorded = data.get("manifest_sha256")
        if recorded and recorded != manifest_digest(data):
            raise ArtifactError(
                f"manifest {file} was modified after it was written (its content does not match "
                f"its manifest_sha256); rerun the {stage} stage with --force to rebuild it"
            )
        _check_shape(data, file)
        if path.parent.parent == self.root and (path.parent.name, path.name) != (stage, data["fingerprint"]):
            raise ArtifactError(
                f"manifest {file} describes {stage}/{data['fingerprint']}, not the folder it is in"
            )
        return Manifest.from_dict(data, path=path)

    def lookup(self, stage: str, fp: str) -> Manifest | None:
        path = self.root / check_stage_name(stage) / check_fingerprint(fp)
        if not path.exists():
            self.recover(stage)
        if (path / MANIFEST).is_file():
            return self.load(path)
        return None

    def scan(self, stage: str | None = None) -> tuple[list[Manifest], list[Broken]]:
        """All artifacts (of one stage, if given), oldest first, and the folders that do not
        load as artifacts (unreadable, modified or foreign manifest, no manifest)."""
        if stage is not None:
            check_stage_name(stage)
        if not self.root.is_dir():
            return [], []
        if stage:
            stages = [self.root / stage]
        else:
            stages = sorted(p for p in self.root.iterdir() if p.is_dir() and _STAGE_NAME.match(p.name))
        found: list[Manifest] = []
        broken: list[Broken] = []
        for stage_dir in stages:
            if not stage_dir.is_dir():
                continue
            self.recover(stage_dir.name)
            for art in sorted(stage_dir.iterdir()):
                if art.name.startswith(".") or not art.is_dir():
                    continue
                if art.is_symlink():
                    broken.append(Broken(art, f"{art} is a symbolic link, not an artifact folder (refused)"))
                    continue
                try:
                    found.append(self.load(art))
                except ArtifactError as exc:
                    broken.append(Broken(art, str(exc)))
        found.sort(key=lambda m: (m.created, m.fingerprint))
        return found, broken

    def list(self, stage: str | None = None) -> list[Manifest]:
        """All readable artifacts (of one stage, if given), oldest first."""
        return self.scan(stage)[0]

    def resolve(self, ref: str | None, stages: str | tuple[str, ...] | None = None) -> Manifest:
        """Find an artifact by fingerprint prefix or path; ``None`` means the newest of ``stages``.

        Raises ``ArtifactError`` when nothing matches, the prefix is ambiguous, the artifact
        belongs to a stage other than the expected ones, or a folder lies outside the store.
        """
        wanted = (stages,) if isinstance(stages, str) else stages
        if ref is None:
            if not wanted:
                raise ArtifactError("no artifact given")
            candidates = [m for s in wanted for m in self.list(s)]
            if not candidates:
                raise ArtifactError(
                    f"no {' or '.join(wanted)} artifact in {self.root}; run that stage first or pass --from"
                )
            manifest = max(candidates, key=lambda m: (m.created, m.fingerprint))
        else:
            manifest = self._find(ref)
        if wanted and manifest.stage not in wanted:
            raise ArtifactError(
                f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected {' or '.join(wanted)}"
            )
        return manifest

    def _find(self, ref: str) -> Manifest:
        if not _HEX.match(ref):
            as_path = Path(ref)
            if not as_path.exists():
                raise ArtifactError(
                    f"no artifact matches '{ref}' (neither an id prefix in {self.root} nor an artifact folder)"
                )
            folder = as_path.resolve()
            if not folder.is_relative_to(self.root) or folder.parent.parent != self.root:
                raise ArtifactError(
                    f"{ref} is not an artifact folder of the store {self.root}; artifacts are read from their "
                    f"own store only (pass --artifacts with the store that holds it)"
                )
            if not (folder / MANIFEST).is_file():
                raise ArtifactError(f"{ref} is a folder without manifest.json")
            return self.load(folder)
        found, broken = self.scan()
        matches = [m for m in found if m.fingerprint.startswith(ref)]
        if not matches:
            damaged = [b for b in broken if b.name.startswith(ref)]
            if len(damaged) == 1 and ref:
                raise ArtifactError(damaged[0].reason)
            raise ArtifactError(f"no artifact matches '{ref}' in {self.root}")
        if len(matches) > 1:
            ids = ", ".join(f"{m.stage}/{m.fingerprint}" for m in matches[:5])
            raise ArtifactError(f"'{ref}' is ambiguous: {ids}")
        return matches[0]

    def contains(self, manifest: Manifest) -> bool:
        """Whether ``manifest`` is this store's artifact at its proper place."""
        return manifest.path is not None and Path(manifest.path).resolve() == self.root / manifest.stage / manifest.fingerprint

    def recover(self, stage: str) -> list[Path]:
        """Rename back the previous copy of an artifact whose ``--force`` republish was killed
        between its two renames (see :mod:`pipelines.swap`): the folders restored."""
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return []
        return swap.recover(stage_dir, lambda aside: (aside / MANIFEST).is_file())

    # -- dependencies and removal ----------------------------------------------------------
    @staticmethod
    def dependents(target: Manifest, among: list[Manifest]) -> list[Manifest]:
        """The artifacts of ``among`` built from ``target``, directly or through others."""
        found: dict[tuple[str, str], Manifest] = {}
        frontier = [(target.stage, target.fingerprint)]
        while frontier:
            stage, fp = frontier.pop()
            for m in among:
                key = (m.stage, m.fingerprint)
                if key in found or key == (target.stage, target.fingerprint):
                    continue
                if any(k.split("#")[0] == stage and v == fp for k, v in m.upstream.items()):
                    found[key] = m
                    frontier.append(key)
        return sorted(found.values(), key=lambda m: (m.created, m.fingerprint))

    def remove(self, folder: Path) -> None:
        """Delete one folder of the store (an artifact, a temporary or resume folder): renamed
        aside first, so a crash midway leaves only a temporary folder that ``gc`` removes."""
        folder = self._own(folder)
        if not folder.exists():
            return
        aside = folder.with_name(f"{TMP_PREFIX}rm-{folder.name.lstrip('.')}-{os.getpid()}")
        try:
            os.replace(folder, aside)
        except OSError as exc:
            raise ArtifactError(f"cannot remove {folder}: {exc.strerror or exc}") from None
        if aside.is_symlink():
            aside.unlink()
        else:
            shutil.rmtree(aside, ignore_errors=True)

    def _own(self, folder: Path) -> Path:
        """``folder`` if it is a folder of the store (``<root>/<stage>/<name>``), else an error."""
        folder = Path(os.path.abspath(folder))
        if folder.parent.parent != self.root or not _STAGE_NAME.match(folder.parent.name):
            raise ArtifactError(f"{folder} is not a folder of the store {self.root}; refusing to touch it")
        return folder

    def garbage(self, max_age: float = STALE_SECONDS) -> list[tuple[Path, str]]:
        """What ``gc`` removes, with the reason: temporary folders of dead or old runs, resume
        folders that are old or whose artifact exists, and broken artifacts."""
        if not self.root.is_dir():
            return []
        now = time.time()
        found: list[tuple[Path, str]] = []
        published = {(m.stage, m.fingerprint) for m in self.list()}  # (recovers killed republishes first)
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and _STAGE_NAME.match(p.name)):
            for entry in sorted(stage_dir.iterdir()):
                mtime = _mtime(entry)
                if mtime is None:  # renamed or removed meanwhile by another run
                    continue
                age = now - mtime
                aside = swap.parse_aside(entry.name)
                if aside is not None:
                    if not os.path.lexists(stage_dir / aside[0]):
                        continue  # the only copy of that artifact (its writer still runs): kept
                    if aside[1] != os.getpid() and _pid_alive(aside[1]) and age < max_age:
                        continue
                    found.append((entry, "previous copy of a republished artifact"))
                elif entry.name.startswith(TMP_PREFIX):
                    pid = _pid_of(entry.name)
                    if pid is not None and pid != os.getpid() and _pid_alive(pid) and age < max_age:
                        continue
                    found.append((entry, "temporary folder of an interrupted run"))
                elif entry.name.startswith(RESUME_PREFIX):
                    fp = entry.name[len(RESUME_PREFIX):]
                    if (stage_dir.name, fp) in published:
                        found.append((entry, "resume checkpoint of a finished run"))
                    elif age >= max_age:
                        found.append((entry, f"resume checkpoint untouched for {age / 3600:.0f} h"))
        for broken in self.scan()[1]:
            if _ARTIFACT_NAME.match(broken.name):
                found.append((broken.path, broken.reason))
        return found

    # -- writing ---------------------------------------------------------------------------
    def clean_stale(self, stage: str, max_age: float = STALE_SECONDS) -> int:
        """Remove temporary folders left by crashed runs (dead process or older than max_age)."""
        stage_dir = self.root / check_stage_name(stage)
        if not stage_dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        self.recover(stage)
        for tmp in stage_dir.glob(TMP_PREFIX + "*"):
            aside = swap.parse_aside(tmp.name)
            if aside is not None and not os.path.lexists(stage_dir / aside[0]):
                continue  # the only copy of an artifact: never removed
            pid = _pid_of(tmp.name)
            alive = pid is not None and _pid_alive(pid)
            mtime = _mtime(tmp)
            if mtime is None or (alive and now - mtime < max_age):  # gone: another run just published it
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        return removed

    def temp_dir(self, stage: str, fp: str) -> Path:
        return self.root / check_stage_name(stage) / f"{TMP_PREFIX}{check_fingerprint(fp)}-{os.getpid()}"

    @contextlib.contextmanager
    def writer(self, manifest: Manifest, keep_on_error: bool = False) -> Iterator[Path]:
        """Yield a temporary folder; on success write the manifest and publish atomically.

        The caller fills ``manifest.outputs`` / ``manifest.metrics`` while writing. The store
        then records every file's size and sha256 and the manifest's own hash. On any exception
        the temporary folder is removed (unless ``keep_on_error``) and nothing appears under the
        final name; a failed write (disk full, quota, read-only) becomes one
        :class:`ArtifactError`.
        """
        final = self.root / check_stage_name(manifest.stage) / check_fingerprint(manifest.fingerprint)
        tmp = self.temp_dir(manifest.stage, manifest.fingerprint)
        what = f"the {manifest.stage} artifact"
        failure: ArtifactError | None = None
        try:
            self.clean_stale(manifest.stage)
            tmp.mkdir(parents=True, exist_ok=True)
            yield tmp
            manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            manifest.files = file_records(tmp)
            data = strict_json_value(manifest.to_dict())
            data["manifest_sha256"] = manifest.manifest_sha256 = manifest_digest(data)
            text = json.dumps(data, indent=2, allow_nan=False) + "\n"
            with (tmp / MANIFEST).open("w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            if final.exists():  # --force: replace the previous result (one exchange: see pipelines.swap)
                swap.replace_folder(tmp, final)
            else:
                try:
                    os.replace(tmp, final)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / MANIFEST).is_file():
                        raise
                    # Another run of the same inputs published first: keep its artifact, drop ours.
                    shutil.rmtree(tmp, ignore_errors=True)
                    _take(manifest, self.load(final))
            manifest.path = final
        except (OSError, RuntimeError) as exc:
            if not keep_on_error:
                shutil.rmtree(tmp, ignore_errors=True)
            failure = write_error(exc, what, "nothing was published")
            if failure is None:
                raise
            release_frames(exc)
        except BaseException:
            if not keep_on_error:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if failure is not None:
            raise failure


def _check_shape(data: dict[str, Any], file: Path) -> None:
    """The manifest's fields have the types the code relies on."""
    expected: dict[str, type | tuple[type, ...]] = {
        "stage": str, "fingerprint": str, "params": dict, "upstream": dict, "outputs": dict,
        "metrics": dict, "files": dict, "provenance": dict, "created": str,
    }
    for key, kind in expected.items():
        if key in data and not isinstance(data[key], kind):
            raise ArtifactError(f"malformed manifest {file}: '{key}' is not a {getattr(kind, '__name__', kind)}")
    for key in ("stage", "fingerprint", "params"):
        if key not in data:
            raise ArtifactError(f"malformed manifest {file}: no '{key}'")
    check_stage_name(data["stage"])
    check_fingerprint(data["fingerprint"])
    if not all(isinstance(v, str) for v in data.get("outputs", {}).values()):
        raise ArtifactError(f"malformed manifest {file}: an output is not a file name")
    if not all(isinstance(v, str) for v in data.get("upstream", {}).values()):
        raise ArtifactError(f"malformed manifest {file}: an upstream id is not a string")
    for rel, record in data.get("files", {}).items():
        if not isinstance(record, dict) or not isinstance(record.get("size"), int):
            raise ArtifactError(f"malformed manifest {file}: no size for {rel}")


def _mtime(path: Path) -> float | None:
    """``path``'s modification time, None when it no longer exists."""
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return None


def _take(manifest: Manifest, published: Manifest) -> None:
    """Make ``manifest`` describe ``published`` (the artifact another run put in its place)."""
    for name in Manifest.__dataclass_fields__:
        if name not in ("cached", "notes", "_hashed"):
            setattr(manifest, name, getattr(published, name))


def _pid_of(name: str) -> int | None:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
