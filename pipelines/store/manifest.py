"""One artifact's manifest and the integrity of its files.

The manifest lists every file of the artifact with its size and sha256 (``files``) and a hash of
its own content (``manifest_sha256``). Opening an output checks its size, and its hash when the
file is small (:data:`CHEAP_HASH_BYTES`); :meth:`Manifest.verify` hashes everything. Manifests
written before these fields existed still load (unverified). An output may not point outside its
artifact folder, and a link or special file in the folder is refused, never followed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from optembed.checksum import file_sha256
from optembed.errors import ArtifactError
from optembed.links import entry_problem, folder_problems, path_problem
from pipelines.store.jsontext import canonical_json, strict_dumps
from pipelines.store.layout import MANIFEST

SCHEMA_VERSION = 1
CHEAP_HASH_BYTES = 4 << 20  # outputs up to this size are hashed every time they are opened


def manifest_digest(data: dict[str, Any]) -> str:
    """The sha256 of a manifest's content (everything but ``manifest_sha256`` itself)."""
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return sha256(canonical_json(body).encode()).hexdigest()


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


@dataclass
class Manifest:
    """What a stage produced: its identity (stage, version, fingerprint, parameters, upstream),
    its named outputs and metrics, and the size and sha256 of each of its files."""

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

