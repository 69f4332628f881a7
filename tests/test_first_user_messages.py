"""The advice of two refusals a first run meets: a text column given to ``--numeric`` (drop it
from --numeric, not --skip-bad-rows) and a data set too small to train (said with its row count
and the minimum, not a batch size of 1)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optembed.data.preprocess import PreprocessConfig, preprocess
from optembed.errors import DataError
from optembed.training.diagnostics import MIN_STEPS_PER_EPOCH, SMALLEST_BATCH, too_few_steps


def _csv(path: Path, city: list[str]) -> Path:
    lines = [f"{i % 3 == 0:d},k{i},{c}" for i, c in enumerate(city)]
    path.write_text("y,key,city\n" + "\n".join(lines) + "\n")
    return path


def test_a_text_column_given_to_numeric_says_drop_it(tmp_path: Path) -> None:
    src = _csv(tmp_path / "f.csv", [f"town{i % 7}" for i in range(60)])
    cfg = PreprocessConfig(fmt="csv", label="y", numeric=["city"])
    with pytest.raises(DataError) as err:
        preprocess(src, cfg, tmp_path / "out")
    text = str(err.value)
    assert text.startswith("f.csv: column 'city' is not numeric (60 of its 60 values")
    assert "drop it from --numeric" in text and "--skip-bad-rows" not in text
    # not even --skip-bad-rows trains on such a column: every row would go
    with pytest.raises(DataError, match="drop it from --numeric"):
        preprocess(src, PreprocessConfig(fmt="csv", label="y", numeric=["city"], skip_bad_rows=True), tmp_path / "o2")
    # the column itself is fine as a categorical field
    res = preprocess(src, PreprocessConfig(fmt="csv", label="y"), tmp_path / "o3")
    assert sum(res.schema["rows"].values()) == 60


def test_a_text_parquet_column_given_to_numeric(tmp_path: Path) -> None:
    src = tmp_path / "f.parquet"
    pq.write_table(pa.table({"y": [i % 2 for i in range(40)], "city": [f"t{i % 4}" for i in range(40)]}), src)
    with pytest.raises(DataError, match=r"f.parquet: column 'city' is not numeric \(40 of its 40 .*'t0'"):
        preprocess(src, PreprocessConfig(fmt="parquet", label="y", numeric=["city"]), tmp_path / "out")


def test_a_few_stray_values_still_point_at_the_rows(tmp_path: Path) -> None:
    values = [str(i / 3) for i in range(60)]
    values[7] = "oops"
    src = _csv(tmp_path / "f.csv", values)
    with pytest.raises(DataError, match=r"non-numeric value in a numeric field .*city='oops'.*--skip-bad-rows"):
        preprocess(src, PreprocessConfig(fmt="csv", label="y", numeric=["city"]), tmp_path / "out")


def test_too_small_to_train_names_rows_and_minimum() -> None:
    minimum = MIN_STEPS_PER_EPOCH * SMALLEST_BATCH
    line = too_few_steps(80, 4096)
    assert line is not None and "too small to train" in line
    assert "80 training rows" in line and f"{minimum:,}" in line and "--batch-size 1 or less" not in line
    assert "too small" in (too_few_steps(minimum - 1, 4096) or "")
    at_minimum = too_few_steps(minimum, 4096)  # from the minimum on, a smaller batch is the remedy
    assert at_minimum is not None and f"--batch-size {SMALLEST_BATCH} or less" in at_minimum
    assert too_few_steps(minimum, SMALLEST_BATCH) is None
