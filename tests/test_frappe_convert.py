"""benchmarks/frappe.py: Frappe-style libFM files -> one CSV, on hand-made samples (no real data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from bench_modules import load_benchmark

fr = load_benchmark("frappe.py", "frappe_convert")

# Two files in Frappe's layout: label, then user item daytime weekday isweekend homework cost weather country city.
VALIDATION = (
    "1 3:1 10:1 20:1 30:1 40:1 50:1 60:1 70:1 80:1 90:1\r\n"
    "-1 4:1 11:1 21:1 31:1 41:1 50:1 60:1 71:1 81:1 91:1\r\n"
    "\r\n"
    "-1\t3:1  12:1 20:1 30:1 40:1 51:1 61:1 70:1 80:1 90:1   \r\n"
)
TEST = "1 5:1 10:1 22:1 32:1 40:1 50:1 60:1 72:1 80:1 92:1.0\n+1 4:1 12:1 20:1 30:1 41:1 51:1 61:1 70:1 81:1 91:1\n"
EXPECTED = (
    "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n"
    "1,3,10,20,30,40,50,60,70,80,90\n"
    "0,4,11,21,31,41,50,60,71,81,91\n"
    "0,3,12,20,30,40,51,61,70,80,90\n"
    "1,5,10,22,32,40,50,60,72,80,92\n"
    "1,4,12,20,30,41,51,61,70,81,91\n"
)


@pytest.fixture
def frappe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "frappe"
    d.mkdir()
    (d / "frappe.validation.libfm").write_bytes(VALIDATION.encode())
    (d / "frappe.test.libfm").write_text(TEST)
    return d


def test_converts_in_file_order_with_labels_mapped(frappe_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frappe.csv"
    rows = fr.write_csv([frappe_dir / "frappe.validation.libfm", frappe_dir / "frappe.test.libfm"], out)
    assert rows == 5
    assert out.read_text() == EXPECTED


def test_folder_means_validation_then_test(frappe_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frappe.csv"
    assert fr.main([str(frappe_dir), "-o", str(out)]) == 0
    assert out.read_text() == EXPECTED
    flipped = tmp_path / "flipped.csv"
    fr.write_csv([frappe_dir / "frappe.test.libfm", frappe_dir / "frappe.validation.libfm"], flipped)
    lines = EXPECTED.splitlines()
    assert flipped.read_text().splitlines() == [lines[0], *lines[4:], *lines[1:4]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 3:1 10:1 20:1 30:1 40:1 50:1 60:1 70:1 80:1", "found 10 tokens"),
        ("2 3:1 10:1 20:1 30:1 40:1 50:1 60:1 70:1 80:1 90:1", "label '2' is not -1, 0 or 1"),
        ("1 3:1 10:2 20:1 30:1 40:1 50:1 60:1 70:1 80:1 90:1", "field 2 (item) token '10:2'"),
        ("1 3:1 10:1 20:1 30:1 40:1 50:1 60:1 70:1 80:1 x:1", "field 10 (city) token 'x:1'"),
    ],
)
def test_bad_line_named_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str) -> None:
    src = tmp_path / "bad.libfm"
    src.write_text("1 3:1 10:1 20:1 30:1 40:1 50:1 60:1 70:1 80:1 90:1\n\n" + line + "\n")
    out = tmp_path / "out.csv"
    assert fr.main([str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {src}:3: ") and message in err
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_missing_inputs_and_empty_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "frappe.validation.libfm").write_text("")
    assert fr.main([str(tmp_path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "no frappe.test.libfm in this folder" in capsys.readouterr().err
    (tmp_path / "frappe.test.libfm").write_text("\n\n")
    assert fr.main([str(tmp_path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "no rows" in capsys.readouterr().err
    assert fr.main([str(tmp_path / "absent.libfm"), "-o", str(tmp_path / "o.csv")]) == 2
    assert "absent.libfm: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_optembed_preprocess_reads_the_csv(frappe_dir: Path, tmp_path: Path, store_dir: Path, cli) -> None:
    for name in ("frappe.validation.libfm", "frappe.test.libfm"):  # 8 x 5 rows: enough for an 8:1:1 split
        (frappe_dir / name).write_bytes((frappe_dir / name).read_bytes() * 8)
    out = tmp_path / "frappe.csv"
    assert fr.write_csv([frappe_dir], out) == 40
    res = cli("preprocess", out, "--format", "csv", "--label", "label", "--min-count", "1", "--count-on", "all", "--json")
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    folder = store_dir / "preprocess" / manifest["fingerprint"]
    schema = json.loads((folder / "schema.json").read_text())
    assert [f["name"] for f in schema["fields"]] == list(fr.FIELDS)
    # distinct values per field in EXPECTED's columns, + the OOV and missing ids
    distinct = {"user": 3, "item": 3, "daytime": 3, "weekday": 3, "isweekend": 2, "homework": 2, "cost": 2,
                "weather": 3, "country": 2, "city": 3}
    assert {f["name"]: f["cardinality"] for f in schema["fields"]} == {k: v + 2 for k, v in distinct.items()}
    labels = [v for s in ("train", "val", "test") for v in pq.read_table(folder / f"{s}.parquet").column("label").to_pylist()]
    assert len(labels) == 40 and sum(labels) == 24


def _random_frappe(folder: Path, rows: tuple[int, int], seed: int = 0) -> None:
    """Two libFM files of random Frappe-shaped rows (small vocabularies, so values repeat and some are rare)."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for name, n in zip(fr.SPLIT_FILES, rows):
        ids = rng.integers(0, 6, (n, len(fr.FIELDS))) ** 2 + 100 * np.arange(len(fr.FIELDS))  # skewed counts
        labels = rng.choice(["-1", "1"], n)
        lines = [" ".join([lab, *(f"{v}:1" for v in row)]) for lab, row in zip(labels, ids)]
        (folder / name).write_text("\n".join(lines) + "\n")


