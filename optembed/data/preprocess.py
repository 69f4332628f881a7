"""Raw CTR data -> encoded Parquet splits and per-field vocabularies, with DuckDB and Arrow.

The work is out of core: DuckDB parses the raw file once into an in-memory table (spilling to
disk under its memory limit), validates it, splits it by a seeded hash of each row's position
(exact sizes, no sort), counts values per field with one GROUP BY each and builds vocabularies.
Each split then streams out of DuckDB in file order, in batches that Arrow encodes (a set
lookup of each vocabulary; a field with a very large vocabulary is joined in DuckDB instead)
and pyarrow writes as Parquet row groups.

Numeric csv/Parquet fields (``numeric``) are bucketed by quantile bins whose boundaries are
fitted on the training split only (:mod:`optembed.data.buckets`; recorded per field in
``schema.json`` as ``bucketing``); Criteo's integer columns keep the log-square rule of
:func:`optembed.data.formats.typed_log_square_token`.

Id layout of every field: 0 = OOV (values seen fewer than ``min_count`` times, or never seen
in the counting split), 1 = missing, 2.. = kept values by decreasing count. Every field
reserves both special ids, so ``cardinality = 2 + kept values``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from optembed.data import buckets
from optembed.data.formats import (
    DEFAULT_MIN_COUNT,
    FORMATS,
    FieldSpec,
    FormatSpec,
    avazu_spec,
    criteo_spec,
    generic_spec,
    kdd12_spec,
    label_names,
    lit,
    q,
)
from optembed.data.labels import stored_label_columns
from optembed.data.validation import check_input, check_numeric_columns, check_rejects, check_rows, first_row
from optembed.errors import ConfigError, DataError
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.validation import check_number
from optembed.progress import NULL, Reporter

SPLIT_ROW_GROUP_ROWS = 122_880  # rows per Parquet row group of the encoded splits (~20 MB at 40 int32 fields)
# rows of a split fetched from DuckDB and encoded at a time (half a row group: less in flight)
FETCH_ROWS = SPLIT_ROW_GROUP_ROWS // 2
# fields with more kept values than this are encoded by a DuckDB hash join rather than an Arrow set
# lookup, whose hash set is rebuilt for every batch of FETCH_ROWS rows
ARROW_VOCAB_MAX = FETCH_ROWS
OOV_ID = 0
MISSING_ID = 1
SPLITS = ("train", "val", "test")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MEMORY_LIMIT = re.compile(r"^\s*(\d+(\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|%)\s*$", re.IGNORECASE)


@dataclass
class PreprocessConfig:
    fmt: str = "criteo"
    # None: the format's default; fingerprinted resolved
    min_count: int | None = field(default=None, metadata={"resolved_by": "resolved_min_count"})
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2022
    count_on: str = "train"
    skip_bad_rows: bool = False
    label: str | None = None  # the label column, or a comma list of them (several tasks; the primary first)
    fields: list[str] | None = None
    numeric: list[str] | None = None
    # quantile bins of each numeric field; fingerprinted only when there are numeric fields, so
    # the artifacts of every other run keep their fingerprints
    numeric_bins: int = field(default=buckets.DEFAULT_BINS, metadata={"inert_when": {"numeric": (None, [])}})
    delimiter: str | None = None
    keep_impression: bool = True
    memory_limit: str = field(default="2GB", metadata=UNFINGERPRINTED)  # resources do not change the result
    threads: int | None = field(default=None, metadata=UNFINGERPRINTED)

    def resolved_min_count(self) -> int:
        return self.min_count if self.min_count is not None else DEFAULT_MIN_COUNT[self.fmt]

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown format '{self.fmt}'; choose one of {', '.join(FORMATS)}")
        if len(self.split) != 3:
            raise ConfigError(f"--split needs three positive fractions (train,val,test), got {list(self.split)}")
        for part in self.split:
            check_number("--split", part, 0.0, 1.0, low_open=True)
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(f"--split fractions must sum to 1, got {sum(self.split):g}")
        if self.count_on not in ("train", "all"):
            raise ConfigError(f"--count-on must be 'train' or 'all', got '{self.count_on}'")
        if self.resolved_min_count() < 1:
            raise ConfigError("--min-count must be at least 1")
        limit = _MEMORY_LIMIT.match(self.memory_limit) if isinstance(self.memory_limit, str) else None
        if limit is None or float(limit.group(1)) <= 0:
            raise ConfigError(f"--memory-limit must be a size like 2GB, 500MB or 80%, got '{self.memory_limit}'")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.fmt not in ("csv", "parquet") and (self.label or self.fields or self.numeric):
            raise ConfigError(f"--label/--fields/--numeric apply to csv and parquet input, not {self.fmt}")
        label_names(self.label)  # a comma list (the primary task's first): no empty or repeated name
        check_number("--numeric-bins", self.numeric_bins, 2, buckets.MAX_BINS)
        if not isinstance(self.numeric_bins, int):
            raise ConfigError(f"--numeric-bins must be a whole number, got {self.numeric_bins!r}")
        if self.fmt not in ("csv", "parquet") and self.numeric_bins != buckets.DEFAULT_BINS:
            raise ConfigError(
                f"--numeric-bins applies to the --numeric fields of csv and parquet input; {self.fmt}'s numeric "
                "columns keep their fixed rule"
            )

    def to_params(self) -> dict[str, Any]:
        """The fingerprinted options (:func:`optembed.fingerprint.fingerprint_params`)."""
        return fingerprint_params(self)


@dataclass
class PreprocessResult:
    schema: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def _header_columns(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, delimiter: str | None) -> list[str]:
    if fmt == "parquet":
        sql = f"DESCRIBE SELECT * FROM read_parquet({lit(str(path))})"
    else:
        delim = f", delim={lit(delimiter)}" if delimiter else ""
        sql = f"DESCRIBE SELECT * FROM read_csv({lit(str(path))}, header=true, all_varchar=true{delim})"
    try:
        return [row[0] for row in con.execute(sql).fetchall()]
    except duckdb.Error as exc:
        raise DataError(f"cannot read the header of {path.name}: {_first_line(exc)}") from None


def _write_failure(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind a DuckDB error that a full disk (or quota) caused, else None."""
    text = str(exc)
    for code, marker in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")):
        if marker in text:
            written = re.search(r'Could not write file \\?"([^"\\]+)', text)
            return OSError(code, os.strerror(code), written.group(1) if written else None)
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def build_spec(con: duckdb.DuckDBPyConnection, path: Path, cfg: PreprocessConfig) -> FormatSpec:
    if cfg.fmt == "criteo":
        return criteo_spec(path)
    if cfg.fmt == "kdd12":
        return kdd12_spec(path, keep_impression=cfg.keep_impression)
    if cfg.fmt == "avazu":
        cols = _header_columns(con, path, "csv", ",")
        missing = [c for c in ("id", "click", "hour") if c not in cols]
        if missing or len(cols) != 24:
            raise DataError(
                f"{path.name} does not look like Avazu: expected a 24-column header with id, click, hour, "
                f"got {len(cols)} columns{' without ' + ', '.join(missing) if missing else ''}"
            )
        return avazu_spec(path)
    delimiter = cfg.delimiter
    if cfg.fmt == "csv" and delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    cols = _header_columns(con, path, cfg.fmt, delimiter)
    return generic_spec(path, cfg.fmt, cols, cfg.label, cfg.fields, cfg.numeric, delimiter or ",", cfg.numeric_bins)


