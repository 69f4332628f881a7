"""Benchmark: ``optembed preprocess`` (DuckDB) against a plain-pandas reference on Criteo-format data.

For every size in ``--rows`` the script

1. generates a synthetic Criteo file once (``optembed.data.synth.generate``, cached in ``--out``);
2. runs our preprocess in a fresh interpreter and records wall seconds, rows/s and peak RSS;
3. runs the pandas reference (read the whole file, log-square the integers, ``value_counts``,
   dict vocabularies with min count 2, ``map`` to ids, random 8:1:1 split, three Parquet files)
   in a fresh interpreter, under a memory watchdog that kills it past ``--mem-limit-gb``;
4. prints a table and writes it as the ``## preprocess`` section of ``benchmarks/RESULTS.md``.

Every run is a separate child process, reaped with ``os.wait4``; its peak RSS (``VmHWM``) and CPU
time belong to that run alone. The input file is read once before each run so both tools start
from a warm page cache.

Usage::

    python benchmarks/preprocess.py --rows 1000000,3000000,10000000 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## preprocess"
SEED = 0  # synthetic data seed
SPLIT_SEED = 2022
MIN_COUNT = 2
SPLIT = (0.8, 0.1, 0.1)
TARGET_SPEEDUP = 5.0
TARGET_RSS_MB = 3000.0  # 3 GB, decimal
TARGET_RSS_ROWS = 10_000_000
SCALING_ROWS = (1_000_000, 3_000_000, 10_000_000)
INT_COLS = [f"I{i}" for i in range(1, 14)]
CAT_COLS = [f"C{i}" for i in range(1, 27)]
MB = 1e6
SIDES = ("ours", "pandas", "polars")


# --------------------------------------------------------------------------- child: ours


class _StepClock:
    """A progress reporter that timestamps every step description it is given."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = []

    def task(self, description: str, total: float | None = None, unit: str = "it") -> _StepClock:
        return self

    def message(self, text: str) -> None:
        return None

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        if description is not None:
            self.marks.append((time.perf_counter(), description))

    def advance(self, amount: float = 1.0) -> None:
        return None

    def close(self) -> None:
        return None


def _phase(description: str) -> str:
    for prefix, name in (
        ("parsing", "parse"),
        ("validating", "validate"),
        ("splitting", "split"),
        ("counting", "count"),
        ("encoding", "encode"),
        ("writing", "write"),
    ):
        if description.startswith(prefix):
            return name
    return "other"


def child_ours(path: Path, out_dir: Path, memory_limit: str | None, threads: int | None) -> dict[str, Any]:
    from optembed.data.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig(fmt="criteo", seed=SPLIT_SEED, split=SPLIT, min_count=MIN_COUNT, threads=threads)
    if memory_limit:
        cfg.memory_limit = memory_limit
    clock = _StepClock()
    start = time.perf_counter()
    result = preprocess(path, cfg, out_dir, clock)
    end = time.perf_counter()
    phases: dict[str, float] = {}
    marks = [(start, "setup"), *clock.marks]
    for (t0, desc), (t1, _) in zip(marks, [*marks[1:], (end, "end")]):
        key = "setup" if desc == "setup" else _phase(desc)
        phases[key] = phases.get(key, 0.0) + (t1 - t0)
    return {
        "rows": result.metrics["rows"],
        "total_cardinality": result.metrics["total_cardinality"],
        "seconds_inside": end - start,
        "phases": {k: round(v, 2) for k, v in phases.items()},
    }


# --------------------------------------------------------------------------- child: pandas


