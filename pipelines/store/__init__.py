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

One module per concept; this package's names below are its public interface:

- :mod:`~pipelines.store.jsontext`: canonical JSON (for hashing) and strict JSON (for writing);
- :mod:`~pipelines.store.layout`: folder names, fingerprints, the store's root;
- :mod:`~pipelines.store.manifest`: the :class:`Manifest` and the integrity of its files;
- :mod:`~pipelines.store.reading`: loading and checking manifests, scanning the store;
- :mod:`~pipelines.store.lookup`: id prefixes, the newest artifact, dependents;
- :mod:`~pipelines.store.publish`: build aside, rename into place;
- :mod:`~pipelines.store.write_errors`: a full disk (or a read-only one) as one clear line;
- :mod:`~pipelines.store.cleanup`: the one rule of what is garbage, ``gc``;
- :mod:`~pipelines.store.store`: the :class:`Store` that ties them together.
"""

from __future__ import annotations

from pipelines.store.cleanup import STALE_SECONDS
from pipelines.store.jsontext import canonical_json, strict_dumps, strict_json_value
from pipelines.store.layout import (
    ENV_VAR,
    MANIFEST,
    RESUME_PREFIX,
    TMP_PREFIX,
    check_fingerprint,
    check_stage_name,
    default_root,
    fingerprint,
)
from pipelines.store.manifest import CHEAP_HASH_BYTES, SCHEMA_VERSION, Manifest, file_records, manifest_digest
from pipelines.store.reading import Broken
from pipelines.store.store import Store
from pipelines.store.write_errors import release_frames, write_error

__all__ = [
    "CHEAP_HASH_BYTES",
    "ENV_VAR",
    "MANIFEST",
    "RESUME_PREFIX",
    "SCHEMA_VERSION",
    "STALE_SECONDS",
    "TMP_PREFIX",
    "Broken",
    "Manifest",
    "Store",
    "canonical_json",
    "check_fingerprint",
    "check_stage_name",
    "default_root",
    "file_records",
    "fingerprint",
    "manifest_digest",
    "release_frames",
    "strict_dumps",
    "strict_json_value",
    "write_error",
]