class _Steps:
    """A progress task that advances one step at a time and names the current step."""

    def __init__(self, reporter: Reporter, total: int) -> None:
        self.task = reporter.task("preprocess", total=total, unit="step")

    def __call__(self, description: str) -> None:
        self.task.update(description=description)
        self.task.advance(1)


def preprocess(path: str | Path, cfg: PreprocessConfig, out_dir: Path, reporter: Reporter = NULL) -> PreprocessResult:
    """Encode ``path`` into ``out_dir`` (train/val/test.parquet, vocab/, schema.json)."""
    cfg.validate()
    path = Path(path)
    check_input(path)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "_duckdb"
    work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()  # in memory; spills under ``work`` past the memory limit
    try:
        con.execute(f"SET memory_limit={lit(cfg.memory_limit)}")
        con.execute(f"SET temp_directory={lit(str(work / 'spill'))}")
        con.execute("SET enable_progress_bar=false")
        con.execute("SET preserve_insertion_order=true")  # rowid = file order: the split depends on it
        con.execute(f"SET threads={int(cfg.threads or os.cpu_count() or 1)}")
        spec = build_spec(con, path, cfg)
        n_fields = len(spec.fields)
        if n_fields == 0:
            raise ConfigError("no fields to encode: give --fields or a file with columns besides the label")
        steps = _Steps(reporter, total=5 + n_fields + any(f.bucketed for f in spec.fields))
        result = _run(con, path, spec, cfg, out_dir, steps)
    except duckdb.Error as exc:
        full = _write_failure(exc)
        if full is not None:  # the output disk, not the input: the store reports it as a failed write
            raise full from None
        raise DataError(f"{path.name}: {_first_line(exc)}") from None
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    total_rows = sum(result.schema["rows"].values())
    result.metrics.update(seconds=round(seconds, 3), rows_per_s=round(total_rows / max(seconds, 1e-9), 1))
    return result


