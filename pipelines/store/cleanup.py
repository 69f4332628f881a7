"""What in the store is garbage, and removing it.

One rule decides whether a work folder (the temporary folder of a run, or the previous copy
of an artifact set aside by a ``--force`` republish) is abandoned: its writer's process is gone,
or the folder is older than ``max_age``. A previous copy whose artifact folder is missing is the
only copy of that artifact and is never removed (the next reader renames it back). ``gc``
(:func:`garbage`) applies the rule to every work folder, counting this process's own as
abandoned (``gc`` writes nothing); a writer (:func:`clean_stale`, before each publish) applies it
to the temporary folders of its stage, counting its own process's as live. ``gc`` also removes
resume checkpoints that are old or whose artifact exists, and artifact folders that do not load.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from optembed.errors import ArtifactError
from pipelines import swap
from pipelines.store.layout import ARTIFACT_NAME, RESUME_PREFIX, TMP_PREFIX, check_stage_name, owned, stage_dirs
from pipelines.store.reading import recover, scan

STALE_SECONDS = 24 * 3600
ASIDE = "previous copy of a republished artifact"
TEMPORARY = "temporary folder of an interrupted run"


def abandoned(entry: Path, now: float, max_age: float, own_live: bool) -> str | None:
    """Why the work folder ``entry`` (a temporary or aside folder) is garbage, None when it is kept
    or is no work folder. ``own_live``: this process's folders count as those of a live run."""
    aside = swap.parse_aside(entry.name)
    if aside is None and not entry.name.startswith(TMP_PREFIX):
        return None
    if aside is not None and not os.path.lexists(entry.parent / aside[0]):
        return None  # the only copy of that artifact (its writer still runs, or the next reader restores it)
    mtime = _mtime(entry)
    if mtime is None:  # renamed or removed meanwhile by another run
        return None
    pid = aside[1] if aside is not None else _pid_of(entry.name)
    live = pid is not None and (own_live or pid != os.getpid()) and swap.pid_alive(pid)
    if live and now - mtime < max_age:
        return None
    return ASIDE if aside is not None else TEMPORARY


def garbage(root: Path, max_age: float = STALE_SECONDS) -> list[tuple[Path, str]]:
    """What ``gc`` removes, with the reason: work folders of dead or old runs, resume
    folders that are old or whose artifact exists, and broken artifacts."""
    if not root.is_dir():
        return []
    now = time.time()
    found: list[tuple[Path, str]] = []
    published = {(m.stage, m.fingerprint) for m in scan(root)[0]}  # (recovers killed republishes first)
    for stage_dir in stage_dirs(root):
        for entry in sorted(stage_dir.iterdir()):
            if entry.name.startswith(RESUME_PREFIX):
                mtime = _mtime(entry)
                if mtime is None:
                    continue
                age = now - mtime
                if (stage_dir.name, entry.name[len(RESUME_PREFIX):]) in published:
                    found.append((entry, "resume checkpoint of a finished run"))
                elif age >= max_age:
                    found.append((entry, f"resume checkpoint untouched for {age / 3600:.0f} h"))
                continue
            reason = abandoned(entry, now, max_age, own_live=False)
            if reason is not None:
                found.append((entry, reason))
    for broken in scan(root)[1]:
        if ARTIFACT_NAME.match(broken.name):
            found.append((broken.path, broken.reason))
    return found


def clean_stale(root: Path, stage: str, max_age: float = STALE_SECONDS) -> int:
    """Remove the temporary folders of ``stage`` left by crashed runs (dead process or older
    than ``max_age``); the number removed."""
    stage_dir = root / check_stage_name(stage)
    if not stage_dir.is_dir():
        return 0
    removed = 0
    now = time.time()
    recover(root, stage)
    for tmp in stage_dir.glob(TMP_PREFIX + "*"):
        if abandoned(tmp, now, max_age, own_live=True) is None:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed += 1
    return removed


def remove(root: Path, folder: Path) -> None:
    """Delete one folder of the store (an artifact, a temporary or resume folder): renamed
    aside first, so a crash midway leaves only a temporary folder that ``gc`` removes."""
    folder = owned(root, folder)
    if not folder.exists():
        return
    aside = folder.with_name(f"{TMP_PREFIX}rm-{folder.name.lstrip('.')}-{os.getpid()}")
    try:
        os.replace(folder, aside)
    except OSError as exc:
        raise ArtifactError(f"cannot remove {folder}: {exc.strerror or exc}") from None
    if aside.is_symlink():
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)


def _mtime(path: Path) -> float | None:
    """``path``'s modification time, None when it no longer exists."""
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return None


def _pid_of(name: str) -> int | None:
    """The process id a work folder's name ends with (``...-<pid>``), None when it has none."""
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None
