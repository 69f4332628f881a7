"""Raw input formats: how to read a file and turn each column into a label or a field token.

Every format is described by a :class:`FormatSpec`: the DuckDB ``read_csv``/``read_parquet``
call that loads the raw columns (as text, or typed where the format fixes the type: Criteo's
integer columns are read as DOUBLE, so a non-number is a rejected line), the SQL expression of the
0/1 label, and one SQL expression per field giving the field's token (NULL means "missing").
Validity checks are SQL expressions too, so the whole parse runs inside DuckDB. A numeric
csv/Parquet field (:func:`quantile_field`) parses to its DOUBLE value; preprocess then replaces
it by its quantile bin (:mod:`optembed.data.buckets`), whose boundaries need the training split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optembed.errors import ConfigError

FORMATS = ("criteo", "avazu", "kdd12", "csv", "parquet")
DEFAULT_MIN_COUNT = {"criteo": 2, "avazu": 2, "kdd12": 10, "csv": 2, "parquet": 2}

CRITEO_INT = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]
AVAZU_COLUMNS = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
).split(",")
KDD12_COLUMNS = [
    "Click", "Impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position",
    "QueryID", "KeywordID", "TitleID", "DescriptionID", "UserID",
]


def q(name: str) -> str:
    """Quote a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """Quote a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def numeric_value(col: str) -> str:
    """The column as a finite DOUBLE, NULL when empty or not a number."""
    v = f"TRY_CAST({q(col)} AS DOUBLE)"
    return f"(CASE WHEN isfinite({v}) THEN {v} END)"


def float_value(col: str) -> str:
    """The column as a DOUBLE for quantile bins: NULL when empty, NaN or not a number (the field's
    check flags the last); +-inf kept."""
    v = f"TRY_CAST({q(col)} AS DOUBLE)"
    return f"(CASE WHEN NOT isnan({v}) THEN {v} END)"


def log_square_token(col: str) -> str:
    """Criteo's integer transform as a text token: v > 2 -> floor(ln(v)^2), else v itself."""
    v = numeric_value(col)
    return (
        f"(CASE WHEN {v} > 2 THEN CAST(CAST(floor(ln({v}) ^ 2) AS BIGINT) AS VARCHAR) "
        f"WHEN {v} = floor({v}) THEN CAST(CAST({v} AS BIGINT) AS VARCHAR) "
        f"ELSE CAST({v} AS VARCHAR) END)"
    )


def typed_log_square_token(col: str) -> str:
    """Criteo's integer transform on a DOUBLE column, as a DOUBLE token (see :func:`number_text`)."""
    c = q(col)
    return f"(CASE WHEN {c} > 2 THEN floor(ln({c}) ^ 2) ELSE {c} END)"


def number_text(expr: str) -> str:
    """A DOUBLE token as the text :func:`log_square_token` gives: integral values without '.0'."""
    return (
        f"(CASE WHEN {expr} = floor({expr}) AND abs({expr}) < 9e18 THEN CAST(CAST({expr} AS BIGINT) AS VARCHAR) "
        f"ELSE CAST({expr} AS VARCHAR) END)"
    )


def binary_label(col: str) -> str:
    """A 0/1 label; NULL when the value is anything else (true/false are accepted)."""
    c = q(col)
    return (
        f"(CASE {c} WHEN '0' THEN 0 WHEN '1' THEN 1 "  # the common case, without parsing
        f"ELSE (CASE WHEN lower(trim({c})) IN ('true', 'false') THEN CAST(lower(trim({c})) = 'true' AS INTEGER) "
        f"WHEN TRY_CAST({c} AS DOUBLE) IN (0, 1) THEN CAST(TRY_CAST({c} AS DOUBLE) AS INTEGER) END) END)"
    )


@dataclass
class FieldSpec:
    name: str
    token_sql: str  # SQL expression of the field's token over the raw columns, NULL = missing
    kind: str = "categorical"  # or "numeric" (log-square or quantile bucketed)
    check_sql: str | None = None  # SQL that is TRUE when the raw value is invalid
    source: str | None = None  # the raw column the check reads (default: name)
    token_type: str = "VARCHAR"  # SQL type of the token; DOUBLE tokens are stored as number_text
    # quantile bins (optembed.data.buckets): token_sql is then the raw DOUBLE value, bucketed
    # after parsing; ``bins`` to fit (preprocess), ``boundaries`` already fitted (predict)
    bins: int | None = None
    boundaries: list[float] | None = None

    @property
    def source_column(self) -> str:
        return self.source or self.name

    @property
    def bucketed(self) -> bool:
        return self.bins is not None or self.boundaries is not None

    def text_sql(self, expr: str) -> str:
        """SQL turning a token (``expr``) into the text stored in the vocabulary."""
        return number_text(expr) if self.token_type == "DOUBLE" else expr