def _run(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    spec: FormatSpec,
    cfg: PreprocessConfig,
    out_dir: Path,
    step: _Steps,
) -> PreprocessResult:
    # One scan of the file: the labels, validity flag and the field tokens, in file order.
    step(f"parsing {path.name}")
    stored = stored_label_columns(len(spec.label_columns))
    clash = sorted(set(stored) & set(spec.field_names)) if len(stored) > 1 else []
    if clash:
        raise ConfigError(f"the field '{clash[0]}' has the name a stored label column takes; rename the column")
    tokens = ", ".join(f"{f.token_sql} AS c{i}" for i, f in enumerate(spec.fields))
    label_sqls = [spec.label_sql, *(sql for _, sql in spec.extra_labels)]
    labels = ", ".join(f"CAST({sql} AS TINYINT) AS {q(col)}" for sql, col in zip(label_sqls, stored, strict=True))
    bad_value = spec.bad_value_sql()
    con.execute(
        f"CREATE TABLE parsed AS SELECT {labels}, ({bad_value}) AS bad, "
        f"CAST(NULL AS TINYINT) AS split, {tokens} "
        f"FROM {spec.reader_sql}"
    )
    bad_lines, cast_lines = check_rejects(con, path, spec, cfg)
    labelled = " AND ".join(f"{q(col)} IS NOT NULL" for col in stored)
    unlabelled = " + ".join(f"(count(*) - count({q(col)}))" for col in stored)
    n_raw, n_no_label, n_bad_value, *per_label = first_row(
        con,
        f"SELECT count(*), count(*) FILTER (WHERE NOT ({labelled})), count(*) FILTER (WHERE bad AND {labelled}), "
        f"{unlabelled.replace(' + ', ', ')} FROM parsed",
    )
    if n_raw == 0 and bad_lines + cast_lines == 0:
        raise DataError(f"{path.name} has no data rows")

    step("validating labels and values")
    if cfg.fmt in ("csv", "parquet"):
        check_numeric_columns(con, path, spec, cfg.numeric)
    # each label column on its own, so the error names the column at fault; skipped rows count once
    for col, source, missing in zip(stored, spec.label_columns, per_label, strict=True):
        check_rows(con, path, spec, cfg, int(missing), f"{q(col)} IS NULL", "a label outside {0,1}", [source])
    bad_labels = int(n_no_label)
    checked = list(dict.fromkeys(f.source_column for f in spec.fields if f.check_sql))
    bad_values = cast_lines + check_rows(
        con, path, spec, cfg, int(n_bad_value), f"bad AND {labelled}", "a non-numeric value in a numeric field", checked
    )
    n = int(n_raw) - bad_labels - bad_values + cast_lines
    if n == 0:
        raise DataError(f"{path.name} has no valid data rows")

    # The split: every good row gets a seeded 64-bit hash of its position; the (n_train)-th and
    # (n_train + n_val)-th smallest hashes are the cut points, so the sizes are exact and no sort runs.
    step("splitting")
    sizes = _split_sizes(n, cfg.split)
    if min(sizes) == 0:
        raise DataError(f"{path.name}: {n} rows are too few for the split {','.join(f'{p:g}' for p in cfg.split)}")
    good = f"{labelled} AND NOT bad"
    key = f"hash(rowid, {int(cfg.seed)})"
    q_train = (sizes[0] - 0.5) / n
    q_val = (sizes[0] + sizes[1] - 0.5) / n
    t_train, t_val = first_row(con, f"SELECT quantile_disc({key}, [{q_train!r}, {q_val!r}]) FROM parsed WHERE {good}")[0]
    con.execute(
        f"UPDATE parsed SET split = CASE WHEN {key} <= {int(t_train)}::UBIGINT THEN 0 "
        f"WHEN {key} <= {int(t_val)}::UBIGINT THEN 1 ELSE 2 END WHERE {good}"
    )
    sums = ", ".join(f"sum({q(col)})" for col in stored)
    stats = con.execute(
        f"SELECT split, count(*), {sums} FROM parsed WHERE split IS NOT NULL GROUP BY split ORDER BY split"
    ).fetchall()
    rows = {name: 0 for name in SPLITS}
    label_positives = [{name: 0 for name in SPLITS} for _ in stored]
    for s, c, *p in stats:
        rows[SPLITS[s]] = int(c)
        for k, count in enumerate(p):
            label_positives[k][SPLITS[s]] = int(count or 0)
    positives = label_positives[0]

    bucketing = _bucket_numeric(con, spec, step)
    min_count = cfg.resolved_min_count()
    counted = "split = 0" if cfg.count_on == "train" else "split IS NOT NULL"
    counted_fields = [_vocabulary(con, i, fspec, counted, min_count, out_dir, step) for i, fspec in enumerate(spec.fields)]
    fields_meta = [meta for meta, _ in counted_fields]
    hash_exact = [exact for _, exact in counted_fields]
    for i, rule in bucketing.items():
        fields_meta[i]["bucketing"] = rule

    step("encoding and writing the splits")
    # a label column is declared nullable in the splits where the parsed table holds a NULL in it
    # (a skipped row), as the Parquet writer of DuckDB did from the table's statistics
    nullable = [int(missing) > 0 for missing in per_label]
    outputs: dict[str, str] = {}
    plan = _encoding_plan(con, spec, stored, nullable, [int(meta["kept_values"]) for meta in fields_meta], hash_exact)
    with ThreadPoolExecutor(max_workers=max(1, int(cfg.threads or os.cpu_count() or 1))) as pool:
        for split_id, name in enumerate(SPLITS):
            _write_split(con, plan, split_id, out_dir / f"{name}.parquet", pool)
            outputs[name] = f"{name}.parquet"
    rates = [_positive_rates(p, rows, n) for p in label_positives]
    pos = rates[0]

    schema = {
        "format": spec.name,
        "source": str(path),
        "label": "label",
        "source_label": spec.label_column,
        "fields": fields_meta,
        "n_fields": len(fields_meta),
        "total_cardinality": sum(f["cardinality"] for f in fields_meta),
        "rows": rows,
        "positive_ratio": pos,
        "min_count": min_count,
        "count_on": cfg.count_on,
        "split": list(cfg.split),
        "seed": cfg.seed,
        "bad_rows_skipped": {"columns": bad_lines, "label": bad_labels, "value": bad_values},
    }
    if len(stored) > 1:  # several tasks; a one-label schema keeps exactly its keys
        schema["labels"] = [
            {"name": source, "column": col, "positive_rate": rate}
            for source, col, rate in zip(spec.label_columns, stored, rates, strict=True)
        ]
    (out_dir / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    outputs["schema"] = "schema.json"
    outputs["vocab"] = "vocab"
    metrics = {
        "rows": n,
        "rows_train": rows["train"],
        "rows_val": rows["val"],
        "rows_test": rows["test"],
        "n_fields": len(fields_meta),
        "total_cardinality": schema["total_cardinality"],
        "positive_ratio": round(pos["all"], 6),
        "bad_rows_skipped": bad_lines + bad_labels + bad_values,
    }
    if len(stored) > 1:
        metrics["label_positive_ratios"] = {source: round(r["all"], 6) for source, r in zip(spec.label_columns, rates, strict=True)}
    step("done")
    return PreprocessResult(schema=schema, metrics=metrics, outputs=outputs)


@dataclass
class _EncodingPlan:
    """How each field of the splits is encoded (:func:`_encoding_plan`)."""

    labels: list[str]  # the stored label columns, first in every split
    schema: pa.Schema
    columns: list[str]  # SQL of the column fetched per field: its token, its token's hash, or its joined id
    joins: str  # the LEFT JOINs of the joined fields
    joined: set[int]
    vocabularies: dict[int, pa.Array]  # per looked-up field, its kept tokens (or their hashes) in id order


def _encoding_plan(
    con: duckdb.DuckDBPyConnection,
    spec: FormatSpec,
    stored: list[str],
    nullable: list[bool],
    kept: list[int],
    hash_exact: list[bool],
) -> _EncodingPlan:
    """A field with at most :data:`ARROW_VOCAB_MAX` kept values is looked up in Arrow, batch by
    batch: a set lookup of its vocabulary in id order (:func:`_vocab_values`). A text field is looked
    up by DuckDB's 64-bit ``hash`` of its tokens when that hash tells all of the field's values
    apart (checked while counting), which spares moving the text out of DuckDB; else by its text.
    A field with a larger vocabulary is joined in DuckDB."""
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE parsed)").fetchall())
    columns: list[str] = []
    joined: set[int] = set()
    vocabularies: dict[int, pa.Array] = {}
    for i in range(len(spec.fields)):
        if kept[i] > ARROW_VOCAB_MAX:
            joined.add(i)
            columns.append(f"CAST(coalesce(v{i}.id, CASE WHEN d.c{i} IS NULL THEN {MISSING_ID} ELSE {OOV_ID} END) AS INTEGER)")
        elif types[f"c{i}"] == "VARCHAR" and hash_exact[i]:
            columns.append(f"CASE WHEN d.c{i} IS NOT NULL THEN hash(d.c{i}) END")
            vocabularies[i] = _vocab_values(con, f"hash(value) FROM vocab_{i}")
        else:
            columns.append(f"d.c{i}")
            vocabularies[i] = _zero_signed(_vocab_values(con, f"value FROM vocab_{i}"))
    schema = pa.schema(
        [pa.field(col, pa.int8(), nullable=null) for col, null in zip(stored, nullable, strict=True)]
        + [pa.field(f.name, pa.int32()) for f in spec.fields]
    )
    joins = "".join(f" LEFT JOIN vocab_{i} v{i} ON d.c{i} = v{i}.value" for i in sorted(joined))
    return _EncodingPlan(stored, schema, columns, joins, joined, vocabularies)


