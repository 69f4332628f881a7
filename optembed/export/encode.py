"""Raw rows -> the ids a bundle's graph reads, with the very preprocessing the model was trained on.

The file is parsed by the same DuckDB readers, token expressions (Criteo's ``floor(ln(v)^2)``,
Avazu's hour split, ...) and validity checks as ``preprocess`` (:mod:`optembed.data.formats`,
:mod:`optembed.data.validation`); a numeric csv/Parquet field with recorded quantile boundaries
(``bucketing`` in the bundle's field record) is bucketed by the same SQL as preprocess
(:func:`optembed.data.buckets.bucket_sql` over the recorded boundaries, never refitted), one
without them (a bundle of an earlier artifact) by the log-square rule it was trained with. Each
token is looked up in the bundle's vocabulary of its field: a value never kept there is the OOV id, an empty one the missing id. Rows keep the file's
order; the encoded rows go to a Parquet file that the scorer then streams in batches, so a
file larger than memory works (DuckDB spills under its memory limit).

The label column is optional: Criteo lines of 39 columns, KDD12 lines of 11 and Avazu or
csv/Parquet files without the label column are scored without one. A bundle of several tasks
names every task's label column (csv/Parquet): those the file has are read (and checked like
preprocess checks them), the others are not needed; the encoded file holds ``label`` for the
primary task's and ``label_<t>`` for task ``t``'s (:func:`encoded_label`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from optembed.data import buckets
from optembed.data.formats import (
    CRITEO_CAT, CRITEO_INT, FORMATS, KDD12_COLUMNS, FormatSpec, _csv_reader, avazu_spec, criteo_spec, generic_spec,
    kdd12_spec, lit, q, quantile_field,
)
from optembed.data.preprocess import PreprocessConfig, _first_line, _header_columns
from optembed.data.validation import check_input, check_rejects, check_rows, first_row
from optembed.errors import ArtifactError, ConfigError, DataError

NO_LABEL = "CAST(NULL AS INTEGER)"
_WRITE_FAILED = ("no space left on device", "disk quota exceeded")


@dataclass
class FieldVocab:
    name: str
    vocab: Path  # Parquet with ``value`` (text) and ``id``
    oov_id: int = 0
    missing_id: int = 1
    bucketing: dict[str, Any] | None = None  # the field's quantile bins, as preprocess recorded them

    @classmethod
    def from_record(cls, record: dict[str, Any], vocab: Path) -> FieldVocab:
        """The vocabulary of a field record (``schema.json``'s or a bundle's preprocessing spec's)."""
        return cls(str(record["name"]), vocab, int(record["oov_id"]), int(record["missing_id"]), record.get("bucketing"))

    def boundaries(self) -> list[float] | None:
        """The checked quantile boundaries (they go into SQL), or None for a field without bins."""
        if self.bucketing is None:
            return None
        try:
            return buckets.boundaries_of(self.bucketing)
        except ValueError as exc:
            raise ArtifactError(f"the bucketing of field {self.name} beside {self.vocab} is malformed: {exc}") from None


@dataclass
class EncodeResult:
    rows: int  # rows encoded (written)
    has_label: bool  # the primary task's label is in the file
    bad_rows: dict[str, int] = field(default_factory=dict)  # skipped: columns, label, value
    label_tasks: tuple[int, ...] = ()  # the tasks whose labels the file has (encoded as encoded_label(t))


def encoded_label(task: int) -> str:
    """The encoded file's column of task ``task``'s label: ``label`` for the primary, ``label_<t>``."""
    return "label" if task == 0 else f"label_{task}"


def _first_columns(path: Path, delimiter: str = "\t") -> int:
    with path.open("rb") as fh:
        line = fh.readline().decode("utf-8", "replace").rstrip("\r\n")
    return len(line.split(delimiter))


def _unlabeled(spec: FormatSpec, reader: str | None = None, columns: int | None = None) -> FormatSpec:
    spec.label_sql = NO_LABEL
    if reader is not None:
        spec.reader_sql = reader
    if columns is not None:
        spec.expected_columns = columns
    return spec


def predict_spec(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: dict[str, Any], fields: list[str],
    boundaries: dict[str, list[float]] | None = None, labels: Sequence[str] = (),
) -> tuple[FormatSpec, tuple[int, ...]]:
    """The format's spec for ``path`` (the preprocess one) and the tasks whose labels the file has
    (``(0,)`` or ``()`` for one task; ``labels``: the label columns of several tasks, csv/Parquet);
    the spec reads those labels, in that order. The fields named in ``boundaries`` are bucketed
    by those quantile boundaries."""
    if len(labels) > 1 and fmt in ("csv", "parquet"):
        spec, present = _tasks_spec(con, path, fmt, options, fields, list(labels))
    else:
        spec, has_label = _format_spec(con, path, fmt, options, fields)
        present = (0,) if has_label else ()
    for i, f in enumerate(spec.fields):
        if f.name in (boundaries or {}):
            spec.fields[i] = quantile_field(f.source_column, boundaries=boundaries[f.name])  # type: ignore[index]
    return spec, present


def _generic_parts(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: dict[str, Any], fields: list[str],
) -> tuple[list[str], list[str], str | None]:
    """A csv/Parquet file's header, its numeric fields and its delimiter, as preprocess read them."""
    delimiter = options.get("delimiter")
    if fmt == "csv" and delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    header = _header_columns(con, path, fmt, delimiter)
    return header, [n for n in (options.get("numeric") or []) if n in fields], delimiter


def _tasks_spec(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: dict[str, Any], fields: list[str], labels: list[str],
) -> tuple[FormatSpec, tuple[int, ...]]:
    """The spec of a csv/Parquet file for a model of several tasks: the label columns it has, in
    task order (none: the spec of an unlabelled file)."""
    header, numeric, delimiter = _generic_parts(con, path, fmt, options, fields)
    present = tuple(t for t, name in enumerate(labels) if name in header)
    if present:
        names = ",".join(labels[t] for t in present)
        return generic_spec(path, fmt, header, names, fields, numeric, delimiter or ","), present
    spec = generic_spec(path, fmt, [*header, labels[0]], labels[0], fields, numeric, delimiter or ",")
    return _unlabeled(spec, columns=len(header)), ()


def _format_spec(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: dict[str, Any], fields: list[str]) -> tuple[FormatSpec, bool]:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "criteo":
        spec = criteo_spec(path)
        if _first_columns(path) == len(CRITEO_INT + CRITEO_CAT):
            cols = {**dict.fromkeys(CRITEO_INT, "DOUBLE"), **dict.fromkeys(CRITEO_CAT, "VARCHAR")}
            spec.columns = list(cols)
            return _unlabeled(spec, _csv_reader(path, cols, "\t", header=False, quote=""), len(cols)), False
        return spec, True
    if fmt == "kdd12":
        spec = kdd12_spec(path, keep_impression=bool(options.get("keep_impression", True)))
        if _first_columns(path) == len(KDD12_COLUMNS) - 1:
            return _unlabeled(spec, _csv_reader(path, KDD12_COLUMNS[1:], "\t", header=False, quote=""), len(KDD12_COLUMNS) - 1), False
        return spec, True
    if fmt == "avazu":
        header = _header_columns(con, path, "csv", ",")
        spec = avazu_spec(path)
        if "click" not in header:
            return _unlabeled(spec, columns=len(header)), False
        return spec, True
    header, numeric, delimiter = _generic_parts(con, path, fmt, options, fields)
    label = options.get("label") or "label"
    if label in header:
        return generic_spec(path, fmt, header, label, fields, numeric, delimiter or ","), True
    spec = generic_spec(path, fmt, [*header, label], label, fields, numeric, delimiter or ",")
    return _unlabeled(spec, columns=len(header)), False


def encode_file(
    path: Path,
    fmt: str,
    options: dict[str, Any],
    vocabs: list[FieldVocab],
    out: Path,
    skip_bad_rows: bool = False,
    memory_limit: str = "2GB",
    threads: int | None = None,
    labels: Sequence[str] = (),
) -> EncodeResult:
    """Encode ``path`` into ``out`` (Parquet: ``row``, the labels the file has (``label``, and
    ``label_<t>`` for several tasks, whose label columns ``labels`` names) and one int32 column
    ``f<i>`` per field, in file order). Bad rows stop with one :class:`DataError` unless ``skip_bad_rows``."""
    path = Path(path)
    check_input(path)
    work = out.parent / (out.name + ".duckdb")
    work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit={lit(memory_limit)}")
        con.execute(f"SET temp_directory={lit(str(work))}")
        con.execute("SET enable_progress_bar=false")
        con.execute("SET preserve_insertion_order=true")
        con.execute(f"SET threads={int(threads or os.cpu_count() or 1)}")
        names = [v.name for v in vocabs]
        fitted = {v.name: b for v in vocabs if (b := v.boundaries()) is not None}
        spec, present = predict_spec(con, path, fmt, options, names, fitted, labels)
        if spec.field_names != names:
            raise DataError(
                f"{path.name} read as {fmt} gives the fields {', '.join(spec.field_names[:6])}..., the model expects "
                f"{', '.join(names[:6])}...; pass the --format (and options) the model was trained with"
            )
        return _encode(con, path, spec, present, vocabs, out, skip_bad_rows)
    except duckdb.Error as exc:
        if any(k in str(exc).lower() for k in _WRITE_FAILED):
            raise  # a full disk under the work folder: the caller blames the disk, not the input
        raise DataError(f"{path.name}: {_first_line(exc)}") from None
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)


