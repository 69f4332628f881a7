"""Guess a raw file's format from its name and first lines, for ``preprocess`` without ``--format``.

- ``*.parquet`` -> parquet;
- 40 tab-separated columns, no header, a 0/1 first column -> criteo;
- 12 tab-separated columns, no header, a number first -> kdd12;
- a comma-separated header with ``click`` and ``hour`` -> avazu;
- any other delimited file with a header -> csv (its label column must be ``label`` or given).

Files the rules do not settle raise a :class:`ConfigError` that says what was seen and which
option to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optembed.data.formats import AVAZU_COLUMNS, KDD12_COLUMNS
from optembed.errors import ConfigError

HEAD_BYTES = 64 * 1024
CRITEO_COLUMNS = 40


@dataclass(frozen=True)
class Guess:
    fmt: str
    reason: str  # why, in words: "40 tab-separated columns without a header"
    label: str | None = None  # for csv: the label column found
    delimiter: str | None = None


def first_lines(path: Path, count: int = 5) -> list[str]:
    """Up to ``count`` complete lines from the start of ``path`` (text, undecodable bytes replaced)."""
    with Path(path).open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    return [line for line in lines if line.strip()][:count]


def _delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_header(cells: list[str]) -> bool:
    """A header: no number among its non-empty cells."""
    filled = [c.strip().strip('"') for c in cells if c.strip()]
    return bool(filled) and not any(_is_number(c) for c in filled)


def _names(delim: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[delim]


def infer_format(path: Path, label: str | None = None) -> Guess:
    """The format of ``path`` (see the module's rules); ``label`` names a csv label column."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return Guess("parquet", "the .parquet extension", label=label)
    lines = first_lines(path)
    if not lines:
        raise ConfigError(f"{path.name}: no text line to guess the format from; pass --format")
    if "\x00" in lines[0]:
        raise ConfigError(f"{path.name} is not a text file (and not *.parquet); pass --format")
    delim = _delimiter(lines[0])
    cells = lines[0].split(delim)
    n = len(cells)
    header = _looks_like_header(cells)
    kind = f"{n} {_names(delim)}-separated columns"
    if not header and delim == "\t":
        if n == CRITEO_COLUMNS and cells[0].strip() in ("0", "1"):
            return Guess("criteo", f"{kind} without a header, a 0/1 label first (Criteo)")
        if n == len(KDD12_COLUMNS) and _is_number(cells[0]):
            return Guess("kdd12", f"{kind} without a header, a click count first (KDD Cup 2012)")
    if header:
        names = [c.strip().strip('"') for c in cells]
        if delim == "," and {"click", "hour"} <= set(names) and label is None:
            return Guess("avazu", f"a comma-separated header with click and hour (Avazu, {len(AVAZU_COLUMNS)} columns expected)")
        chosen = label or ("label" if "label" in names else None)
        if chosen is None:
            shown = ", ".join(names[:8]) + (", ..." if n > 8 else "")
            raise ConfigError(
                f"{path.name}: a header of {kind} ({shown}) and no 'label' column; pass --format csv --label COLUMN"
            )
        columns = "label columns" if "," in chosen else "label column"
        return Guess("csv", f"a header of {kind}, {columns} '{chosen}'", label=chosen, delimiter=delim)
    raise ConfigError(
        f"{path.name}: {kind} without a header, neither Criteo ({CRITEO_COLUMNS} tab-separated) nor "
        f"KDD12 ({len(KDD12_COLUMNS)} tab-separated); pass --format (and for csv a header with --label)"
    )


EXPECTED = {"criteo": CRITEO_COLUMNS, "kdd12": len(KDD12_COLUMNS), "avazu": len(AVAZU_COLUMNS)}


def mismatch_hint(path: Path, fmt: str) -> str | None:
    """When ``path`` does not look like ``fmt`` but like another format, the hint that names it."""
    try:
        guess = infer_format(path)
    except (ConfigError, OSError):
        return None
    if guess.fmt == fmt:
        return None
    return f"the file looks like {guess.fmt}: {guess.reason}; try --format {guess.fmt}"