def _write_split(
    con: duckdb.DuckDBPyConnection, plan: _EncodingPlan, split_id: int, target: Path, pool: ThreadPoolExecutor
) -> None:
    """Encode the rows of one split (:func:`_encoding_plan`) and write them to ``target`` in file
    order (rowid), in row groups of :data:`SPLIT_ROW_GROUP_ROWS` rows. A plain scan keeps that
    order; hash joins do not, so with a joined field the split is sorted back by rowid.

    The batches stream through three stages at once: this thread fetches them from DuckDB,
    ``pool`` encodes them, one writer thread writes them in order. At most a few batches are in
    flight, so memory stays bounded by a few row groups (not by the split)."""
    labels = [f"d.{q(col)}" for col in plan.labels]
    columns = [f"{sql} AS {q(f'e{i}')}" for i, sql in enumerate(plan.columns)]
    source = f"(SELECT rowid AS rid, * FROM parsed WHERE split = {split_id}) d"
    order = " ORDER BY d.rid" if plan.joined else ""
    sql = f"SELECT {', '.join(labels + columns)} FROM {source}{plan.joins}{order}"
    ahead = 2  # batches in flight past the one being fetched: one encoding, one writing
    with pq.ParquetWriter(str(target), plan.schema, compression="zstd") as writer, ThreadPoolExecutor(1) as write_thread:
        groups = _RowGroups(writer)
        writes: deque[Future[None]] = deque()
        for batch in con.sql(sql).to_arrow_reader(FETCH_ROWS):
            if batch.num_rows == 0:
                continue
            encoded = pool.submit(_encode_batch, batch, plan)
            writes.append(write_thread.submit(groups.add, encoded))
            while len(writes) > ahead:
                writes.popleft().result()
        while writes:
            writes.popleft().result()
        groups.flush()


