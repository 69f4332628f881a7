"""Where an artifact lives: ``<root>/<stage>/<fingerprint>/manifest.json``, and its name.

A stage's fingerprint hashes its name, version, parameters and upstream fingerprints, so the same
inputs map to the same folder. Stage names and fingerprints are checked before they become paths,
so every path the store touches stays inside its root.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from optembed.errors import ArtifactError
from pipelines.store.jsontext import canonical_json

ENV_VAR = "OPTEMBED_ARTIFACTS"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"  # a folder being written (``.tmp-<fingerprint>-<pid>``) or removed
RESUME_PREFIX = ".resume-"  # the checkpoint of an interrupted run (``.resume-<fingerprint>``)
HEX = re.compile(r"^[0-9a-f]*$")
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
FINGERPRINT = re.compile(r"^[0-9a-f]{1,64}$")
ARTIFACT_NAME = re.compile(r"^[0-9a-f]{16}$")


def fingerprint(stage: str, stage_version: int, params: dict[str, Any], upstream: dict[str, str]) -> str:
    """A 16-hex-digit hash of everything that determines a stage's result."""
    payload = canonical_json(
        {"stage": stage, "stage_version": stage_version, "params": params, "upstream": upstream}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_stage_name(stage: str) -> str:
    if not isinstance(stage, str) or not STAGE_NAME.match(stage):
        raise ArtifactError(f"invalid stage name {stage!r}: a stage is lower-case letters, digits, '-' or '_'")
    return stage


def check_fingerprint(fp: str) -> str:
    if not isinstance(fp, str) or not FINGERPRINT.match(fp):
        raise ArtifactError(f"invalid artifact id {fp!r}: an id is hexadecimal")
    return fp


def default_root(option: str | Path | None = None) -> Path:
    """Store root: explicit option > ``$OPTEMBED_ARTIFACTS`` > ``./artifacts``."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("artifacts")


def stage_dirs(root: Path) -> list[Path]:
    """The stage folders of the store at ``root``, by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and STAGE_NAME.match(p.name))


def owned(root: Path, folder: Path) -> Path:
    """``folder`` if it is a folder of the store (``<root>/<stage>/<name>``), else an error."""
    folder = Path(os.path.abspath(folder))
    if folder.parent.parent != root or not STAGE_NAME.match(folder.parent.name):
        raise ArtifactError(f"{folder} is not a folder of the store {root}; refusing to touch it")
    return folder


def temp_dir(root: Path, stage: str, fp: str) -> Path:
    """The folder this process builds the artifact ``stage/fp`` in before publishing it."""
    return root / check_stage_name(stage) / f"{TMP_PREFIX}{check_fingerprint(fp)}-{os.getpid()}"
