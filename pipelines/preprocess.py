"""The ``preprocess`` stage: raw file -> encoded splits, vocabularies and schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optembed.data.preprocess import PreprocessConfig, check_input, preprocess
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.progress import NULL, Reporter
from pipelines.stage import execute
from pipelines.store import Manifest, Store

STAGE = "preprocess"
VERSION = 1
_MIB = 1 << 20


@dataclass
class PreprocessStage:
    input: Path = field(metadata=UNFINGERPRINTED)  # fingerprinted as its identity (input_identity)
    options: PreprocessConfig = field(default_factory=PreprocessConfig, metadata={"flatten": True})
    hash_input: bool = field(default=False, metadata=UNFINGERPRINTED)  # how the identity is taken
    force: bool = field(default=False, metadata=UNFINGERPRINTED)


def stage_params(config: PreprocessStage) -> dict[str, Any]:
    """The fingerprinted parameters: the input's identity and the preprocessing options."""
    return {"input": input_identity(Path(config.input), config.hash_input), **fingerprint_params(config)}


def input_identity(path: Path, full_hash: bool = False) -> dict[str, Any]:
    """Size, mtime and a hash of the first and last MiB (or of the whole file)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if full_hash:
            for block in iter(lambda: fh.read(8 * _MIB), b""):
                digest.update(block)
        else:
            digest.update(fh.read(_MIB))
            if stat.st_size > 2 * _MIB:
                fh.seek(-_MIB, 2)
                digest.update(fh.read(_MIB))
    ident: dict[str, Any] = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "hash": ("sha256:" if full_hash else "sha256-ends:") + digest.hexdigest()[:32],
    }
    if not full_hash:
        ident["mtime_ns"] = stat.st_mtime_ns
    return ident


def run(config: PreprocessStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.options.validate()
    path = Path(config.input)
    check_input(path)
    params = stage_params(config)

    def build(tmp: Path, manifest: Manifest) -> None:
        result = preprocess(path, config.options, tmp, reporter)
        manifest.outputs = result.outputs
        manifest.metrics = result.metrics

    return execute(store, STAGE, VERSION, params, {}, build, force=config.force)


def load_schema(manifest: Manifest) -> dict[str, Any]:
    import json

    return json.loads(manifest.output("schema").read_text())