def _encode_batch(batch: pa.RecordBatch, plan: _EncodingPlan) -> pa.RecordBatch:
    n_labels = len(plan.labels)
    columns = [batch.column(k) for k in range(n_labels)]
    for i in range(len(plan.columns)):
        raw = batch.column(n_labels + i)
        columns.append(raw if i in plan.joined else _encode(raw, plan.vocabularies[i]))
    return pa.RecordBatch.from_arrays(
        [c.cast(f.type) for c, f in zip(columns, plan.schema, strict=True)], schema=plan.schema
    )


class _RowGroups:
    """Encoded batches, in order, written as row groups of exactly SPLIT_ROW_GROUP_ROWS rows (the
    last one shorter): the unit a streamed split is read and shuffled in."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, encoded: Future[pa.RecordBatch]) -> None:
        batch = encoded.result()
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= SPLIT_ROW_GROUP_ROWS:
            self._write(self.rows - self.rows % SPLIT_ROW_GROUP_ROWS)

    def flush(self) -> None:
        if self.rows:
            self._write(self.rows)

    def _write(self, rows: int) -> None:
        table = pa.Table.from_batches(self.pending, schema=self.writer.schema)
        self.writer.write_table(table.slice(0, rows), row_group_size=SPLIT_ROW_GROUP_ROWS)
        rest = table.slice(rows)
        self.pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        self.rows = rest.num_rows


def _vocab_values(con: duckdb.DuckDBPyConnection, select: str) -> pa.Array:
    """One column of a vocabulary table in id order (ids 2, 3, ...), after a NULL (id 1, missing):
    a token's id is then its position in the array + 1. ``select``: 'EXPR FROM vocab_i'."""
    values = con.sql(f"SELECT {select} ORDER BY id").to_arrow_table().column(0)
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pa.concat_arrays([pa.nulls(1, values.type), values])


