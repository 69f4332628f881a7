"""``optembed preprocess``: raw data -> encoded Parquet splits and vocabularies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from optembed.data import buckets
from optembed.data.preprocess import PreprocessConfig
from optembed.data.sniff import infer_format
from optembed.errors import ConfigError, DataError
from optembed.progress import Prefixed
from optembed_cli import ui
from optembed_cli.data_hints import explain
from optembed_cli.options import (
    INPUT, ArtifactsOpt, CountOn, FieldsOpt, Format, ForceOpt, JsonOpt, LabelOpt, NumericOpt, SkipBadRowsOpt, open_store, split_list,
)
from pipelines.store import Manifest


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--split must be three numbers like 0.8,0.1,0.1, got '{text}'") from None
    if len(parts) != 3:
        raise ConfigError(f"--split must be three numbers like 0.8,0.1,0.1, got '{text}'")
    return parts  # type: ignore[return-value]


@ui.handle_errors
def preprocess(
    file: Annotated[Path, typer.Argument(help="Raw data file.", show_default=False)],
    format: Annotated[
        Format | None,
        typer.Option(
            "--format", "-f",
            case_sensitive=False,
            help="Input format (default: guessed from the extension, delimiter, column count and header; "
            "the guess is printed).",
            show_default=False,
            rich_help_panel=INPUT,
        ),
    ] = None,
    min_count: Annotated[
        int | None, typer.Option(help="Values seen fewer times go to the field's OOV id (default 2; 10 for kdd12).")
    ] = None,
    split: Annotated[str, typer.Option(help="Train,val,test fractions.", metavar="FRACTIONS")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the random split.")] = 2022,
    count_on: Annotated[CountOn, typer.Option(help="Count values on the 'train' split or on 'all' data.")] = "train",
    label: LabelOpt = None,
    fields: FieldsOpt = None,
    numeric: NumericOpt = None,
    numeric_bins: Annotated[
        int,
        typer.Option(
            help=f"csv/parquet: quantile bins per --numeric field, fitted on the training split (at most {buckets.MAX_BINS:,}).",
            rich_help_panel=INPUT,
        ),
    ] = buckets.DEFAULT_BINS,
    delimiter: Annotated[str | None, typer.Option(help="csv: the delimiter (default ',' or tab for .tsv/.txt).", metavar="CHAR")] = None,
    drop_impression: Annotated[bool, typer.Option("--drop-impression", help="kdd12: do not use Impression as a field.")] = False,
    skip_bad_rows: SkipBadRowsOpt = False,
    hash_input: Annotated[
        bool, typer.Option("--hash-input", help="Fingerprint the input by a full hash instead of size+mtime+ends.")
    ] = False,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit.", metavar="SIZE")] = "2GB",
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Encode a raw CTR file into train/val/test Parquet splits with per-field vocabularies.

    Without --format the format is guessed: Criteo (40 tab-separated columns, no header), KDD12
    (12 tab-separated), Avazu (a CSV header with click and hour), Parquet (*.parquet), another CSV
    with a header (its 'label' column, or --label).

    Examples:

      optembed preprocess train.txt                  # Criteo, guessed

      optembed preprocess clicks.csv --label clicked --numeric price,age
    """
    from pipelines import preprocess as stage  # torch: imported when the command runs, not for --help

    fmt, delimiter, guessed = _format(file, format, label, delimiter)
    options = PreprocessConfig(
        fmt=fmt,
        min_count=min_count,
        split=parse_split(split),
        seed=seed,
        count_on=str(count_on),
        skip_bad_rows=skip_bad_rows,
        label=label,
        fields=split_list(fields),
        numeric=split_list(numeric),
        numeric_bins=numeric_bins,
        delimiter=delimiter,
        keep_impression=not drop_impression,
        memory_limit=memory_limit,
    )
    store = open_store(artifacts)
    with ui.reporter(as_json=json) as rep:
        if guessed:
            rep.defer(f"format: {guessed} (--format overrides)")
        try:
            manifest = stage.run(
                stage.PreprocessStage(file, options, hash_input=hash_input, force=force), store, Prefixed(rep, "preprocess")
            )
        except DataError as exc:
            clearer = explain(exc, file, fmt)
            if clearer is not None:
                raise clearer from None
            if guessed:
                raise DataError(f"{exc} (read as {guessed}; --format overrides)") from None
            raise
        rep.flush()
    ui.announce(manifest, json)
    if not json:
        render(manifest)


def _format(
    file: Path, given: str | None, label: str | None, delimiter: str | None
) -> tuple[str, str | None, str | None]:
    """The format to read ``file`` with, its delimiter, and (when guessed) the guess in words."""
    if given is not None:
        return str(given).lower(), delimiter, None
    if not file.is_file() or file.stat().st_size == 0:
        return ("parquet" if file.suffix.lower() == ".parquet" else "criteo"), delimiter, None  # the stage says why
    guess = infer_format(file, label)
    return guess.fmt, delimiter or guess.delimiter, f"{guess.fmt}, guessed from {guess.reason}"


def render(manifest: Manifest) -> None:
    from pipelines import preprocess as stage

    schema = stage.load_schema(manifest)
    table = Table(title=f"{schema['format']} fields", header_style="bold")
    for col in ("field", "kind", "cardinality", "OOV rows", "missing rows"):
        table.add_column(col, justify="left" if col in ("field", "kind") else "right")
    for f in schema["fields"]:
        table.add_row(f["name"], f["kind"], f"{f['cardinality']:,}", f"{f['oov_rows']:,}", f"{f['missing_rows']:,}")
    ui.out.print(table)
    ui.out.print(ui.metrics_table("preprocess", manifest.metrics))
