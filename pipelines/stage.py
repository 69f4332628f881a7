"""Shared run logic of every stage: fingerprint, skip when cached, publish atomically."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from optembed.errors import ArtifactError
from pipelines import provenance
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
    device: str | torch.device | None = None,
) -> Manifest:
    """Return the cached artifact for these inputs, or build and publish a new one.

    ``build(tmp_dir, manifest)`` writes outputs into ``tmp_dir`` and fills
    ``manifest.outputs`` and ``manifest.metrics``; the manifest (with the files' sizes and
    hashes and the provenance) is written and the folder renamed into place only when it
    returns normally. Every upstream artifact must belong to ``store``. ``device`` (the one the
    stage computes on, when known) goes into the provenance; a cached artifact computed under
    another device, thread count or torch version gets a note in ``manifest.notes``.
    """
    for name, m in upstream.items():
        if not store.contains(m):
            raise ArtifactError(
                f"upstream {name} artifact {m.fingerprint} ({m.path}) is not in the store {store.root}; "
                f"a stage only builds on artifacts of its own store"
            )
    ups = {name: m.fingerprint for name, m in upstream.items()}
    fp = fingerprint(stage, stage_version, params, ups)
    existing = None if force else store.lookup(stage, fp)
    if existing is not None:
        existing.cached = True
        existing.notes.extend(provenance.cached_notes(stage, fp, existing.provenance, device))
        return existing
    manifest = Manifest(stage=stage, stage_version=stage_version, fingerprint=fp, params=params, upstream=ups)
    with store.writer(manifest) as tmp:
        build(tmp, manifest)
        manifest.provenance = provenance.collect(device if device is not None else manifest.metrics.get("device"))
    return manifest