def _zero_signed(values: pa.Array) -> pa.Array:
    """Floating tokens with -0.0 made 0.0 (x + 0.0): DuckDB compares and groups them as one value,
    an Arrow set lookup by their bits."""
    if not pa.types.is_floating(values.type):
        return values
    return pc.add(values, pa.scalar(0.0, values.type))


def _encode(values: pa.Array, vocabulary: pa.Array) -> pa.Array:
    """The ids of one field's tokens: position in ``vocabulary`` (:func:`_vocab_values`) + 1, so
    missing (NULL) tokens get MISSING_ID and kept ones 2..; tokens outside it get OOV_ID."""
    values = _zero_signed(values)
    if vocabulary.type != values.type:
        vocabulary = vocabulary.cast(values.type)
    position = pc.index_in(values, value_set=vocabulary, skip_nulls=False)
    return pc.fill_null(pc.add(position, pa.scalar(MISSING_ID, position.type)), OOV_ID)


def _positive_rates(positives: dict[str, int], rows: dict[str, int], n: int) -> dict[str, float]:
    rates = {name: positives[name] / rows[name] for name in SPLITS}
    rates["all"] = sum(positives.values()) / n
    return rates


def _bucket_numeric(con: duckdb.DuckDBPyConnection, spec: FormatSpec, step: _Steps) -> dict[int, dict[str, Any]]:
    """Fit the quantile boundaries of every bucketed field on the training rows (split 0) and
    replace its parsed values by their buckets (in every split); the recorded rule per field."""
    fitted: dict[int, dict[str, Any]] = {}
    todo = [(i, fspec) for i, fspec in enumerate(spec.fields) if fspec.bucketed]
    if not todo:
        return fitted
    step("fitting numeric bins on the training split")
    sets: list[str] = []
    for i, fspec in todo:
        bins = int(fspec.bins or buckets.DEFAULT_BINS)
        boundaries, values = buckets.fit_boundaries(con, "parsed", f"c{i}", "split = 0", bins)
        fitted[i] = buckets.record(bins, boundaries, values)
        sets.append(f"c{i} = {buckets.bucket_sql(f'c{i}', boundaries)}")
    con.execute(f"UPDATE parsed SET {', '.join(sets)}")
    return fitted


