"""Raw CTR data -> encoded Parquet splits and per-field vocabularies, all inside DuckDB.

The work is out of core: DuckDB parses the raw file into a database file inside the output
folder (spilling to disk under its memory limit), validates it, splits it with a seeded
hash permutation, counts values per field, builds vocabularies and encodes every split.

Id layout of every field: 0 = OOV (values seen fewer than ``min_count`` times, or never seen
in the counting split), 1 = missing, 2.. = kept values by decreasing count. Every field
reserves both special ids, so ``cardinality = 2 + kept values``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from optembed.data.formats import (
    DEFAULT_MIN_COUNT,
    FORMATS,
    FormatSpec,
    avazu_spec,
    criteo_spec,
    generic_spec,
    kdd12_spec,
    lit,
    q,
)
from optembed.errors import ConfigError, DataError
from optembed.progress import NULL, Reporter

OOV_ID = 0
MISSING_ID = 1
SPLITS = ("train", "val", "test")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class PreprocessConfig:
    fmt: str = "criteo"
    min_count: int | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2022
    count_on: str = "train"
    skip_bad_rows: bool = False
    label: str | None = None
    fields: list[str] | None = None
    numeric: list[str] | None = None
    delimiter: str | None = None
    keep_impression: bool = True
    memory_limit: str = "2GB"
    threads: int | None = None

    def resolved_min_count(self) -> int:
        return self.min_count if self.min_count is not None else DEFAULT_MIN_COUNT[self.fmt]

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown format '{self.fmt}'; choose one of {', '.join(FORMATS)}")
        if len(self.split) != 3 or any(p <= 0 for p in self.split):
            raise ConfigError(f"--split needs three positive fractions (train,val,test), got {list(self.split)}")
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(f"--split fractions must sum to 1, got {sum(self.split):g}")
        if self.count_on not in ("train", "all"):
            raise ConfigError(f"--count-on must be 'train' or 'all', got '{self.count_on}'")
        if self.resolved_min_count() < 1:
            raise ConfigError("--min-count must be at least 1")
        if self.fmt not in ("csv", "parquet") and (self.label or self.fields or self.numeric):
            raise ConfigError(f"--label/--fields/--numeric apply to csv and parquet input, not {self.fmt}")

    def to_params(self) -> dict[str, Any]:
        data = asdict(self)
        data["min_count"] = self.resolved_min_count()
        data["split"] = list(self.split)
        for key in ("memory_limit", "threads"):  # resources do not change the result
            data.pop(key)
        return data


@dataclass
class PreprocessResult:
    schema: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


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
    return generic_spec(path, cfg.fmt, cols, cfg.label, cfg.fields, cfg.numeric, delimiter or ",")


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
    work = out_dir / "_duckdb"
    work.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(work / "work.duckdb"))
    try:
        con.execute(f"SET memory_limit={lit(cfg.memory_limit)}")
        con.execute(f"SET temp_directory={lit(str(work / 'spill'))}")
        con.execute("SET enable_progress_bar=false")
        con.execute(f"SET threads={int(cfg.threads or os.cpu_count() or 1)}")
        spec = build_spec(con, path, cfg)
        n_fields = len(spec.fields)
        if n_fields == 0:
            raise ConfigError("no fields to encode: give --fields or a file with columns besides the label")
        steps = _Steps(reporter, total=8 + n_fields)
        result = _run(con, path, spec, cfg, out_dir, steps)
    except duckdb.Error as exc:
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
    step(f"parsing {path.name}")
    con.execute(f"CREATE TABLE raw AS SELECT * FROM {spec.reader_sql}")
    bad_lines = _check_rejects(con, path, spec, cfg)
    n_raw = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    if n_raw == 0:
        raise DataError(f"{path.name} has no data rows")

    step("validating labels and values")
    bad_labels = _check_rows(con, path, cfg, f"{spec.label_sql} IS NULL", "a label outside {0,1}", [spec.label_column])
    checks = {f.source_column: f.check_sql for f in spec.fields if f.check_sql}
    bad_value = " OR ".join(f"coalesce({c}, false)" for c in checks.values()) or "false"
    bad_values = _check_rows(
        con, path, cfg, f"({bad_value}) AND {spec.label_sql} IS NOT NULL", "a non-numeric value in a numeric field", list(checks)
    )
    tokens = ", ".join(f"{f.token_sql} AS c{i}" for i, f in enumerate(spec.fields))
    con.execute(
        f"CREATE TABLE parsed AS SELECT raw.rowid AS rid, {spec.label_sql} AS label, {tokens} FROM raw "
        f"WHERE {spec.label_sql} IS NOT NULL AND NOT ({bad_value})"
    )
    con.execute("DROP TABLE raw")
    n = con.execute("SELECT count(*) FROM parsed").fetchone()[0]
    if n == 0:
        raise DataError(f"{path.name} has no valid data rows")

    step("splitting")
    sizes = _split_sizes(n, cfg.split)
    if min(sizes) == 0:
        raise DataError(f"{path.name}: {n} rows are too few for the split {','.join(f'{p:g}' for p in cfg.split)}")
    n_train, n_val = sizes[0], sizes[1]
    con.execute(
        "CREATE TABLE perm AS SELECT rid, row_number() OVER (ORDER BY hash(rid, "
        f"{int(cfg.seed)}), rid) - 1 AS r FROM parsed"
    )
    token_cols = ", ".join(f"p.c{i}" for i in range(len(spec.fields)))
    con.execute(
        "CREATE TABLE data AS SELECT perm.r, CAST(CASE WHEN perm.r < "
        f"{n_train} THEN 0 WHEN perm.r < {n_train + n_val} THEN 1 ELSE 2 END AS TINYINT) AS split, "
        f"CAST(p.label AS TINYINT) AS label, {token_cols} FROM parsed p JOIN perm USING (rid)"
    )
    con.execute("DROP TABLE parsed")
    con.execute("DROP TABLE perm")

    where = "split = 0" if cfg.count_on == "train" else "true"
    min_count = cfg.resolved_min_count()
    fields_meta: list[dict[str, Any]] = []
    (out_dir / "vocab").mkdir(parents=True, exist_ok=True)
    for i, fspec in enumerate(spec.fields):
        step(f"counting {fspec.name}")
        con.execute(
            f"CREATE TABLE vocab_{i} AS SELECT value, CAST(row_number() OVER (ORDER BY n DESC, value) + 1 AS INTEGER) AS id, "
            f"n AS count FROM (SELECT c{i} AS value, count(*) AS n FROM data WHERE {where} AND c{i} IS NOT NULL "
            f"GROUP BY c{i}) WHERE n >= {min_count}"
        )
        distinct, rare_rows, missing_rows = con.execute(
            f"SELECT count(DISTINCT c{i}), count(c{i}) - coalesce((SELECT sum(count) FROM vocab_{i}), 0), "
            f"count(*) - count(c{i}) FROM data WHERE {where}"
        ).fetchone()
        kept = con.execute(f"SELECT count(*) FROM vocab_{i}").fetchone()[0]
        vocab_file = f"vocab/{fspec.name if _SAFE_NAME.match(fspec.name) else f'field_{i:03d}'}.parquet"
        con.execute(
            f"COPY (SELECT NULL::VARCHAR AS value, {OOV_ID} AS id, CAST({int(rare_rows)} AS BIGINT) AS count, 'oov' AS special "
            f"UNION ALL SELECT NULL::VARCHAR, {MISSING_ID}, CAST({int(missing_rows)} AS BIGINT), 'missing' "
            f"UNION ALL SELECT value, id, count, NULL FROM vocab_{i} ORDER BY id) "
            f"TO {lit(str(out_dir / vocab_file))} (FORMAT parquet)"
        )
        fields_meta.append(
            {
                "name": fspec.name,
                "kind": fspec.kind,
                "cardinality": 2 + int(kept),
                "kept_values": int(kept),
                "distinct_values": int(distinct),
                "oov_rows": int(rare_rows),
                "missing_rows": int(missing_rows),
                "oov_id": OOV_ID,
                "missing_id": MISSING_ID,
                "vocab": vocab_file,
            }
        )

    step("encoding")
    joins = " ".join(f"LEFT JOIN vocab_{i} v{i} ON d.c{i} = v{i}.value" for i in range(len(spec.fields)))
    encoded = ", ".join(
        f"CAST(coalesce(v{i}.id, CASE WHEN d.c{i} IS NULL THEN {MISSING_ID} ELSE {OOV_ID} END) AS INTEGER) AS c{i}"
        for i in range(len(spec.fields))
    )
    con.execute(f"CREATE TABLE enc AS SELECT d.r, d.split, d.label, {encoded} FROM data d {joins}")
    con.execute("DROP TABLE data")

    outputs: dict[str, str] = {}
    columns = ", ".join(f"c{i} AS {q(f.name)}" for i, f in enumerate(spec.fields))
    for split_id, name in enumerate(SPLITS):
        step(f"writing {name}.parquet")
        con.execute(
            f"COPY (SELECT label, {columns} FROM enc WHERE split = {split_id} ORDER BY r) "
            f"TO {lit(str(out_dir / f'{name}.parquet'))} (FORMAT parquet, COMPRESSION zstd)"
        )
        outputs[name] = f"{name}.parquet"
    stats = con.execute(
        "SELECT split, count(*), avg(label) FROM enc GROUP BY split ORDER BY split"
    ).fetchall()
    rows = {SPLITS[s]: int(c) for s, c, _ in stats}
    pos = {SPLITS[s]: float(p) for s, _, p in stats}
    pos["all"] = float(con.execute("SELECT avg(label) FROM enc").fetchone()[0])

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
    (out_dir / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    outputs["schema"] = "schema.json"
    outputs["vocab"] = "vocab"
    metrics = {
        "rows": sum(rows.values()),
        "rows_train": rows["train"],
        "rows_val": rows["val"],
        "rows_test": rows["test"],
        "n_fields": len(fields_meta),
        "total_cardinality": schema["total_cardinality"],
        "positive_ratio": round(pos["all"], 6),
        "bad_rows_skipped": bad_lines + bad_labels + bad_values,
    }
    step("done")
    return PreprocessResult(schema=schema, metrics=metrics, outputs=outputs)


def _split_sizes(n: int, split: tuple[float, float, float]) -> list[int]:
    n_train = int(round(n * split[0]))
    n_val = int(round(n * split[1]))
    n_val = min(n_val, n - n_train)
    return [n_train, n_val, n - n_train - n_val]


_COLUMNS_FOUND = re.compile(r"Expected Number of Columns:\s*(\d+)\s*Found:\s*(\d+)")


def _check_rejects(con: duckdb.DuckDBPyConnection, path: Path, spec: FormatSpec, cfg: PreprocessConfig) -> int:
    """Lines DuckDB could not split into the expected columns: an error unless skipped."""
    try:
        rows = con.execute(
            "SELECT line, error_type, error_message FROM reject_errors ORDER BY line"
        ).fetchall()
    except duckdb.Error:
        return 0  # Parquet input: no CSV rejects table
    if not rows:
        return 0
    lines = {r[0] for r in rows}
    if cfg.skip_bad_rows:
        return len(lines)
    line, kind, message = rows[0]
    found = _COLUMNS_FOUND.search(message or "")
    if found:
        detail = f"line {line} has {found.group(2)} columns, expected {found.group(1)}"
    elif kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        detail = f"line {line} has the wrong number of columns (expected {spec.expected_columns})"
    else:
        detail = f"line {line}: {str(kind).lower()}: {_one_line(message)}"
    raise DataError(f"{path.name}: {detail} ({len(lines)} bad line{'s' if len(lines) > 1 else ''}; --skip-bad-rows drops them)")


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:200]


def _check_rows(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    cfg: PreprocessConfig,
    condition: str,
    what: str,
    columns: list[str],
) -> int:
    """Count raw rows matching ``condition``: an error naming the first one unless skipped."""
    count, first = con.execute(f"SELECT count(*), min(rowid) FROM raw WHERE {condition}").fetchone()
    if not count:
        return 0
    if cfg.skip_bad_rows:
        return int(count)
    detail = f"first in data row {int(first) + 1}"
    if columns:
        values = con.execute(f"SELECT {', '.join(q(c) for c in columns)} FROM raw WHERE rowid = {int(first)}").fetchone()
        shown = [f"{c}={v!r}" for c, v in zip(columns, values, strict=True)]
        if len(columns) > 1:  # name the offending numeric column(s) only
            ok = con.execute(
                f"SELECT {', '.join(f'TRY_CAST({q(c)} AS DOUBLE) IS NOT NULL OR {q(c)} IS NULL' for c in columns)} "
                f"FROM raw WHERE rowid = {int(first)}"
            ).fetchone()
            shown = [s for s, good in zip(shown, ok, strict=True) if not good] or shown[:1]
        detail += ": " + ", ".join(shown[:3])
    raise DataError(
        f"{path.name}: {count} row{'s' if count > 1 else ''} with {what} ({detail}); fix the file or pass --skip-bad-rows"
    )