def _encode(
    con: duckdb.DuckDBPyConnection, path: Path, spec: FormatSpec, present: tuple[int, ...], vocabs: list[FieldVocab], out: Path,
    skip_bad_rows: bool,
) -> EncodeResult:
    # bucketed fields are parsed as their DOUBLE values, then bucketed in place (one evaluation each)
    texts = ", ".join(f"{f.token_sql if f.bucketed else f.text_sql(f.token_sql)} AS c{i}" for i, f in enumerate(spec.fields))
    bad_value = spec.bad_value_sql()
    stored = [encoded_label(t) for t in present]
    label_sqls = [spec.label_sql, *(sql for _, sql in spec.extra_labels)][: len(stored)]
    labels = "".join(f"CAST({sql} AS TINYINT) AS {q(col)}, " for sql, col in zip(label_sqls, stored, strict=True))
    con.execute(f"CREATE TABLE parsed AS SELECT {labels}({bad_value}) AS bad, {texts} FROM {spec.reader_sql}")
    for i, f in enumerate(spec.fields):
        if f.bucketed:
            bucket = buckets.bucket_sql(f"c{i}", f.boundaries or [])
            con.execute(f"ALTER TABLE parsed ALTER c{i} SET DATA TYPE VARCHAR USING CAST({bucket} AS VARCHAR)")
    policy = PreprocessConfig(skip_bad_rows=skip_bad_rows)
    bad_lines, cast_lines = check_rejects(con, path, spec, policy)
    labelled = " AND ".join(f"{q(col)} IS NOT NULL" for col in stored) or "TRUE"
    per_label = "".join(f", count(*) - count({q(col)})" for col in stored)
    n_raw, n_no_label, n_bad_value, *missing = first_row(
        con, f"SELECT count(*), count(*) FILTER (WHERE NOT ({labelled})), count(*) FILTER (WHERE bad AND {labelled}){per_label} FROM parsed",
    )
    if n_raw == 0 and bad_lines + cast_lines == 0:
        raise DataError(f"{path.name} has no data rows")
    # each label column on its own, so the error names the column at fault; a skipped row counts once
    for col, source, count in zip(stored, spec.label_columns[: len(stored)], missing, strict=True):
        check_rows(con, path, spec, policy, int(count), f"{q(col)} IS NULL", "a label outside {0,1}", [source])
    bad_labels = int(n_no_label)
    checked = list(dict.fromkeys(f.source_column for f in spec.fields if f.check_sql))
    bad_values = cast_lines + check_rows(
        con, path, spec, policy, int(n_bad_value), f"bad AND {labelled}", "a non-numeric value in a numeric field", checked
    )
    good = f"{labelled} AND NOT bad"
    joins = " ".join(
        f"LEFT JOIN (SELECT value, id FROM read_parquet({lit(str(v.vocab))}) WHERE value IS NOT NULL) v{i} ON d.c{i} = v{i}.value"
        for i, v in enumerate(vocabs)
    )
    encoded = ", ".join(
        f"CAST(coalesce(v{i}.id, CASE WHEN d.c{i} IS NULL THEN {int(v.missing_id)} ELSE {int(v.oov_id)} END) AS INTEGER) AS f{i}"
        for i, v in enumerate(vocabs)
    )
    con.execute(
        f"COPY (SELECT d.rid AS row, {''.join(f'd.{q(c)}, ' for c in stored)}{encoded} FROM (SELECT rowid AS rid, * FROM parsed WHERE {good}) d "
        f"{joins} ORDER BY d.rid) TO {lit(str(out))} (FORMAT parquet)"
    )
    rows = int(first_row(con, f"SELECT count(*) FROM parsed WHERE {good}")[0])
    if rows == 0:
        raise DataError(f"{path.name} has no valid data rows")
    return EncodeResult(rows, 0 in present, {"columns": bad_lines, "label": bad_labels, "value": bad_values}, present)
