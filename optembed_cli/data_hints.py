"""A clearer line when a file read as one format fails on its column count because it is in another."""

from __future__ import annotations

import re
from pathlib import Path

from optembed.data.sniff import infer_format, mismatch_hint
from optembed.errors import ConfigError, DataError

# the advice to drop bad lines, which does not help when the whole file is in another format
_DROP_ADVICE = re.compile(r"\s*\([\d,]+ bad lines?; --skip-bad-rows drops them\)|;? fix the file or pass --skip-bad-rows")


def looks_like(file: Path, fmt: str) -> str | None:
    """What ``file`` looks like when that is not ``fmt``, with the option to pass; ``None`` when
    it looks like ``fmt`` or like nothing known."""
    hint = mismatch_hint(file, fmt)
    if hint is not None or fmt in ("csv", "parquet"):
        return hint
    try:
        infer_format(file)
    except ConfigError as exc:  # a header without a 'label' column: csv, whose label must be named
        text = str(exc)
        if "--format csv" in text:
            return "the file looks like csv: " + text.split(": ", 1)[-1]
    return None


def explain(exc: DataError, file: Path, fmt: str) -> DataError | None:
    """For a column-count error of ``file`` read as ``fmt``: the error that says which format the
    file looks like (instead of advising to drop every line); ``None`` when there is nothing to add."""
    if "column" not in str(exc) or not file.is_file():
        return None
    hint = looks_like(file, fmt)
    if hint is None:
        return None
    return DataError(f"{_DROP_ADVICE.sub('', str(exc))}: the file does not read as {fmt}; {hint}")
