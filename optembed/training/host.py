"""Process-wide settings of the host that make CPU training steps cheaper.

A training step allocates and frees the same large temporaries (``(B, n, D)`` embeddings, their
masks and gradients) every time. glibc's allocator serves blocks above its mmap threshold with
fresh ``mmap`` pages and gives freed heap memory back to the kernel above its trim threshold, so
each step pays page faults and the kernel's zeroing of the same memory again (9,000 faults and
50 ms of system time per supernet step measured in ``benchmarks/supernet_step.py``).
:func:`tune_allocator` raises both thresholds so the freed blocks are reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # free memory above this is returned to the kernel
OLD_GLIBC_MAX_BYTES = 32 << 20  # the largest threshold some older glibc versions accept on 64-bit

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; ``False`` where there is no glibc
    (macOS, Windows, musl) or the call is refused - nothing else changes then."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) or bool(mallopt(M_MMAP_THRESHOLD, OLD_GLIBC_MAX_BYTES))
    _tuned = mmap_ok and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _tuned
