"""Reading artifacts from the store: one manifest, checked, and every artifact of a stage.

A manifest loads only when it is strict JSON of this schema version, its content matches its own
hash and, inside the store, it describes the folder it is in. A folder that does not load is
reported as :class:`Broken`, with the reason. Before a stage folder is read, a previous copy left
aside by a killed ``--force`` republish is renamed back (:mod:`pipelines.swap`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optembed.errors import ArtifactError
from optembed.links import path_problem
from pipelines import swap
from pipelines.store.layout import MANIFEST, check_fingerprint, check_stage_name, stage_dirs
from pipelines.store.manifest import SCHEMA_VERSION, Manifest, manifest_digest


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


def load(root: Path, path: Path) -> Manifest:
    """Read and check one manifest: strict JSON, schema version, self-hash, identity (for a
    folder of the store at ``root``)."""
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
    check_shape(data, file)
    if path.parent.parent == root and (path.parent.name, path.name) != (stage, data["fingerprint"]):
        raise ArtifactError(
            f"manifest {file} describes {stage}/{data['fingerprint']}, not the folder it is in"
        )
    return Manifest.from_dict(data, path=path)


def check_shape(data: dict[str, Any], file: Path) -> None:
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


def recover(root: Path, stage: str) -> list[Path]:
    """Rename back the previous copy of an artifact whose ``--force`` republish was killed
    between its two renames (see :mod:`pipelines.swap`): the folders restored."""
    stage_dir = root / stage
    if not stage_dir.is_dir():
        return []
    return swap.recover(stage_dir, lambda aside: (aside / MANIFEST).is_file())


def scan(root: Path, stage: str | None = None) -> tuple[list[Manifest], list[Broken]]:
    """All artifacts (of one stage, if given), oldest first, and the folders that do not
    load as artifacts (unreadable, modified or foreign manifest, no manifest)."""
    if stage is not None:
        check_stage_name(stage)
    if not root.is_dir():
        return [], []
    stages = [root / stage] if stage else stage_dirs(root)
    found: list[Manifest] = []
    broken: list[Broken] = []
    for stage_dir in stages:
        if not stage_dir.is_dir():
            continue
        recover(root, stage_dir.name)
        for art in sorted(stage_dir.iterdir()):
            if art.name.startswith(".") or not art.is_dir():
                continue
            if art.is_symlink():
                broken.append(Broken(art, f"{art} is a symbolic link, not an artifact folder (refused)"))
                continue
            try:
                found.append(load(root, art))
            except ArtifactError as exc:
                broken.append(Broken(art, str(exc)))
    found.sort(key=lambda m: (m.created, m.fingerprint))
    return found, broken
