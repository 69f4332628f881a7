"""Finding artifacts: by stage and fingerprint, by id prefix or folder, the newest of a stage,
and the artifacts built from one (its dependents, through their ``upstream`` ids).

Artifacts are only read from the store itself: a folder given by path must be one of its
artifact folders.
"""

from __future__ import annotations

from pathlib import Path

from optembed.errors import ArtifactError
from pipelines.store.layout import HEX, MANIFEST, check_fingerprint, check_stage_name
from pipelines.store.manifest import Manifest
from pipelines.store.reading import load, recover, scan


def lookup(root: Path, stage: str, fp: str) -> Manifest | None:
    """The artifact ``stage/fp`` of the store at ``root``, None when there is none."""
    path = root / check_stage_name(stage) / check_fingerprint(fp)
    if not path.exists():
        recover(root, stage)
    if (path / MANIFEST).is_file():
        return load(root, path)
    return None


def newest(manifests: list[Manifest]) -> Manifest:
    """The most recently created of ``manifests`` (the greater fingerprint on a tie)."""
    return max(manifests, key=lambda m: (m.created, m.fingerprint))


def resolve(root: Path, ref: str | None, stages: str | tuple[str, ...] | None = None) -> Manifest:
    """Find an artifact by fingerprint prefix or path; ``None`` means the newest of ``stages``.

    Raises ``ArtifactError`` when nothing matches, the prefix is ambiguous, the artifact
    belongs to a stage other than the expected ones, or a folder lies outside the store.
    """
    wanted = (stages,) if isinstance(stages, str) else stages
    if ref is None:
        if not wanted:
            raise ArtifactError("no artifact given")
        candidates = [m for s in wanted for m in scan(root, s)[0]]
        if not candidates:
            raise ArtifactError(
                f"no {' or '.join(wanted)} artifact in {root}; run that stage first or pass --from"
            )
        manifest = newest(candidates)
    else:
        manifest = find(root, ref)
    if wanted and manifest.stage not in wanted:
        raise ArtifactError(
            f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected {' or '.join(wanted)}"
        )
    return manifest


def find(root: Path, ref: str) -> Manifest:
    """The one artifact whose fingerprint starts with ``ref``, or the artifact folder ``ref``."""
    if not HEX.match(ref):
        as_path = Path(ref)
        if not as_path.exists():
            raise ArtifactError(
                f"no artifact matches '{ref}' (neither an id prefix in {root} nor an artifact folder)"
            )
        folder = as_path.resolve()
        if not folder.is_relative_to(root) or folder.parent.parent != root:
            raise ArtifactError(
                f"{ref} is not an artifact folder of the store {root}; artifacts are read from their "
                f"own store only (pass --artifacts with the store that holds it)"
            )
        if not (folder / MANIFEST).is_file():
            raise ArtifactError(f"{ref} is a folder without manifest.json")
        return load(root, folder)
    found, broken = scan(root)
    matches = [m for m in found if m.fingerprint.startswith(ref)]
    if not matches:
        damaged = [b for b in broken if b.name.startswith(ref)]
        if len(damaged) == 1 and ref:
            raise ArtifactError(damaged[0].reason)
        raise ArtifactError(f"no artifact matches '{ref}' in {root}")
    if len(matches) > 1:
        ids = ", ".join(f"{m.stage}/{m.fingerprint}" for m in matches[:5])
        raise ArtifactError(f"'{ref}' is ambiguous: {ids}")
    return matches[0]


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
