"""Validation of raw input: the file itself, the CSV reader's rejected lines and rows whose label
or numeric values are invalid. Each problem is one :class:`DataError` naming the first bad line
(and its values), unless ``--skip-bad-rows`` asks to drop and count such rows."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Protocol

import duckdb

from optembed.data.formats import FormatSpec, q
from optembed.errors import DataError


class SkipPolicy(Protocol):
    skip_bad_rows: bool


def first_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The first row of a query (the result is consumed whole)."""
    rows = con.execute(sql).fetchall()
    return rows[0] if rows else ()


def check_input(path: Path) -> None:
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    if path.is_dir():
        raise DataError(f"input is a folder, not a file: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(1)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise DataError(f"input file is empty: {path}")



_COLUMNS_FOUND = re.compile(r"Expected Number of Columns:\s*(\d+)\s*Found:\s*(\d+)")


def check_rejects(
    con: duckdb.DuckDBPyConnection, path: Path, spec: FormatSpec, cfg: SkipPolicy
) -> tuple[int, int]:
    """Lines the CSV reader rejected: (lines it could not split into the expected columns, lines
    with a value not of its column's type, as a non-number in a Criteo integer column). An error
    naming the first such line unless ``--skip-bad-rows``."""
    try:
        rows = con.execute(
            "SELECT line, CAST(error_type AS VARCHAR), column_name, csv_line, error_message FROM reject_errors ORDER BY line"
        ).fetchall()
    except duckdb.Error:
        return 0, 0  # Parquet input: no CSV rejects table
    if not rows:
        return 0, 0
    kinds: dict[int, set[str]] = {}
    for line, kind, *_ in rows:
        kinds.setdefault(line, set()).add(str(kind))
    cast_lines = sorted(line for line, k in kinds.items() if k == {"CAST"})
    other_lines = sorted(set(kinds) - set(cast_lines))
    if cfg.skip_bad_rows:
        return len(other_lines), len(cast_lines)
    if other_lines:
        first = next(r for r in rows if r[0] == other_lines[0])
        line, kind, _, _, message = first
        found = _COLUMNS_FOUND.search(message or "")
        if found:
            detail = f"line {line} has {found.group(2)} columns, expected {found.group(1)}"
        elif kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
            detail = f"line {line} has the wrong number of columns (expected {spec.expected_columns})"
        else:
            detail = f"line {line}: {str(kind).lower()}: {_one_line(message)}"
        count = len(other_lines)
        raise DataError(f"{path.name}: {detail} ({count} bad line{'s' if count > 1 else ''}; --skip-bad-rows drops them)")
    line = cast_lines[0]
    columns = [r[2] for r in rows if r[0] == line and r[2]]
    values = _raw_values(next(r[3] for r in rows if r[0] == line), spec, columns)
    count = len(cast_lines)
    raise DataError(
        f"{path.name}: {count} row{'s' if count > 1 else ''} with a non-numeric value in a numeric field "
        f"(first in line {line}: {values}); fix the file or pass --skip-bad-rows"
    )


def _raw_values(csv_line: str | None, spec: FormatSpec, columns: list[str]) -> str:
    """``col='value'`` for the named columns of a rejected raw line (as far as it can be split)."""
    parts = (csv_line or "").rstrip("\r\n").split("\t")
    names = spec.columns or []
    shown = []
    for c in columns[:3]:
        k = names.index(c) if c in names else -1
        shown.append(f"{c}={parts[k]!r}" if 0 <= k < len(parts) else c)
    return ", ".join(shown) or _one_line(csv_line)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:200]


def check_rows(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    spec: FormatSpec,
    cfg: SkipPolicy,
    count: int,
    condition: str,
    what: str,
    columns: list[str],
) -> int:
    """``count`` parsed rows match ``condition``: an error naming the first one unless skipped.
    The raw values are read back from the file (only on this error path)."""
    if not count:
        return 0
    if cfg.skip_bad_rows:
        return count
    first = int(first_row(con, f"SELECT min(rowid) FROM parsed WHERE {condition}")[0])
    detail = f"first in data row {first + 1}"
    if columns:
        raw = first_row(con, f"SELECT {', '.join(q(c) for c in columns)} FROM {spec.reader_sql} LIMIT 1 OFFSET {first}")
        shown = [f"{c}={v!r}" for c, v in zip(columns, raw, strict=True)]
        if len(columns) > 1:  # name the offending numeric column(s) only
            ok = [v is None or _is_number(v) for v in raw]
            shown = [s for s, good in zip(shown, ok, strict=True) if not good] or shown[:1]
        detail += ": " + ", ".join(shown[:3])
    raise DataError(
        f"{path.name}: {count} row{'s' if count > 1 else ''} with {what} ({detail}); fix the file or pass --skip-bad-rows"
    )


def check_numeric_columns(
    con: duckdb.DuckDBPyConnection, path: Path, spec: FormatSpec, numeric: list[str] | None
) -> None:
    """A ``--numeric`` column whose values are mostly not numbers is a text column declared
    numeric: one error naming it (and a value of it), advising to drop it from ``--numeric``,
    rather than rows to skip. A few stray values in a numeric column are left to
    :func:`check_rows`."""
    for name in dict.fromkeys(numeric or []):
        col = q(name)
        text = f"CAST({col} AS VARCHAR)"
        filled, bad, example = first_row(
            con,
            f"SELECT count({col}) FILTER (WHERE {text} <> ''), "
            f"count(*) FILTER (WHERE {text} <> '' AND TRY_CAST({text} AS DOUBLE) IS NULL), "
            f"min({text}) FILTER (WHERE {text} <> '' AND TRY_CAST({text} AS DOUBLE) IS NULL) "
            f"FROM {spec.reader_sql}",
        )
        if bad and 2 * int(bad) >= int(filled):
            raise DataError(
                f"{path.name}: column '{name}' is not numeric ({int(bad):,} of its {int(filled):,} values are not "
                f"numbers, e.g. {_one_line(str(example))[:40]!r}): drop it from --numeric (it is then encoded as a "
                "categorical field)"
            )


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