@dataclass
class FormatSpec:
    name: str
    reader_sql: str  # a DuckDB table function call producing raw VARCHAR columns
    label_sql: str  # SQL expression of the label, NULL when invalid
    label_column: str
    fields: list[FieldSpec] = field(default_factory=list)
    expected_columns: int | None = None
    header: bool = False
    columns: list[str] = field(default_factory=list)  # the raw columns in file order, when fixed
    # the labels after the first (csv/Parquet with several --label columns): (raw column, SQL of its 0/1 value)
    extra_labels: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label_columns(self) -> list[str]:
        """The raw label columns, the primary task's first."""
        return [self.label_column, *(c for c, _ in self.extra_labels)]

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def bad_value_sql(self) -> str:
        """SQL that is true for a row with a value no field accepts (non-numeric where numbers
        are expected, ...)."""
        checks = [f.check_sql for f in self.fields if f.check_sql]
        return " OR ".join(f"coalesce({c}, false)" for c in checks) or "false"


# bytes the CSV reader takes at a time: large buffers let each thread parse long runs of rows, which
# the parallel table insert then appends in fewer, fuller pieces (a quarter less CPU at 1M Criteo rows
# than the reader's default)
CSV_BUFFER_BYTES = 64 << 20


def _csv_reader(
    path: Path, columns: list[str] | dict[str, str] | None, delim: str, header: bool, quote: str
) -> str:
    parts = [
        lit(str(path)),
        f"delim={lit(delim)}",
        f"header={'true' if header else 'false'}",
        f"quote={lit(quote)}",
        "escape=''" if quote == "" else f"escape={lit(quote)}",
        "store_rejects=true",
        "ignore_errors=true",
        "null_padding=false",
        f"buffer_size={CSV_BUFFER_BYTES}",
    ]
    if columns is not None:
        types = columns if isinstance(columns, dict) else dict.fromkeys(columns, "VARCHAR")
        cols = ", ".join(f"{lit(c)}: {lit(t)}" for c, t in types.items())
        parts += [f"columns={{{cols}}}", "auto_detect=false"]
    else:
        parts += ["all_varchar=true"]
    return f"read_csv({', '.join(parts)})"


def criteo_spec(path: Path) -> FormatSpec:
    """Criteo's TSV; the reader parses the integer columns as DOUBLE (a non-number is a CAST reject)."""
    columns = {"label": "VARCHAR", **dict.fromkeys(CRITEO_INT, "DOUBLE"), **dict.fromkeys(CRITEO_CAT, "VARCHAR")}
    fields = [
        FieldSpec(
            c,
            typed_log_square_token(c),
            kind="numeric",
            check_sql=f"(NOT isfinite({q(c)}))",
            token_type="DOUBLE",
        )
        for c in CRITEO_INT
    ]
    fields += [FieldSpec(c, q(c)) for c in CRITEO_CAT]
    return FormatSpec(
        "criteo",
        _csv_reader(path, columns, "\t", header=False, quote=""),
        binary_label("label"),
        "label",
        fields,
        expected_columns=40,
        columns=list(columns),
    )


def avazu_spec(path: Path) -> FormatSpec:
    hour = q("hour")
    day = f"TRY_STRPTIME('20' || substr({hour}, 1, 6), '%Y%m%d')"
    valid_hour = f"(length({hour}) = 8 AND {day} IS NOT NULL AND TRY_CAST(substr({hour}, 7, 2) AS INTEGER) BETWEEN 0 AND 23)"
    fields = [FieldSpec(c, q(c)) for c in AVAZU_COLUMNS[3:]]
    hour_check = f"(NOT coalesce({valid_hour}, false))"
    time_fields = [
        FieldSpec("hour_of_day", f"CAST(TRY_CAST(substr({hour}, 7, 2) AS INTEGER) AS VARCHAR)", check_sql=hour_check, source="hour"),
        FieldSpec("weekday", f"CAST(dayofweek({day}) AS VARCHAR)"),
        FieldSpec("is_weekend", f"CAST(CAST(dayofweek({day}) IN (0, 6) AS INTEGER) AS VARCHAR)"),
    ]
    return FormatSpec(
        "avazu",
        _csv_reader(path, None, ",", header=True, quote='"'),
        binary_label("click"),
        "click",
        time_fields + fields,
        expected_columns=len(AVAZU_COLUMNS),
        header=True,
    )


