"""Frappe's libFM files -> one CSV that ``optembed preprocess`` reads.

Frappe (app usage logs, 10 categorical fields) is published as libFM text: one row per line,
``label id:1 id:1 ...`` with a label of -1 or 1 and one ``id:1`` token per field in the order
``user, item, daytime, weekday, isweekend, homework, cost, weather, country, city``. Its licence
allows research use and forbids redistribution, so it is read from a local copy and never kept
in this repository.

The CSV has a header ``label,user,item,...,city``; the label is 0/1 (-1 and 0 -> 0, 1 and +1 -> 1)
and every field holds the libFM id as a string (the id alone names the value; the ``:1`` is
dropped). Rows are written in the order of the inputs, each input in file order. The whole
conversion is columnar (pyarrow compute); a malformed line stops it with an error naming the
file and the line, and nothing is written.

Usage::

    python benchmarks/frappe.py /path/to/frappe -o frappe.csv     # validation then test file
    python benchmarks/frappe.py a.libfm b.libfm -o frappe.csv      # any libFM files, in order
    optembed preprocess frappe.csv --format csv --label label --min-count 1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
SPLIT_FILES = ("frappe.validation.libfm", "frappe.test.libfm")  # the order the rows are written in
_POSITIVE = ("1", "+1")
_NEGATIVE = ("-1", "0")
_TOKEN = r"^[0-9]+:(1|1\.0*)$"  # a one-hot libFM token: integer id, value 1


class LibfmError(ValueError):
    """A libFM input that is not Frappe-shaped (the message names the file and line)."""


def resolve_inputs(paths: list[Path]) -> list[Path]:
    """A folder stands for its ``frappe.validation.libfm`` then ``frappe.test.libfm``."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            missing = [name for name in SPLIT_FILES if not (p / name).is_file()]
            if missing:
                raise LibfmError(f"{p}: no {', '.join(missing)} in this folder")
            out.extend(p / name for name in SPLIT_FILES)
        elif p.is_file():
            out.append(p)
        else:
            raise LibfmError(f"{p}: no such file")
    return out


def read_libfm(path: Path, fields: tuple[str, ...] = FIELDS) -> pa.Table:
    """One libFM file as a table ``label`` (int8, 0/1) + one string column per field, in file order.

    Blank lines are skipped; whitespace around and between tokens may be any run of spaces/tabs;
    ``\\r\\n`` line ends are accepted."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LibfmError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LibfmError(f"{path}: cannot read ({exc.strerror})") from None
    lines = pc.utf8_trim_whitespace(pa.array(text.splitlines(), type=pa.string()))
    line_no = np.flatnonzero(pc.not_equal(lines, "").to_numpy(zero_copy_only=False)) + 1
    lines = lines.filter(pc.not_equal(lines, ""))
    names = ["label", *fields]
    if len(lines) == 0:
        return pa.table({n: pa.array([], type=pa.int8() if n == "label" else pa.string()) for n in names})
    tokens = pc.split_pattern_regex(lines, r"\s+")
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(counts != len(names))
    if wrong.size:
        i = int(wrong[0])
        raise LibfmError(
            f"{path}:{line_no[i]}: expected a label and {len(fields)} id:1 tokens, found {int(counts[i])} tokens"
            + (f" ({wrong.size} such lines)" if wrong.size > 1 else "")
        )
    label_text = pc.list_element(tokens, 0)
    positive = pc.is_in(label_text, value_set=pa.array(_POSITIVE))
    known = pc.or_(positive, pc.is_in(label_text, value_set=pa.array(_NEGATIVE))).to_numpy(zero_copy_only=False)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise LibfmError(f"{path}:{line_no[i]}: label {label_text[i].as_py()!r} is not -1, 0 or 1")
    columns = {"label": pc.cast(positive, pa.int8())}
    for j, name in enumerate(fields, start=1):
        tok = pc.list_element(tokens, j)
        ok = pc.match_substring_regex(tok, _TOKEN).to_numpy(zero_copy_only=False)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise LibfmError(
                f"{path}:{line_no[i]}: field {j} ({name}) token {tok[i].as_py()!r} is not id:1 (an integer id with value 1)"
            )
        columns[name] = pc.replace_substring_regex(tok, r":.*$", "")
    return pa.table(columns)


def convert(inputs: list[Path], out: Path, fields: tuple[str, ...] = FIELDS) -> int:
    """Write ``inputs`` (in order) as one CSV at ``out``; returns the number of rows written.

    The CSV is written next to ``out`` under a temporary name and renamed when complete, so a
    failure leaves no partial file."""
    # ids are digits only (checked above), so no value needs quoting
    table = pa.concat_tables([read_libfm(p, fields) for p in resolve_inputs(inputs)])
    if table.num_rows == 0:
        raise LibfmError(f"{', '.join(map(str, inputs))}: no rows")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write((",".join(table.column_names) + "\n").encode())
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LibfmError(f"{out}: cannot write ({exc.strerror})") from None
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="libFM files, or a folder holding Frappe's validation and test files")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the CSV to write")
    args = parser.parse_args(argv)
    try:
        rows = convert(args.inputs, args.out)
    except LibfmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {rows} rows x {len(FIELDS)} fields to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
