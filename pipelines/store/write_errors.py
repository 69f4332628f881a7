"""A failed write (disk full, quota, read-only, I/O) as one clear line instead of a traceback.

Used by the store's writer and by every other writer of the project's files (export bundles,
predictions, resume checkpoints).
"""

from __future__ import annotations

import errno
import os

from optembed.errors import ArtifactError

_TORCH_WRITE_FAILED = ("file write failed", "inline_container.cc", "unexpected pos")
_WRITE_ERRNOS = {errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def write_error(exc: BaseException, what: str, after: str = "") -> ArtifactError | None:
    """One-line :class:`ArtifactError` for a failed write (disk full, quota, read-only, I/O) of
    ``what``, or ``None`` when ``exc`` is not such a failure. ``after`` is appended (what was
    kept or removed). Covers ``OSError`` and torch's ``RuntimeError`` from ``torch.save``."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    hint = "; free some space and rerun"
    if code == errno.EDQUOT or "quota exceeded" in text:
        reason = "disk quota exceeded"
    elif code == errno.ENOSPC or "no space left" in text:
        reason = "no space left on device"
    elif any(marker in text for marker in _TORCH_WRITE_FAILED):
        reason = "the file write failed (is the disk full?)"
    elif isinstance(exc, OSError) and code in _WRITE_ERRNOS:
        reason, hint = (exc.strerror or os.strerror(code)).lower(), ""  # type: ignore[arg-type]
    else:
        return None
    tail = f"; {after}" if after else ""
    return ArtifactError(f"{reason} while writing {what}{_filename(exc)}{hint}{tail}")


def release_frames(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and the exceptions chained to it: the frames of a failed
    write hold its half-written file open (on a full disk, the space), and the error raised
    instead would keep them reachable through its context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        todo += [current.__context__, current.__cause__]


def _filename(exc: BaseException) -> str:
    name = getattr(exc, "filename", None)
    return f" ({name})" if name else ""
