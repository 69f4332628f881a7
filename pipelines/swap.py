"""Replacing a published folder by a new one so that a reader, or a kill, never finds neither.

On Linux one ``renameat2(..., RENAME_EXCHANGE)`` swaps the new folder and the old one: at every
instant the final name holds one whole copy, and the old copy ends under the new folder's
temporary name (removed afterwards, or by the next cleanup when the process is killed first).
Where the call is missing (another system, an old kernel, a file system without it) the old
folder is renamed aside under :data:`OLD_PREFIX` (``.old-<name>-<pid>``), then the new one into
place; a process killed between the two renames leaves the aside folder and no final one, which
:func:`recover` (run by every reader, writer and ``gc`` of the store) renames back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

OLD_PREFIX = ".old-"
LEGACY_OLD_PREFIX = ".tmp-old-"  # what earlier versions named the aside copy
RENAME_EXCHANGE = 2
AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EPERM}
_SYSCALL_NUMBERS = {"x86_64": 316, "aarch64": 276, "arm64": 276}
_CACHE: list[Callable[[bytes, bytes], int] | None] = []


def _renameat2() -> Callable[[bytes, bytes], int] | None:
    """``(a, b) -> 0 or errno`` exchanging ``a`` and ``b``, or None where the call is missing."""
    if _CACHE:
        return _CACHE[0]
    found: Callable[[bytes, bytes], int] | None = None
    if os.uname().sysname == "Linux":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            libc = None
        if libc is not None and hasattr(libc, "renameat2"):
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int

            def call(a: bytes, b: bytes) -> int:
                return 0 if fn(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0 else ctypes.get_errno()

            found = call
        elif libc is not None and os.uname().machine in _SYSCALL_NUMBERS:
            number = _SYSCALL_NUMBERS[os.uname().machine]
            syscall = libc.syscall
            syscall.restype = ctypes.c_long

            def call(a: bytes, b: bytes) -> int:
                rc = syscall(ctypes.c_long(number), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(a), ctypes.c_int(AT_FDCWD),
                             ctypes.c_char_p(b), ctypes.c_uint(RENAME_EXCHANGE))
                return 0 if rc == 0 else ctypes.get_errno()

            found = call
    _CACHE.append(found)
    return found


def exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` (both must exist) in one step; False where the system
    cannot (the caller then falls back to two renames)."""
    call = _renameat2()
    if call is None:
        return False
    code = call(os.fsencode(str(a)), os.fsencode(str(b)))
    if code == 0:
        return True
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b))


def aside_name(final: Path) -> Path:
    return final.with_name(f"{OLD_PREFIX}{final.name}-{os.getpid()}")


def replace_folder(new: Path, final: Path) -> None:
    """Put the folder ``new`` at ``final`` (which exists) and remove the old copy."""
    if exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old copy
        return
    aside = aside_name(final)
    os.replace(final, aside)
    os.replace(new, final)
    shutil.rmtree(aside, ignore_errors=True)


def parse_aside(name: str) -> tuple[str, int] | None:
    """``(final name, pid)`` of an aside folder's name, or None for other names."""
    for prefix in (OLD_PREFIX, LEGACY_OLD_PREFIX):
        if name.startswith(prefix):
            final, _, pid = name[len(prefix):].rpartition("-")
            if final and pid.isdigit():
                return final, int(pid)
    return None


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(folder: Path, complete: Callable[[Path], bool] = lambda p: True) -> list[Path]:
    """Rename back every aside folder in ``folder`` whose final name is missing and whose writer
    is gone (``complete(aside)``: it holds a whole copy); the folders renamed back."""
    restored: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return restored
    for entry in entries:
        parsed = parse_aside(entry.name)
        if parsed is None or entry.is_symlink() or not entry.is_dir():
            continue
        final_name, pid = parsed
        final = folder / final_name
        if os.path.lexists(final) or (pid != os.getpid() and pid_alive(pid)) or not complete(entry):
            continue
        try:
            os.rename(entry, final)
        except OSError:  # another process restored or published it meanwhile, or a read-only store
            continue
        restored.append(final)
    return restored