def child_pandas(path: Path, out_dir: Path) -> dict[str, Any]:
    """The reference approach, in ordinary pandas: everything in memory, one column at a time."""
    import numpy as np
    import pandas as pd

    clock = {"start": time.perf_counter()}
    df = pd.read_table(path, header=None, names=["label", *INT_COLS, *CAT_COLS])
    clock["read"] = time.perf_counter()

    # Criteo's integer transform: v > 2 -> floor(ln(v)^2), else v; NaN (missing) stays NaN.
    for c in INT_COLS:
        v = df[c]
        df[c] = v.mask(v > 2, np.floor(np.log(v.where(v > 2)) ** 2))
    clock["transform"] = time.perf_counter()

    # Vocabulary per field: 0 = OOV (count < MIN_COUNT), 1 = missing, 2.. = kept values by count.
    vocabs: dict[str, dict[Any, int]] = {}
    for c in INT_COLS + CAT_COLS:
        counts = df[c].value_counts()
        kept = counts[counts >= MIN_COUNT]
        vocabs[c] = {value: i for i, value in enumerate(kept.index, start=2)}
    clock["count"] = time.perf_counter()

    for c in INT_COLS + CAT_COLS:
        ids = df[c].map(vocabs[c]).fillna(0)
        df[c] = ids.where(df[c].notna(), 1).astype("int32")
    clock["map"] = time.perf_counter()

    n = len(df)
    n_train, n_val = round(n * SPLIT[0]), round(n * SPLIT[1])
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    for name, idx in parts.items():
        df.iloc[idx].to_parquet(out_dir / f"{name}.parquet", index=False)
    pd.to_pickle(vocabs, out_dir / "vocab.pkl")
    clock["write"] = time.perf_counter()

    names = list(clock)
    phases = {b: round(clock[b] - clock[a], 2) for a, b in zip(names, names[1:])}
    return {
        "rows": n,
        "total_cardinality": sum(2 + len(v) for v in vocabs.values()),
        "seconds_inside": clock["write"] - clock["start"],
        "phases": phases,
    }


# --------------------------------------------------------------------------- child: polars


def child_polars(path: Path, out_dir: Path) -> dict[str, Any]:
    """The same work as ours, written as a polars user would: a typed multi-threaded read, the
    integer transform, a seeded hash split of the row positions with exact 8:1:1 sizes, counts on
    the train split (min count 2, ids by decreasing count, ties by value), every split encoded
    (``replace_strict`` against each vocabulary) and written as zstd Parquet, one vocabulary file
    per field."""
    import polars as pl

    fields = INT_COLS + CAT_COLS
    clock = {"start": time.perf_counter()}
    schema = {"label": pl.Int8, **dict.fromkeys(INT_COLS, pl.Float64), **dict.fromkeys(CAT_COLS, pl.String)}
    ints = pl.col(INT_COLS)
    df = (
        pl.scan_csv(path, separator="\t", has_header=False, schema=schema, quote_char=None)
        .with_columns(pl.when(ints > 2).then((ints.log() ** 2).floor()).otherwise(ints).name.keep())
        .with_columns(pl.int_range(pl.len(), dtype=pl.UInt64).hash(SPLIT_SEED).alias("_key"))
        .collect()
    )
    clock["read"] = time.perf_counter()

    n = df.height
    n_train, n_val = round(n * SPLIT[0]), round(n * SPLIT[1])
    keys = df["_key"].sort()
    cut_train, cut_val = keys[n_train - 1], keys[n_train + n_val - 1]
    key = pl.col("_key")
    df = df.with_columns(
        pl.when(key <= cut_train).then(0).when(key <= cut_val).then(1).otherwise(2).cast(pl.Int8).alias("split")
    ).drop("_key")
    clock["split"] = time.perf_counter()

    train = df.lazy().filter(pl.col("split") == 0)
    vocabs = pl.collect_all(
        [
            train.group_by(c)
            .len("count")
            .filter(pl.col(c).is_not_null() & (pl.col("count") >= MIN_COUNT))
            .sort(["count", c], descending=[True, False])
            .select(pl.col(c).alias("value"), (pl.int_range(pl.len(), dtype=pl.Int32) + 2).alias("id"), "count")
            for c in fields
        ]
    )
    (out_dir / "vocab").mkdir(parents=True, exist_ok=True)
    for c, vocab in zip(fields, vocabs, strict=True):
        vocab.write_parquet(out_dir / "vocab" / f"{c}.parquet")
    clock["count"] = time.perf_counter()

    encoded = df.lazy().select(
        "label",
        "split",
        *[
            pl.when(pl.col(c).is_null())
            .then(pl.lit(1, pl.Int32))
            .otherwise(pl.col(c).replace_strict(v["value"], v["id"], default=0, return_dtype=pl.Int32))
            .alias(c)
            for c, v in zip(fields, vocabs, strict=True)
        ],
    ).collect()  # lazy: polars evaluates the 39 columns in parallel (3x faster than an eager select)
    clock["encode"] = time.perf_counter()
    for split_id, name in enumerate(("train", "val", "test")):
        part = encoded.filter(pl.col("split") == split_id).drop("split")
        part.write_parquet(out_dir / f"{name}.parquet", compression="zstd")
    clock["write"] = time.perf_counter()

    names = list(clock)
    phases = {b: round(clock[b] - clock[a], 2) for a, b in zip(names, names[1:])}
    return {
        "rows": n,
        "total_cardinality": sum(2 + v.height for v in vocabs),
        "seconds_inside": clock["write"] - clock["start"],
        "phases": phases,
    }


