"""Publishing an artifact: built aside in a temporary folder, renamed into place when complete.

An interrupted run never leaves a half-written artifact under its final name. Republishing
(``--force``) swaps the new folder and the old one in one step where the system can, else renames
the old one aside first (:mod:`pipelines.swap`). A failed write (disk full, quota, read-only)
becomes one :class:`~optembed.errors.ArtifactError` and nothing is published.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from optembed.errors import ArtifactError
from pipelines import swap
from pipelines.store.cleanup import clean_stale
from pipelines.store.jsontext import strict_json_value
from pipelines.store.layout import MANIFEST, check_fingerprint, check_stage_name, temp_dir
from pipelines.store.manifest import Manifest, file_records, manifest_digest
from pipelines.store.reading import load
from pipelines.store.write_errors import release_frames, write_error


@contextlib.contextmanager
def writer(root: Path, manifest: Manifest, keep_on_error: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success write the manifest and publish atomically.

    The caller fills ``manifest.outputs`` / ``manifest.metrics`` while writing. The store
    then records every file's size and sha256 and the manifest's own hash. On any exception
    the temporary folder is removed (unless ``keep_on_error``) and nothing appears under the
    final name; a failed write (disk full, quota, read-only) becomes one
    :class:`ArtifactError`.
    """
    final = root / check_stage_name(manifest.stage) / check_fingerprint(manifest.fingerprint)
    tmp = temp_dir(root, manifest.stage, manifest.fingerprint)
    what = f"the {manifest.stage} artifact"
    failure: ArtifactError | None = None
    try:
        clean_stale(root, manifest.stage)
        tmp.mkdir(parents=True, exist_ok=True)
        yield tmp
        _write_manifest(manifest, tmp)
        if final.exists():  # --force: replace the previous result (one exchange: see pipelines.swap)
            swap.replace_folder(tmp, final)
        else:
            try:
                os.replace(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / MANIFEST).is_file():
                    raise
                # Another run of the same inputs published first: keep its artifact, drop ours.
                shutil.rmtree(tmp, ignore_errors=True)
                _take(manifest, load(root, final))
        manifest.path = final
    except (OSError, RuntimeError) as exc:
        if not keep_on_error:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = write_error(exc, what, "nothing was published")
        if failure is None:
            raise
        release_frames(exc)
    except BaseException:
        if not keep_on_error:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failure is not None:
        raise failure


def _write_manifest(manifest: Manifest, folder: Path) -> None:
    """Record the files of ``folder`` and the manifest's own hash; write it, synced to disk."""
    manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest.files = file_records(folder)
    data = strict_json_value(manifest.to_dict())
    data["manifest_sha256"] = manifest.manifest_sha256 = manifest_digest(data)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with (folder / MANIFEST).open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _take(manifest: Manifest, published: Manifest) -> None:
    """Make ``manifest`` describe ``published`` (the artifact another run put in its place)."""
    for name in Manifest.__dataclass_fields__:
        if name not in ("cached", "notes", "_hashed"):
            setattr(manifest, name, getattr(published, name))