def _vocabulary(
    con: duckdb.DuckDBPyConnection,
    i: int,
    fspec: FieldSpec,
    counted: str,
    min_count: int,
    out_dir: Path,
    step: _Steps,
) -> tuple[dict[str, Any], bool]:
    """Count field ``i`` over the counted rows (one GROUP BY, NULL = missing included), keep the
    values seen at least ``min_count`` times as ``vocab_i`` (ids 2.. by decreasing count, ties by
    text) and write ``vocab/<field>.parquet``. Also whether DuckDB's 64-bit ``hash`` tells every
    value of the encoded rows apart (then the splits are encoded by hash: :func:`_encoding_plan`)."""
    step(f"counting {fspec.name}")
    # every value of the encoded rows, with its count over the counted rows (0: seen elsewhere only)
    con.execute(
        f"CREATE TEMP TABLE counts_{i} AS SELECT c{i} AS value, count(*) FILTER (WHERE {counted}) AS n "
        f"FROM parsed WHERE split IS NOT NULL GROUP BY c{i}"
    )
    distinct, rare_rows, missing_rows, kept, hashes_unique = first_row(
        con,
        f"SELECT count(value) FILTER (WHERE n > 0), coalesce(sum(n) FILTER (WHERE value IS NOT NULL AND n < {min_count}), 0), "
        f"coalesce(sum(n) FILTER (WHERE value IS NULL), 0), count(value) FILTER (WHERE n >= {min_count}), "
        f"count(DISTINCT hash(value)) = count(value) FROM counts_{i}",
    )
    kept = int(kept)
    con.execute(
        f"CREATE TEMP TABLE vocab_{i} AS SELECT value, text, CAST(row_number() OVER (ORDER BY n DESC, text) + 1 AS INTEGER) AS id, "
        f"n AS count FROM (SELECT value, {fspec.text_sql('value')} AS text, n FROM counts_{i} "
        f"WHERE value IS NOT NULL AND n >= {min_count})"
    )
    con.execute(f"DROP TABLE counts_{i}")
    vocab_file = f"vocab/{fspec.name if _SAFE_NAME.match(fspec.name) else f'field_{i:03d}'}.parquet"
    (out_dir / "vocab").mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT NULL::VARCHAR AS value, {OOV_ID} AS id, CAST({int(rare_rows)} AS BIGINT) AS count, 'oov' AS special "
        f"UNION ALL SELECT NULL::VARCHAR, {MISSING_ID}, CAST({int(missing_rows)} AS BIGINT), 'missing' "
        f"UNION ALL SELECT text, id, count, NULL FROM vocab_{i} ORDER BY id) "
        f"TO {lit(str(out_dir / vocab_file))} (FORMAT parquet)"
    )
    meta = {
        "name": fspec.name,
        "kind": fspec.kind,
        "cardinality": 2 + kept,
        "kept_values": kept,
        "distinct_values": int(distinct),
        "oov_rows": int(rare_rows),
        "missing_rows": int(missing_rows),
        "oov_id": OOV_ID,
        "missing_id": MISSING_ID,
        "vocab": vocab_file,
    }
    return meta, bool(hashes_unique)


def _split_sizes(n: int, split: tuple[float, float, float]) -> list[int]:
    n_train = int(round(n * split[0]))
    n_val = int(round(n * split[1]))
    n_val = min(n_val, n - n_train)
    return [n_train, n_val, n - n_train - n_val]


