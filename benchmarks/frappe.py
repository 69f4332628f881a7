"""Frappe's libFM files -> one CSV that ``optembed preprocess`` reads, plus its train/val/test rows.

Frappe (app usage logs, 10 categorical fields) is published as libFM text: one row per line,
``label id:1 id:1 ...`` with a label of -1 or 1 and one ``id:1`` token per field in the order
``user, item, daytime, weekday, isweekend, homework, cost, weather, country, city``. Its licence
allows research use and forbids redistribution, so it is read from a local copy and never kept
in this repository.

The CSV has a header ``label,user,item,...,city``; the label is 0/1 (-1 and 0 -> 0, 1 and +1 -> 1)
and every field holds the libFM id as a string (the id alone names the value; the ``:1`` is
dropped). Rows are written in the order of the inputs, each input in file order (a folder means
its ``frappe.validation.libfm`` then ``frappe.test.libfm``). The whole conversion is columnar
(pyarrow compute); a malformed line stops it with an error naming the file and the line, and
nothing is written.

``convert(src_dir, out_dir)`` also writes ``train.csv``, ``val.csv`` and ``test.csv``: the rows
``optembed preprocess frappe.csv`` puts in each split with the same ``--seed`` and ``--split``
(default 2022 and 0.8,0.1,0.1), raw values, each split in file order. They come from optembed's
own split (a seeded hash of each row's position, independent of ``--min-count`` and
``--count-on``), so a peer handed these files trains and tests on exactly optembed's rows.

Usage::

    python benchmarks/frappe.py /path/to/frappe --out-dir work/frappe   # frappe.csv + train/val/test.csv
    python benchmarks/frappe.py a.libfm b.libfm -o frappe.csv           # any libFM files, in order: CSV only
    optembed preprocess work/frappe/frappe.csv --format csv --label label --min-count 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
SPLIT_FILES = ("frappe.validation.libfm", "frappe.test.libfm")  # the order the rows are written in
SPLITS = ("train", "val", "test")
SEED = 2022  # optembed preprocess's default --seed
SPLIT = (0.8, 0.1, 0.1)  # and --split
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


def write_csv(inputs: list[Path], out: Path, fields: tuple[str, ...] = FIELDS) -> int:
    """Write ``inputs`` (in order) as one CSV at ``out``; returns the number of rows written.

    The CSV is written next to ``out`` under a temporary name and renamed when complete, so a
    failure leaves no partial file."""
    # ids are digits only (checked above), so no value needs quoting
    table = pa.concat_tables([read_libfm(p, fields) for p in resolve_inputs(inputs)])
    if table.num_rows == 0:
        raise LibfmError(f"{', '.join(map(str, inputs))}: no rows")
    _write_table(table, out)
    return table.num_rows


def _write_table(table: pa.Table, out: Path) -> None:
    """``table`` as a headed, unquoted CSV at ``out``, renamed into place when complete."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write((",".join(table.column_names) + "\n").encode())
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LibfmError(f"{out}: cannot write ({exc.strerror})") from None


def split_rows(csv: Path, out_dir: Path, seed: int = SEED, split: tuple[float, float, float] = SPLIT) -> dict[str, Path]:
    """Write ``out_dir/{train,val,test}.csv``: ``csv``'s rows in the splits ``optembed preprocess``
    gives them with this ``seed`` and ``split``.

    optembed's preprocess runs on ``csv`` with every value kept (``--min-count 1 --count-on all``)
    into a temporary folder, and each encoded split is decoded back through its vocabulary."""
    from optembed.data.preprocess import PreprocessConfig, preprocess
    from optembed.errors import OptembedError

    cfg = PreprocessConfig(fmt="csv", label="label", min_count=1, count_on="all", seed=seed, split=split)
    paths = {name: out_dir / f"{name}.csv" for name in SPLITS}
    with tempfile.TemporaryDirectory(prefix="frappe_split_") as tmp:
        try:
            result = preprocess(csv, cfg, Path(tmp))
        except (OptembedError, OSError) as exc:
            raise LibfmError(f"{csv}: optembed preprocess failed ({exc})") from None
        fields = result.schema["fields"]
        values = [_id_to_value(Path(tmp) / f["vocab"], f["cardinality"]) for f in fields]
        for name in SPLITS:
            encoded = pq.read_table(Path(tmp) / f"{name}.parquet")
            columns = {"label": encoded.column("label")}
            for f, lookup in zip(fields, values):
                columns[f["name"]] = pc.take(lookup, encoded.column(f["name"]))
            _write_table(pa.table(columns), paths[name])
    return paths


def _id_to_value(vocab_file: Path, cardinality: int) -> pa.Array:
    """A field's vocabulary as an array indexed by id (ids 0 and 1, OOV and missing, are null)."""
    vocab = pq.read_table(vocab_file, columns=["value", "id"]).sort_by("id")
    if vocab.num_rows != cardinality or vocab.column("id").to_pylist() != list(range(cardinality)):
        raise LibfmError(f"{vocab_file}: ids are not 0..{cardinality - 1}")
    return vocab.column("value").combine_chunks()


def convert(src_dir: Path, out_dir: Path, seed: int = SEED, split: tuple[float, float, float] = SPLIT) -> dict[str, Path]:
    """Frappe's validation and test files in ``src_dir`` -> ``out_dir/frappe.csv`` (all rows) and
    ``out_dir/{train,val,test}.csv`` (optembed's split of them); returns the paths by those names
    (``csv``, ``train``, ``val``, ``test``)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LibfmError(f"{out_dir}: cannot create ({exc.strerror})") from None
    csv = out_dir / "frappe.csv"
    write_csv([Path(src_dir)], csv)
    try:
        return {"csv": csv, **split_rows(csv, out_dir, seed, split)}
    except LibfmError:
        for name in ("frappe", *SPLITS):  # all four files or none
            (out_dir / f"{name}.csv").unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="libFM files, or a folder holding Frappe's validation and test files")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--out", type=Path, help="the CSV to write (all rows, nothing else)")
    out.add_argument("--out-dir", type=Path, help="write frappe.csv and its train/val/test.csv here")
    parser.add_argument("--seed", type=int, default=SEED, help=f"optembed preprocess's --seed for the split (default {SEED})")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            rows = write_csv(args.inputs, args.out)
            print(f"wrote {rows} rows x {len(FIELDS)} fields to {args.out}")
            return 0
        if len(args.inputs) != 1:
            raise LibfmError("--out-dir takes one Frappe folder (frappe.validation.libfm, frappe.test.libfm)")
        paths = convert(args.inputs[0], args.out_dir, seed=args.seed)
    except LibfmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