def kdd12_spec(path: Path, keep_impression: bool = True) -> FormatSpec:
    click = numeric_value("Click")
    label = f"(CASE WHEN {click} >= 0 AND {click} = floor({click}) THEN CAST({click} > 0 AS INTEGER) END)"
    names = KDD12_COLUMNS[1:] if keep_impression else KDD12_COLUMNS[2:]
    return FormatSpec(
        "kdd12",
        _csv_reader(path, KDD12_COLUMNS, "\t", header=False, quote=""),
        label,
        "Click",
        [FieldSpec(c, q(c)) for c in names],
        expected_columns=len(KDD12_COLUMNS),
    )


def quantile_field(name: str, bins: int | None = None, boundaries: list[float] | None = None) -> FieldSpec:
    """A numeric csv/Parquet field bucketed by quantile bins (:mod:`optembed.data.buckets`): its
    token is the raw DOUBLE (empty and NaN missing), bucketed once the boundaries are known."""
    return FieldSpec(
        name,
        float_value(name),
        kind="numeric",
        check_sql=f"({q(name)} IS NOT NULL AND TRY_CAST({q(name)} AS DOUBLE) IS NULL)",
        token_type="DOUBLE",
        bins=bins,
        boundaries=boundaries,
    )


def log_square_field(name: str) -> FieldSpec:
    """A numeric csv/Parquet field under Criteo's log-square rule (artifacts and bundles made
    before quantile bins; the Criteo format itself uses :func:`typed_log_square_token`)."""
    return FieldSpec(name, log_square_token(name), kind="numeric", check_sql=f"({q(name)} IS NOT NULL AND {numeric_value(name)} IS NULL)")


def label_names(label: str | None) -> list[str]:
    """The label columns a ``--label`` value names: one column, or a comma list whose first is the
    primary task's; an empty name or a repeated one is a :class:`ConfigError`."""
    if label is None:
        return []
    names = [part.strip() for part in label.split(",")] if "," in label else [label]
    if any(not n for n in names):
        raise ConfigError(f"--label '{label}' has an empty column name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--label names the column '{repeated[0]}' more than once")
    return names


def generic_spec(
    path: Path,
    fmt: str,
    header_columns: list[str],
    label: str | None,
    fields: list[str] | None,
    numeric: list[str] | None,
    delimiter: str,
    numeric_bins: int | None = None,
) -> FormatSpec:
    """A CSV/TSV with a header, or a Parquet file, with a declared label and field list.

    ``numeric`` fields get ``numeric_bins`` quantile bins fitted on the training split; with
    ``None`` the log-square rule of earlier artifacts (a bundle without recorded boundaries)."""
    labels = label_names(label) or (["label"] if "label" in header_columns else [])
    if not labels:
        raise ConfigError(f"--label is required: no 'label' column among {', '.join(header_columns[:12])}")
    for one in labels:
        if one not in header_columns:
            raise ConfigError(f"label column '{one}' is not in the header ({', '.join(header_columns[:12])})")
    label, extra = labels[0], labels[1:]
    names = fields if fields else [c for c in header_columns if c not in labels]
    for name in [*names, *(numeric or [])]:
        if name not in header_columns:
            raise ConfigError(f"field '{name}' is not in the header ({', '.join(header_columns[:12])})")
    for one in labels:
        if one in names:
            raise ConfigError(f"the label column '{one}' cannot also be a field")
    numeric_set = set(numeric or [])
    specs = [
        (log_square_field(n) if numeric_bins is None else quantile_field(n, bins=numeric_bins))
        if n in numeric_set
        else FieldSpec(n, f"NULLIF(CAST({q(n)} AS VARCHAR), '')")
        for n in names
    ]
    if fmt == "parquet":
        reader = f"read_parquet({lit(str(path))})"
        label_sql = binary_label_any(label)
        return FormatSpec(
            "parquet", reader, label_sql, label, specs, expected_columns=None, header=True,
            extra_labels=[(c, binary_label_any(c)) for c in extra],
        )
    reader = _csv_reader(path, None, delimiter, header=True, quote='"')
    return FormatSpec(
        "csv", reader, binary_label(label), label, specs, expected_columns=len(header_columns), header=True,
        extra_labels=[(c, binary_label(c)) for c in extra],
    )


def binary_label_any(col: str) -> str:
    """Like :func:`binary_label` for columns of any type (Parquet)."""
    c = q(col)
    text = f"CAST({c} AS VARCHAR)"
    return (
        f"(CASE WHEN lower({text}) IN ('true', 'false') THEN CAST(lower({text}) = 'true' AS INTEGER) "
        f"WHEN TRY_CAST({text} AS DOUBLE) IN (0, 1) THEN CAST(TRY_CAST({text} AS DOUBLE) AS INTEGER) END)"
    )
