"""The :class:`Store`: one folder of artifacts, one sub-folder per stage.

Every method works on the store's root and hands over to the module of its concept: reading
(:mod:`pipelines.store.reading`), finding (:mod:`pipelines.store.lookup`), publishing
(:mod:`pipelines.store.publish`) and cleaning (:mod:`pipelines.store.cleanup`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from pipelines.store import cleanup, lookup, publish, reading
from pipelines.store.layout import default_root, temp_dir
from pipelines.store.manifest import Manifest
from pipelines.store.reading import Broken


class Store:
    """A folder of artifacts, one sub-folder per stage."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = default_root(root).resolve()

    # -- reading ---------------------------------------------------------------------------
    def load(self, path: Path) -> Manifest:
        """Read and check one manifest: strict JSON, schema version, self-hash, identity."""
        return reading.load(self.root, path)

    def lookup(self, stage: str, fp: str) -> Manifest | None:
        """The artifact ``stage/fp``, None when the store has none."""
        return lookup.lookup(self.root, stage, fp)

    def scan(self, stage: str | None = None) -> tuple[list[Manifest], list[Broken]]:
        """All artifacts (of one stage, if given), oldest first, and the folders that do not
        load as artifacts (unreadable, modified or foreign manifest, no manifest)."""
        return reading.scan(self.root, stage)

    def list(self, stage: str | None = None) -> list[Manifest]:
        """All readable artifacts (of one stage, if given), oldest first."""
        return self.scan(stage)[0]

    def resolve(self, ref: str | None, stages: str | tuple[str, ...] | None = None) -> Manifest:
        """Find an artifact by fingerprint prefix or path; ``None`` means the newest of ``stages``
        (see :func:`pipelines.store.lookup.resolve`)."""
        return lookup.resolve(self.root, ref, stages)

    def contains(self, manifest: Manifest) -> bool:
        """Whether ``manifest`` is this store's artifact at its proper place."""
        return manifest.path is not None and Path(manifest.path).resolve() == self.root / manifest.stage / manifest.fingerprint

    def recover(self, stage: str) -> list[Path]:
        """Rename back the previous copy of an artifact whose ``--force`` republish was killed
        between its two renames (see :mod:`pipelines.swap`): the folders restored."""
        return reading.recover(self.root, stage)

    # -- dependencies and removal ----------------------------------------------------------
    @staticmethod
    def dependents(target: Manifest, among: list[Manifest]) -> list[Manifest]:
        """The artifacts of ``among`` built from ``target``, directly or through others."""
        return lookup.dependents(target, among)

    def remove(self, folder: Path) -> None:
        """Delete one folder of the store (an artifact, a temporary or resume folder): renamed
        aside first, so a crash midway leaves only a temporary folder that ``gc`` removes."""
        cleanup.remove(self.root, folder)

    def garbage(self, max_age: float = cleanup.STALE_SECONDS) -> list[tuple[Path, str]]:
        """What ``gc`` removes, with the reason (see :mod:`pipelines.store.cleanup`)."""
        return cleanup.garbage(self.root, max_age)

    # -- writing ---------------------------------------------------------------------------
    def clean_stale(self, stage: str, max_age: float = cleanup.STALE_SECONDS) -> int:
        """Remove temporary folders left by crashed runs (dead process or older than max_age)."""
        return cleanup.clean_stale(self.root, stage, max_age)

    def temp_dir(self, stage: str, fp: str) -> Path:
        """The folder this process builds ``stage/fp`` in."""
        return temp_dir(self.root, stage, fp)

    def writer(self, manifest: Manifest, keep_on_error: bool = False) -> AbstractContextManager[Path]:
        """A temporary folder to write into; on success the manifest is written and the folder
        published atomically (see :func:`pipelines.store.publish.writer`)."""
        return publish.writer(self.root, manifest, keep_on_error)
