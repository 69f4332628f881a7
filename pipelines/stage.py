"""Shared run logic of every stage: fingerprint, skip when cached, publish atomically."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.store import Manifest, Store, fingerprint

Builder = Callable[[Path, Manifest], None]


def execute(
    store: Store,
    stage: str,
    stage_version: int,
    params: dict[str, Any],
    upstream: Mapping[str, Manifest],
    build: Builder,
    force: bool = False,
) -> Manifest:
    """Return the cached artifact for these inputs, or build and publish a new one.

    ``build(tmp_dir, manifest)`` writes outputs into ``tmp_dir`` and fills
    ``manifest.outputs`` and ``manifest.metrics``; the manifest is written and the folder
    renamed into place only when it returns normally.
    """
    ups = {name: m.fingerprint for name, m in upstream.items()}
    fp = fingerprint(stage, stage_version, params, ups)
    existing = store.lookup(stage, fp)
    if existing is not None and not force:
        existing.cached = True
        return existing
    manifest = Manifest(stage=stage, stage_version=stage_version, fingerprint=fp, params=params, upstream=ups)
    with store.writer(manifest) as tmp:
        build(tmp, manifest)
    return manifest
