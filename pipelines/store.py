"""The versioned artifact store: ``<root>/<stage>/<fingerprint>/manifest.json`` + outputs.

A stage's fingerprint hashes its name, version, parameters and upstream fingerprints, so
the same inputs map to the same folder and a finished stage is found and skipped. Outputs
are written to a temporary folder inside the store and renamed into place only when the
stage succeeds, so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optembed.errors import ArtifactError

SCHEMA_VERSION = 1
ENV_VAR = "OPTEMBED_ARTIFACTS"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
STALE_SECONDS = 24 * 3600
_HEX = re.compile(r"^[0-9a-f]*$")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, stage_version: int, params: dict[str, Any], upstream: dict[str, str]) -> str:
    """A 16-hex-digit hash of everything that determines a stage's result."""
    payload = canonical_json(
        {"stage": stage, "stage_version": stage_version, "params": params, "upstream": upstream}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


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
    path: Path | None = field(default=None, compare=False)
    cached: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data.pop("cached")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Manifest:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("path", "cached")}
        return cls(**known, path=path)

    def output(self, name: str) -> Path:
        """Absolute path of one named output."""
        if self.path is None:
            raise ArtifactError(f"artifact {self.fingerprint} has no location on disk")
        if name not in self.outputs:
            raise ArtifactError(f"{self.stage} artifact {self.fingerprint} has no output '{name}'")
        return self.path / self.outputs[name]

    @property
    def id(self) -> str:
        return self.fingerprint


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
        file = path / MANIFEST
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"no manifest.json in {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"unreadable manifest {file}: {exc}") from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"artifact {path} has manifest schema version {data.get('schema_version')}, "
                f"this optembed reads version {SCHEMA_VERSION}"
            )
        return Manifest.from_dict(data, path=path)

    def lookup(self, stage: str, fp: str) -> Manifest | None:
        path = self.root / stage / fp
        if (path / MANIFEST).is_file():
            return self.load(path)
        return None

    def list(self, stage: str | None = None) -> list[Manifest]:
        """All artifacts (of one stage, if given), oldest first."""
        if not self.root.is_dir():
            return []
        stages = [self.root / stage] if stage else sorted(p for p in self.root.iterdir() if p.is_dir())
        found: list[Manifest] = []
        for stage_dir in stages:
            if not stage_dir.is_dir():
                continue
            for art in stage_dir.iterdir():
                if art.name.startswith(TMP_PREFIX) or not (art / MANIFEST).is_file():
                    continue
                with contextlib.suppress(ArtifactError):
                    found.append(self.load(art))
        found.sort(key=lambda m: (m.created, m.fingerprint))
        return found

    def resolve(self, ref: str | None, stages: str | tuple[str, ...] | None = None) -> Manifest:
        """Find an artifact by fingerprint prefix or path; ``None`` means the newest of ``stages``.

        Raises ``ArtifactError`` when nothing matches, the prefix is ambiguous, or the
        artifact belongs to a stage other than the expected ones.
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
            if (as_path / MANIFEST).is_file():
                return self.load(as_path.resolve())
            if as_path.is_dir():
                raise ArtifactError(f"{ref} is a folder without manifest.json")
            raise ArtifactError(f"no artifact matches '{ref}' (neither an id prefix in {self.root} nor an artifact folder)")
        matches = [m for m in self.list() if m.fingerprint.startswith(ref)]
        if not matches:
            raise ArtifactError(f"no artifact matches '{ref}' in {self.root}")
        if len(matches) > 1:
            ids = ", ".join(f"{m.stage}/{m.fingerprint}" for m in matches[:5])
            raise ArtifactError(f"'{ref}' is ambiguous: {ids}")
        return matches[0]

    # -- writing ---------------------------------------------------------------------------
    def clean_stale(self, stage: str, max_age: float = STALE_SECONDS) -> int:
        """Remove temporary folders left by crashed runs (dead process or older than max_age)."""
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return 0
        removed = 0
        now = time.time()
        for tmp in stage_dir.glob(TMP_PREFIX + "*"):
            pid = _pid_of(tmp.name)
            alive = pid is not None and _pid_alive(pid)
            if alive and now - tmp.stat().st_mtime < max_age:
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        return removed

    def temp_dir(self, stage: str, fp: str) -> Path:
        return self.root / stage / f"{TMP_PREFIX}{fp}-{os.getpid()}"

    @contextlib.contextmanager
    def writer(self, manifest: Manifest, keep_on_error: bool = False) -> Iterator[Path]:
        """Yield a temporary folder; on success write the manifest and publish atomically.

        The caller fills ``manifest.outputs`` / ``manifest.metrics`` while writing. On any
        exception the temporary folder is removed (unless ``keep_on_error``, used to keep
        resumable checkpoints) and nothing appears under the final name.
        """
        self.clean_stale(manifest.stage)
        final = self.root / manifest.stage / manifest.fingerprint
        tmp = self.temp_dir(manifest.stage, manifest.fingerprint)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            (tmp / MANIFEST).write_text(manifest.to_json() + "\n")
            if final.exists():  # --force: replace the previous result
                trash = final.with_name(f"{TMP_PREFIX}old-{manifest.fingerprint}-{os.getpid()}")
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
            manifest.path = final
        except BaseException:
            if not keep_on_error:
                shutil.rmtree(tmp, ignore_errors=True)
            raise


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
