"""Three raw CSV splits (train, val, test) -> a folder shaped like an optembed preprocess artifact.

Each file has a header with a ``label`` column (0/1) and the same categorical fields. A field's
vocabulary is counted on the training file: the values seen at least ``min_count`` times get ids
2.. by decreasing count (ties by text), like optembed's preprocess; id 0 is every other value (OOV,
including values only val/test hold) and id 1 an empty cell (missing). The folder gets
``schema.json`` (fields with their cardinality, rows, positive ratios, min count) and
``train/val/test.parquet`` (label int8, one int32 id column per field, rows in file order).
Everything is columnar (pyarrow compute); a bad file stops it with an error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
LABEL = "label"
OOV_ID = 0
MISSING_ID = 1


class SplitError(ValueError):
    """An unusable split file (the message names it)."""


def read_split(path: Path) -> pa.Table:
    """A CSV split as text columns (empty cells null) plus an int8 0/1 label."""
    if not path.is_file():
        raise SplitError(f"{path}: no such file")
    try:
        header = pacsv.open_csv(path).schema.names  # the first block only
        if LABEL not in header:
            raise SplitError(f"{path}: no '{LABEL}' column in the header")
        types = {name: pa.string() for name in header}
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""]),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise SplitError(f"{path}: no rows")
    label = table.column(LABEL)
    ok = pc.fill_null(pc.is_in(label, value_set=pa.array(["0", "1"])), False)
    if not pc.all(ok).as_py():
        raise SplitError(f"{path}: label is not 0/1 on {table.num_rows - pc.sum(ok).as_py()} rows")
    return table.set_column(header.index(LABEL), LABEL, pc.cast(pc.equal(label, "1"), pa.int8()))


def vocabulary(train_column: pa.ChunkedArray, min_count: int) -> pa.Array:
    """The kept values of one field in id order (the value at position ``k`` has id ``k + 2``)."""
    counts = pc.value_counts(train_column.drop_null())
    table = pa.table({"value": counts.field("values"), "n": counts.field("counts")})
    table = table.filter(pc.greater_equal(table.column("n"), min_count))
    return table.sort_by([("n", "descending"), ("value", "ascending")]).column("value").combine_chunks()


def encode(column: pa.ChunkedArray, kept: pa.Array) -> pa.Array:
    """Ids of ``column``'s values: 2 + position in ``kept``; OOV 0; missing (null) 1."""
    position = pc.index_in(column, value_set=kept)
    ids = pc.fill_null(pc.add(position, 2), OOV_ID)
    return pc.cast(pc.if_else(pc.is_null(column), MISSING_ID, ids), pa.int32()).combine_chunks()


def write_artifact(train: Path, val: Path, test: Path, out_dir: Path, min_count: int = 1) -> Path:
    """Encode the three files into ``out_dir`` (created); returns ``out_dir``."""
    if min_count < 1:
        raise SplitError(f"min_count must be at least 1, got {min_count}")
    paths = dict(zip(SPLITS, (Path(train), Path(val), Path(test))))
    tables = {split: read_split(path) for split, path in paths.items()}
    fields = [name for name in tables["train"].column_names if name != LABEL]
    if not fields:
        raise SplitError(f"{paths['train']}: no field columns besides '{LABEL}'")
    for split in ("val", "test"):
        if sorted(tables[split].column_names) != sorted(tables["train"].column_names):
            raise SplitError(f"{paths[split]}: columns {tables[split].column_names} differ from {paths['train']}'s")
    kept = {name: vocabulary(tables["train"].column(name), min_count) for name in fields}
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, table in tables.items():
        columns = {LABEL: table.column(LABEL)} | {name: encode(table.column(name), kept[name]) for name in fields}
        pq.write_table(pa.table(columns), out_dir / f"{split}.parquet")
    schema: dict[str, Any] = {
        "format": "csv splits",
        "source": {split: str(path) for split, path in paths.items()},
        "label": LABEL,
        "fields": [
            {"name": name, "kind": "categorical", "cardinality": 2 + len(kept[name]), "kept_values": len(kept[name]),
             "oov_id": OOV_ID, "missing_id": MISSING_ID}
            for name in fields
        ],
        "n_fields": len(fields),
        "total_cardinality": sum(2 + len(kept[name]) for name in fields),
        "rows": {split: table.num_rows for split, table in tables.items()},
        "positive_ratio": {split: pc.mean(table.column(LABEL)).as_py() for split, table in tables.items()},
        "min_count": min_count,
        "count_on": "train",
    }
    (out_dir / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    return out_dir