def test_split_files_are_optembeds_split(tmp_path: Path, store_dir: Path, cli) -> None:
    _random_frappe(tmp_path / "frappe", (210, 90))
    paths = fr.convert(tmp_path / "frappe", tmp_path / "out")
    assert set(paths) == {"csv", "train", "val", "test"} and all(p.parent == tmp_path / "out" for p in paths.values())
    every = pacsv.read_csv(paths["csv"], convert_options=_as_text()).to_pylist()
    parts = {s: pacsv.read_csv(paths[s], convert_options=_as_text()).to_pylist() for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [240, 30, 30]
    # the three files partition the rows (as a multiset)
    assert sorted(map(_key, every)) == sorted(_key(r) for s in parts for r in parts[s])
    # the split optembed makes of frappe.csv with the benchmark's settings (rare values -> OOV, counted on train)
    res = cli("preprocess", paths["csv"], "--format", "csv", "--label", "label", "--min-count", "2", "--json")
    assert res.exit_code == 0, res.output
    folder = store_dir / "preprocess" / json.loads(res.stdout)["fingerprint"]
    for split, rows in parts.items():
        encoded = pq.read_table(folder / f"{split}.parquet").to_pylist()
        assert [r["label"] for r in encoded] == [int(r["label"]) for r in rows]
        for name in fr.FIELDS:
            vocab = {v["value"]: v["id"] for v in pq.read_table(folder / f"vocab/{name}.parquet").to_pylist() if v["value"]}
            assert [r[name] for r in encoded] == [vocab.get(r[name], 0) for r in rows], (split, name)


def test_failed_split_leaves_no_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _random_frappe(tmp_path / "frappe", (2, 0))  # two rows: too few for an 8:1:1 split
    out = tmp_path / "out"
    assert fr.main([str(tmp_path / "frappe"), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "frappe.csv: optembed preprocess failed" in err and "too few" in err
    assert list(out.iterdir()) == []


def _as_text() -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(column_types={name: pa.string() for name in ("label", *fr.FIELDS)})


def _key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[k] for k in ("label", *fr.FIELDS))
