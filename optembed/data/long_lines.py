"""A line too long for the CSV reader, found before the reader drops it without a word.

DuckDB's CSV reader, under ``ignore_errors`` (which the bad-row accounting relies on), skips a
line longer than its maximum line size without recording it anywhere; on a large file that
first costs minutes. :func:`check_line_lengths` reads the file once in large blocks (the
newlines found with numpy, no per-line Python) and stops at the first line of ``limit`` bytes
or more, with one :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optembed.errors import DataError

LIMIT = 64 << 20  # bytes; far beyond any CTR row, below what the reader accepts
BLOCK = 16 << 20


def check_line_lengths(path: Path, limit: int = LIMIT, block: int = BLOCK) -> None:
    """Raise a :class:`DataError` when a line of ``path`` has ``limit`` bytes or more."""
    run = 0  # bytes of the current line so far
    lines = 0  # complete lines before the current one
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block)
            if not chunk:
                return
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            if newlines.size == 0:
                run += len(chunk)
            else:
                longest = max(run + int(newlines[0]), int(np.diff(newlines).max(initial=0)) - 1)
                if longest >= limit:
                    gaps = np.diff(np.concatenate(([-run - 1], newlines))) - 1
                    at = lines + int(np.flatnonzero(gaps >= limit)[0]) + 1
                    raise _too_long(path, at, limit)
                lines += int(newlines.size)
                run = len(chunk) - int(newlines[-1]) - 1
            if run >= limit:
                raise _too_long(path, lines + 1, limit)


def _too_long(path: Path, line: int, limit: int) -> DataError:
    return DataError(
        f"{path}: line {line:,} is {f'{limit >> 20} MB' if limit >= 1 << 20 else f'{limit:,} bytes'} or longer (no data row is that long; is it the right file, or a "
        "file without line breaks?)"
    )
