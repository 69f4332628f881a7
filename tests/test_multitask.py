"""Several labels on one shared embedding table: data, model heads, the weighted loss, training.

The data is planted by hand: a click that depends on field ``a`` and a sparse conversion among
the clicks that depends on field ``b`` only, so each task has a signal the other does not carry.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from optembed.data.preprocess import PreprocessConfig, label_columns, preprocess, task_names
from optembed.data.tensors import read_split
from optembed.errors import ConfigError, DataError


def planted_rows(n: int, seed: int = 0) -> list[list[object]]:
    """``click, convert, a, b, c``: P(click) 0.55 for a < 5 else 0.18; P(convert | click) 0.3 for
    b < 3 else 0.01; ``c`` is noise."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 20, n), rng.integers(0, 30, n), rng.integers(0, 10, n)
    click = rng.random(n) < np.where(a < 5, 0.55, 0.18)
    convert = click & (rng.random(n) < np.where(b < 3, 0.3, 0.01))
    return [[int(k), int(v), f"a{x}", f"b{y}", f"c{z}"] for k, v, x, y, z in zip(click, convert, a, b, c)]


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["click", "convert", "a", "b", "c"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def two_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[object]]]:
    root = tmp_path_factory.mktemp("two_label")
    rows = planted_rows(6000)
    src = write_csv(root / "conv.csv", rows)
    preprocess(src, PreprocessConfig(fmt="csv", label="click,convert"), root / "out")
    return root / "out", rows


# -- data --------------------------------------------------------------------------------------
def test_preprocess_stores_every_label_with_its_ratio(two_label: tuple[Path, list[list[object]]]) -> None:
    out, rows = two_label
    schema = json.loads((out / "schema.json").read_text())
    assert [f["name"] for f in schema["fields"]] == ["a", "b", "c"]  # neither label is a field
    assert [(e["name"], e["column"]) for e in schema["labels"]] == [("click", "label"), ("convert", "label_1")]
    assert label_columns(schema) == ["label", "label_1"] and task_names(schema) == ["click", "convert"]
    stored = {s: pq.read_table(out / f"{s}.parquet") for s in ("train", "val", "test")}
    assert all(t.schema.field("label_1").type == "int8" for t in stored.values())
    total = {name: sum(int(np.sum(t.column(col).to_numpy())) for t in stored.values())
             for name, col in (("click", "label"), ("convert", "label_1"))}
    assert total == {"click": sum(int(r[0]) for r in rows), "convert": sum(int(r[1]) for r in rows)}
    for entry, col in zip(schema["labels"], ("label", "label_1"), strict=True):
        for s, table in stored.items():
            assert entry["positive_rate"][s] == pytest.approx(float(np.mean(table.column(col).to_numpy())))
        assert entry["positive_rate"]["all"] == pytest.approx(total[entry["name"]] / len(rows))
    # the single-label keys keep their meaning: the primary task's
    assert schema["positive_ratio"] == schema["labels"][0]["positive_rate"] and schema["source_label"] == "click"
    # every stored conversion is a click (the rows were not shuffled between the columns)
    for table in stored.values():
        assert not np.any((table.column("label_1").to_numpy() == 1) & (table.column("label").to_numpy() == 0))


def test_read_split_shapes(two_label: tuple[Path, list[list[object]]]) -> None:
    out, _ = two_label
    one = read_split(out / "train.parquet", ["a", "b", "c"])
    both = read_split(out / "train.parquet", ["a", "b", "c"], ["label", "label_1"], tasks=["click", "convert"])
    assert one.y.shape == (len(one),) and both.y.shape == (len(one), 2) and both.tasks == ("click", "convert")
    assert both.y[:, 0].tolist() == one.y.tolist() and both.primary_y.tolist() == one.y.tolist()
    assert both.slice(10, 20).y.shape == (10, 2) and both.slice(10, 20).tasks == both.tasks


def test_one_label_schema_has_no_labels_key(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "one.csv", planted_rows(400))
    result = preprocess(src, PreprocessConfig(fmt="csv", label="click", fields=["a", "b"]), tmp_path / "out")
    assert "labels" not in result.schema and "label_positive_ratios" not in result.metrics
    assert pq.read_table(tmp_path / "out" / "train.parquet").column_names == ["label", "a", "b"]
    assert label_columns(result.schema) == ["label"] and task_names(result.schema) == ["click"]


def test_bad_second_label_is_refused_naming_its_column(tmp_path: Path) -> None:
    rows = planted_rows(300)
    rows[41][1] = "2"
    src = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as err:
        preprocess(src, PreprocessConfig(fmt="csv", label="click,convert"), tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "bad.csv" in message and "convert='2'" in message and "data row 42" in message
    # --skip-bad-rows drops the row once, whichever label is bad
    rows[7][0] = "x"
    src = write_csv(tmp_path / "bad2.csv", rows)
    result = preprocess(src, PreprocessConfig(fmt="csv", label="click,convert", skip_bad_rows=True), tmp_path / "out2")
    assert result.schema["bad_rows_skipped"]["label"] == 2 and result.metrics["rows"] == 298


@pytest.mark.parametrize("label", ["click,", "click,click", "click,missing"])
def test_bad_label_lists(tmp_path: Path, label: str) -> None:
    src = write_csv(tmp_path / "x.csv", planted_rows(50))
    with pytest.raises(ConfigError):
        preprocess(src, PreprocessConfig(fmt="csv", label=label), tmp_path / "out")


def test_cli_bad_label_one_line(tmp_path: Path, store_dir: Path, cli) -> None:
    rows = planted_rows(200)
    rows[10][1] = "maybe"
    src = write_csv(tmp_path / "bad.csv", rows)
    res = cli("preprocess", src, "--label", "click,convert")
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "convert='maybe'" in errors[0] and "bad.csv" in errors[0]
    assert "Traceback" not in res.output


def test_synth_two_tasks(tmp_path: Path) -> None:
    from optembed.data.synth import CONVERT_AMONG_CLICKS, MULTITASK_CLICKS, generate

    truth = generate(tmp_path / "mt.csv", 30_000, seed=2, tasks=2)
    assert truth.tasks is not None and truth.tasks["names"] == ["click", "convert"]
    import pyarrow.csv as pacsv

    raw = pacsv.read_csv(tmp_path / "mt.csv")
    click, convert = raw.column("click").to_numpy(), raw.column("convert").to_numpy()
    assert raw.column_names[:3] == ["click", "convert", "I1"] and raw.num_columns == 41
    assert click.mean() == pytest.approx(MULTITASK_CLICKS, abs=0.03)
    assert convert[click == 1].mean() == pytest.approx(CONVERT_AMONG_CLICKS, abs=0.015)
    assert not np.any((convert == 1) & (click == 0))
    assert truth.tasks["positive_ratio"]["convert"] == pytest.approx(convert.mean())
    assert len(truth.tasks["signal_fields"]["convert"]) == 4
    written = json.loads((tmp_path / "mt.csv.truth.json").read_text())
    assert written["tasks"] == truth.tasks
    with pytest.raises(ConfigError):
        generate(tmp_path / "three.csv", 100, tasks=3)
    # one task: the truth has no tasks key
    generate(tmp_path / "one.txt", 500, seed=2)
    assert "tasks" not in json.loads((tmp_path / "one.txt.truth.json").read_text())