# --------------------------------------------------------------------------- parent: running children


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _status(pid: int | str, key: str) -> int:
    """A memory line of /proc/PID/status (VmRSS, VmHWM) in bytes; 0 when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_child(cmd: list[str], run_dir: Path, mem_limit: int, min_free: int, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` and reap it with ``wait4``: wall seconds, CPU seconds, peak RSS of this child only.

    Peak RSS is the child's own ``VmHWM`` (the high-water mark of its post-exec address space),
    which it reports as it finishes and which the watchdog also samples; ``ru_maxrss`` from
    ``wait4`` is kept as a cross-check (Linux seeds it with the parent's RSS at fork). A watchdog kills the child when its RSS passes ``mem_limit`` or the machine's available
    memory drops under ``min_free``, so a run that would exhaust memory is reported, not fatal.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    out_file, err_file = run_dir / "stdout.txt", run_dir / "stderr.txt"
    killed: str | None = None
    hwm = 0
    load_before = os.getloadavg()[0]
    with out_file.open("wb") as out, err_file.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _status(proc.pid, "VmHWM"))
            if killed is None:
                rss, avail = _status(proc.pid, "VmRSS"), _mem_available()
                if rss > mem_limit:
                    killed = f"RSS {rss / MB:,.0f} MB passed the {mem_limit / MB:,.0f} MB limit"
                elif avail is not None and avail < min_free:
                    killed = f"machine memory ran low ({avail / MB:,.0f} MB available) at RSS {rss / MB:,.0f} MB"
                elif time.perf_counter() - start > timeout:
                    killed = f"timeout after {timeout:.0f} s"
                if killed:
                    os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.05)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": hwm / MB,
        "ru_maxrss_mb": usage.ru_maxrss * 1024 / MB,  # ru_maxrss is in KiB on Linux
        "returncode": proc.returncode,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    if killed:
        result["error"] = "out of memory" if "memory" in killed or "RSS" in killed else "timeout"
        result["detail"] = killed
    elif proc.returncode != 0:
        tail = err_file.read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit code {proc.returncode}"
        result["detail"] = " | ".join(tail)
    else:
        lines = out_file.read_text().strip().splitlines()
        result.update(json.loads(lines[-1]) if lines else {})
        result["peak_rss_mb"] = max(hwm, result.pop("vm_hwm", 0)) / MB
    return result


def warm_cache(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


def ensure_data(out: Path, rows: int, seed: int) -> Path:
    path = out / f"criteo_{rows}_seed{seed}.txt"
    done = Path(str(path) + ".truth.json")
    if path.exists() and done.exists():
        print(f"  data: cached {path} ({path.stat().st_size / MB:,.0f} MB)", flush=True)
        return path
    start = time.perf_counter()
    tmp = out / f".tmp_{path.name}"
    code = "import sys; from optembed.data.synth import generate; generate(sys.argv[1], int(sys.argv[2]), fmt='criteo', seed=int(sys.argv[3]))"
    subprocess.run([sys.executable, "-c", code, str(tmp), str(rows), str(seed)], check=True, cwd=ROOT)
    Path(str(tmp) + ".truth.json").replace(done)
    tmp.replace(path)
    print(f"  data: generated {path} ({path.stat().st_size / MB:,.0f} MB) in {time.perf_counter() - start:.1f} s", flush=True)
    return path


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        ram = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    versions = {"python": platform.python_version()}
    for mod in ("duckdb", "pandas", "polars", "pyarrow", "numpy"):
        try:
            versions[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            versions[mod] = "not installed"
    return {"nproc": os.cpu_count(), "ram_gib": ram / 2**30, "cpu": cpu, "versions": versions}


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _cells(run: dict[str, Any] | None, rows: int) -> list[str]:
    if run is None:
        return ["skipped", "—", "—"]
    if "error" in run:
        return [run["error"], "—", f"{run['peak_rss_mb']:,.0f}" + (" (killed)" if run["error"] == "out of memory" else "")]
    return [f"{run['wall_s']:.1f}", f"{rows / run['wall_s']:,.0f}", f"{run['peak_rss_mb']:,.0f}"]


def _ok(run: dict[str, Any] | None) -> bool:
    return run is not None and "error" not in run


def speedup(entry: dict[str, Any]) -> float | None:
    ours, ref = entry.get("ours"), entry.get("pandas")
    if _ok(ours) and _ok(ref):
        return ref["wall_s"] / ours["wall_s"]
    return None


def table_lines(entries: list[dict[str, Any]]) -> list[str]:
    head = (
        "| rows | file MB | ours s | ours rows/s | ours peak RSS MB | pandas s | pandas rows/s "
        "| pandas peak RSS MB | speedup |"
    )
    lines = [head, "|" + "---:|" * 9]
    for e in entries:
        sp = speedup(e)
        if sp is not None:
            sp_text = f"{sp:.1f}x"
        elif _ok(e.get("ours")) and e.get("pandas") and e["pandas"].get("error") == "out of memory":
            sp_text = "pandas OOM"
        else:
            sp_text = "—"
        row = [f"{e['rows']:,}", f"{e['file_mb']:,.0f}", *_cells(e.get("ours"), e["rows"]), *_cells(e.get("pandas"), e["rows"]), sp_text]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(entries: list[dict[str, Any]]) -> list[str]:
    out = []
    speeds = [(e["rows"], speedup(e)) for e in entries if speedup(e) is not None]
    oom = [e["rows"] for e in entries if _ok(e.get("ours")) and (e.get("pandas") or {}).get("error") == "out of memory"]
    if speeds:
        worst = min(s for _, s in speeds)
        verdict = "PASS" if worst >= TARGET_SPEEDUP else "FAIL"
        detail = ", ".join(f"{r:,}: {s:.1f}x" for r, s in speeds)
        if oom:
            detail += "; pandas ran out of memory at " + ", ".join(f"{r:,}" for r in oom)
        out.append(f"- **{verdict}** — ours >= {TARGET_SPEEDUP:g}x the pandas rows/s at every size both completed ({detail}).")
    else:
        out.append(f"- **NOT MEASURED** — ours >= {TARGET_SPEEDUP:g}x the pandas rows/s (no size where both completed).")
    big = next((e for e in entries if e["rows"] == TARGET_RSS_ROWS), None)
    if big is not None and _ok(big.get("ours")):
        rss = big["ours"]["peak_rss_mb"]
        verdict = "PASS" if rss < TARGET_RSS_MB else "FAIL"
        out.append(f"- **{verdict}** — our peak RSS < 3 GB at 10M rows ({rss:,.0f} MB).")
    else:
        out.append("- **NOT MEASURED** — our peak RSS < 3 GB at 10M rows (no successful 10M run).")
    have = {e["rows"] for e in entries if _ok(e.get("ours"))}
    if all(r in have for r in SCALING_ROWS):
        by = {e["rows"]: e for e in entries}
        rates = [r / by[r]["ours"]["wall_s"] for r in SCALING_ROWS]
        out.append(
            "- **PASS** — scaling shown at 1M/3M/10M: ours "
            + " / ".join(f"{x:,.0f}" for x in rates)
            + f" rows/s (10M rate = {rates[2] / rates[0]:.2f}x the 1M rate; "
            + f"time grows {by[10_000_000]['ours']['wall_s'] / by[1_000_000]['ours']['wall_s']:.1f}x for 10x rows)."
        )
    else:
        missing = ", ".join(f"{r:,}" for r in SCALING_ROWS if r not in have)
        out.append(f"- **FAIL** — scaling at 1M/3M/10M not shown (no successful run of ours at {missing}).")
    return out


def phase_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for who, label in (("ours", "Ours (DuckDB), seconds per step"), ("pandas", "Pandas reference, seconds per step")):
        runs = [(e["rows"], e[who]) for e in entries if _ok(e.get(who)) and e[who].get("phases")]
        if not runs:
            continue
        keys: list[str] = []
        for _, r in runs:
            keys += [k for k in r["phases"] if k not in keys]
        lines += [f"{label}:", "", "| rows | " + " | ".join(keys) + " | CPU s / wall s |", "|" + "---:|" * (len(keys) + 2)]
        for rows, r in runs:
            cells = [_num(r["phases"].get(k), ".1f") for k in keys]
            lines.append(f"| {rows:,} | " + " | ".join(cells) + f" | {r['cpu_s'] / r['wall_s']:.2f} |")
        lines.append("")
    return lines


def render(entries: list[dict[str, Any]], info: dict[str, Any], meta: dict[str, Any]) -> str:
    v = info["versions"]
    lines = [
        SECTION,
        "",
        "`optembed preprocess --format criteo` (DuckDB, out of core) against a plain-pandas in-memory reference, "
        "on synthetic Criteo data from `optembed synth`.",
        "",
        f"- Machine: {info['nproc']} CPU cores ({info['cpu']}), {info['ram_gib']:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}. The machine is shared: other processes may have been using "
        f"CPU during the runs (1-minute load average {meta['load_start']:.2f} at the start, "
        f"{meta['load_end']:.2f} at the end), so treat timings as indicative, not exact.",
        f"- Date: {meta['date']}",
        f"- Versions: python {v['python']}, duckdb {v['duckdb']}, pandas {v['pandas']}, pyarrow {v['pyarrow']}, numpy {v['numpy']}",
        f"- Command: `{meta['command']}`",
        f"- Ours: {meta['ours_desc']}",
        "",
        *table_lines(entries),
        "",
        "Seconds are wall-clock seconds of the whole child process (interpreter start and imports included); "
        "rows/s = rows / seconds; peak RSS is the child's own `VmHWM` high-water mark; MB = 10^6 bytes; "
        "speedup = pandas seconds / our seconds.",
        "",
        "Targets:",
        "",
        *targets(entries),
        "",
        *phase_lines(entries),
        "Method:",
        "",
        f"- Data: `optembed.data.synth.generate(path, rows, fmt='criteo', seed={meta['seed']})`, generated once per size and reused; "
        "the file is read once before each run so both tools start from a warm page cache.",
        "- Each run is a fresh Python process, reaped with `os.wait4`, so peak RSS (`VmHWM`, reported by the child at exit and sampled every 50 ms by the parent) and CPU time are per run.",
        f"- Ours: `optembed.data.preprocess.preprocess(path, PreprocessConfig(fmt='criteo'), out_dir)` "
        f"(min count {MIN_COUNT}, split 0.8/0.1/0.1, counting on the train split — the tool's default), "
        "writing train/val/test Parquet (zstd) and one vocabulary Parquet per field.",
        f"- Pandas: `read_table` of the whole file (header=None, default C parser and dtypes), "
        "integer transform `v > 2 -> floor(ln(v)^2)` with missing kept as its own id, per-column `value_counts`, "
        f"a dict vocabulary per column (min count {MIN_COUNT}: rare -> 0, missing -> 1, kept -> 2..), `Series.map`, "
        "a random 8:1:1 permutation split and `to_parquet` of the three splits (pyarrow, default compression); "
        "as in the reference scripts, values are counted over all rows before splitting.",
        f"- Memory guard: the pandas child is killed when its RSS passes {meta['mem_limit_gb']:g} GB or available "
        f"memory falls under {meta['min_free_gb']:g} GB, and is then reported as out of memory.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the ``## preprocess`` section of ``path`` by ``text``, keeping its ``###``
    subsections (recorded by hand, e.g. the comparison with polars) after the new text."""
    if path.exists():
        old = path.read_text()
        pattern = re.compile(rf"^{re.escape(SECTION)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
        found = pattern.search(old)
        if found:
            kept = re.search(r"^### ", found.group(0), re.M)
            extra = found.group(0)[kept.start() :].rstrip("\n") + "\n\n" if kept else ""
            new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n" + extra, old, count=1).rstrip("\n") + "\n"
        else:
            new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        new = "# Benchmarks\n\n" + text.rstrip("\n") + "\n"
    path.write_text(new)


def print_table(entries: list[dict[str, Any]]) -> None:
    print()
    for line in table_lines(entries):
        print(line)
    print()
    for line in targets(entries):
        print(line)
    print()
    for line in phase_lines(entries):
        print(line)


# --------------------------------------------------------------------------- main


def parse_sides(text: str | None) -> list[str]:
    if text is None:
        return ["ours", "pandas"]
    sides = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [side for side in sides if side not in SIDES]
    if unknown or not sides:
        raise SystemExit(f"--only takes a comma list of {', '.join(SIDES)}, got {text!r}")
    return list(dict.fromkeys(sides))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run of median wall seconds (a failed run counts as the slowest), with every run's wall
    seconds and peak RSS kept beside it."""
    if not runs:
        return None
    ranked = sorted(runs, key=lambda r: (1 if "error" in r else 0, r["wall_s"]))
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["repeats"] = [{"wall_s": round(r["wall_s"], 3), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                          "load_before": round(r["load_before"], 2), "error": r.get("error")} for r in runs]
    return chosen


def peer_ratio(entry: dict[str, Any], peer: str) -> float | None:
    """The peer's seconds over ours (above 1: ours is faster)."""
    ours, other = entry.get("ours"), entry.get(peer)
    if _ok(ours) and _ok(other):
        return other["wall_s"] / ours["wall_s"]
    return None


def parse_rows(text: str) -> list[int]:
    rows = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        mult = 1
        if part.endswith("m"):
            part, mult = part[:-1], 1_000_000
        elif part.endswith("k"):
            part, mult = part[:-1], 1_000
        rows.append(int(float(part) * mult))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000000,3000000,10000000", help="comma-separated sizes (1M, 500k also accepted)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/optembed-bench"), help="data cache and scratch folder")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the synthetic data")
    ap.add_argument("--skip-pandas-above", type=int, default=None, metavar="N", help="do not run pandas above N rows")
    ap.add_argument("--mem-limit-gb", type=float, default=20.0, help="kill a child whose RSS passes this (GB)")
    ap.add_argument("--min-free-gb", type=float, default=1.0, help="kill a child when available memory drops under this (GB)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill a child after this many seconds")
    ap.add_argument("--memory-limit", default=None, help="DuckDB memory_limit for ours (default: the tool's default)")
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads for ours (default: all cores)")
    ap.add_argument(
        "--only", default=None, metavar="SIDES",
        help=f"comma list of the sides to run, of {', '.join(SIDES)} (default: ours,pandas); e.g. ours,polars",
    )
    ap.add_argument(
        "--repeats", type=int, default=1, metavar="N",
        help="run the sides N times each, interleaved (ours, peer, ours, peer, ...), and report the median run",
    )
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="Markdown file to write the section into")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "FILE", "OUT_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        kind, file, out_dir = args.child[0], Path(args.child[1]), Path(args.child[2])
        out_dir.mkdir(parents=True, exist_ok=True)
        if kind == "ours":
            res = child_ours(file, out_dir, args.memory_limit, args.threads)
        elif kind == "polars":
            res = child_polars(file, out_dir)
        else:
            res = child_pandas(file, out_dir)
        res["vm_hwm"] = _status("self", "VmHWM")
        print(json.dumps(res))
        return 0

    sides = parse_sides(args.only)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    rows_list = parse_rows(args.rows)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/preprocess.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "load_start": os.getloadavg()[0],
        "mem_limit_gb": args.mem_limit_gb,
        "min_free_gb": args.min_free_gb,
        "ours_desc": "DuckDB memory_limit "
        + (args.memory_limit or "default (2GB)")
        + ", threads "
        + (str(args.threads) if args.threads else f"default ({os.cpu_count()})"),
    }
    print(f"machine: {info['nproc']} cores, {info['ram_gib']:.1f} GiB, {info['cpu']}; versions {info['versions']}", flush=True)
    mem_limit = int(args.mem_limit_gb * 1e9)
    min_free = int(args.min_free_gb * 1e9)
    entries: list[dict[str, Any]] = []
    for rows in rows_list:
        print(f"[{rows:,} rows]", flush=True)
        data = ensure_data(out, rows, args.seed)
        entry: dict[str, Any] = {"rows": rows, "file_mb": data.stat().st_size / MB}
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for repeat in range(args.repeats):
            for side in sides:
                if side == "pandas" and args.skip_pandas_above is not None and rows > args.skip_pandas_above:
                    if repeat == 0:
                        print(f"  pandas: skipped (--skip-pandas-above {args.skip_pandas_above:,})", flush=True)
                    continue
                run_dir = out / "runs" / f"{side}_{rows}"
                shutil.rmtree(run_dir, ignore_errors=True)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, str(data), str(run_dir / "output")]
                if side == "ours" and args.memory_limit:
                    cmd += ["--memory-limit", args.memory_limit]
                if side == "ours" and args.threads:
                    cmd += ["--threads", str(args.threads)]
                warm_cache(data)
                res = run_child(cmd, run_dir, mem_limit, min_free, args.timeout)
                runs[side].append(res)
                if "error" in res:
                    print(f"  {side}: {res['error']} after {res['wall_s']:.1f} s ({res.get('detail', '')})", flush=True)
                else:
                    print(
                        f"  {side}: {res['wall_s']:.1f} s, {rows / res['wall_s']:,.0f} rows/s, peak RSS {res['peak_rss_mb']:,.0f} MB, "
                        f"CPU {res['cpu_s']:.1f} s, load {res['load_before']:.2f}, phases {res.get('phases')}",
                        flush=True,
                    )
                shutil.rmtree(run_dir / "output", ignore_errors=True)  # keep stdout/stderr, drop the outputs
        for side in ("ours", "pandas", "polars"):
            if side in sides:
                entry[side] = median_run(runs[side])
        ratio = peer_ratio(entry, "polars")
        if ratio is not None:
            print(
                f"  median of {args.repeats}: ours {entry['ours']['wall_s']:.2f} s, polars {entry['polars']['wall_s']:.2f} s, "
                f"polars s / ours s = {ratio:.2f}",
                flush=True,
            )
        entries.append(entry)
        (out / "results.json").write_text(json.dumps({"info": info, "meta": meta, "entries": entries}, indent=2))
    meta["load_end"] = os.getloadavg()[0]
    (out / "results.json").write_text(json.dumps({"info": info, "meta": meta, "entries": entries}, indent=2))
    print_table(entries)
    if args.no_write:
        pass
    elif "ours" not in sides or "pandas" not in sides:
        print(f"not writing {args.results}: its '{SECTION}' table compares ours with pandas (see results.json)")
    else:
        write_section(args.results, render(entries, info, meta))
        print(f"wrote the '{SECTION}' section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
