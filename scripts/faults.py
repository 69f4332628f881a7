"""Fault matrix: run the ``optembed`` command on bad inputs, faults and damaged files.

    python3 scripts/faults.py [-k SUBSTRING ...] [--kind KIND] [--jobs N] [--list] [--keep]

A tiny chain (synthetic data -> preprocess -> supernet -> search -> retrain -> compress, built
once with the command line) is shared by every case; each case then runs the real command line
(``optembed_cli.main.main``, in a forked copy of this process that imported it once, or with
``--subprocess`` in a new interpreter) in a folder of its own with a private copy of that artifact
store. Cases are entries of :data:`CASES`, each a name, a class, a setup function that writes (or
damages) the files it needs, the command's arguments and a check; a *scenario* case instead runs
a short script of commands itself (kill, rerun, verify, ...). The classes:

- ``bad-input``: *handled* when the command exits with code 2, prints exactly one non-empty line
  on stderr, no traceback, and leaves no new artifact folder (nor any new file beside those the
  setup wrote);
- ``fault`` (``kill -9`` during a stage, two identical stages at once, a reader while a stage
  republishes, a full disk, ``--resume`` after a kill): *survived* when nothing half-written is
  published, ``optembed artifacts --verify`` passes and a rerun succeeds;
- ``corruption`` (flipped bytes, truncation, a swapped file, an edited manifest, for every file
  kind the tool reads): *detected* when the command that reads the file (``artifacts --verify``
  for a file no command reads) exits 2 with one line naming it;
- ``code`` (a pickle whose unpickling would create a marker file, planted in every torch file
  kind and in the resume checkpoints, with and without a manifest re-signed to match; a
  ``model.pt2`` graph whose expression creates it when deserialized, and the other planted
  bundle graphs of :mod:`faults_bundles`): every marker found afterwards is *code executed*.

The cases of ``export``, ``predict``, ``baseline``, ``--stream`` and ``--nproc`` (and of links and
killed republishes) are in ``scripts/faults_bundles.py``.

The last line sums up each class that has cases, e.g. ``bad inputs tried 100, handled 100;
faults tried 12, survived 12; corruption detected 41/41; code executed 0``; the exit status is 0
when every case passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

BIG = str(10**12)


@dataclass
class Fixture:
    """The shared inputs: the synthetic data file and an artifact store holding one artifact of
    each stage (by stage name -> fingerprint)."""

    root: Path
    data: Path
    store: Path
    ids: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    new_entries: list[str]  # artifact folders and files that appeared during the command


@dataclass
class Case:
    """One case. ``setup(work, fixture)`` writes (or damages) what the command reads in its own
    folder ``work`` (the command's working directory, holding a private copy of the store in
    ``work/artifacts``); ``args(work, fixture)`` gives the arguments after ``optembed``.
    ``expect`` must appear in the error line; ``check`` judges the result (by default
    :func:`handled`); ``skip`` returns a reason not to run the case here, or None. ``call``
    replaces the command line by another entry point taking the same arguments (a library
    reader). A ``scenario`` runs the whole case itself (several commands, kills, checks) and
    returns what went wrong, or None; ``args`` is then unused."""

    name: str
    args: Callable[[Path, Fixture], Sequence[str]] | None
    setup: Callable[[Path, Fixture], None] | None = None
    expect: str | None = None
    kind: str = "bad-input"
    check: Callable[[Result, Case], str | None] | None = None
    skip: Callable[[], str | None] | None = None
    call: Callable[[list[str]], None] | None = None
    scenario: Callable[[Scene], str | None] | None = None


@dataclass
class Tally:
    tried: int = 0
    passed: int = 0
    skipped: int = 0
    markers: int = 0  # marker files of planted payloads found after the cases of this class


# The classes of cases and how their summary reads.
CLASSES: dict[str, Callable[[Tally], str]] = {
    "bad-input": lambda t: f"bad inputs tried {t.tried}, handled {t.passed}",
    "fault": lambda t: f"faults tried {t.tried}, survived {t.passed}",
    "corruption": lambda t: f"corruption detected {t.passed}/{t.tried}",
    "code": lambda t: f"code executed {t.markers}",
}


def handled(result: Result, case: Case) -> str | None:
    """None when the command refused the input properly, else what went wrong."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if "Traceback" in result.stderr or "Traceback" in result.stdout:
        return "printed a traceback"
    if result.returncode != 2:
        return f"exit code {result.returncode}, expected 2"
    if len(lines) != 1:
        return f"{len(lines)} stderr lines, expected 1"
    if not lines[0].startswith("error:"):
        return "the stderr line does not start with 'error:'"
    if case.expect is not None and case.expect not in lines[0]:
        return f"the error line does not say {case.expect!r}"
    if result.new_entries:
        return f"left {', '.join(result.new_entries[:3])}"
    return None


# ----------------------------------------------------------------------------- setups


def write(name: str, text: str | bytes) -> Callable[[Path, Fixture], None]:
    def setup(work: Path, fx: Fixture) -> None:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return setup


def edit_data(name: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path, Fixture], None]:
    """A copy of the fixture's first 200 rows with ``edit`` applied to its lines."""

    def setup(work: Path, fx: Fixture) -> None:
        lines = fx.data.read_text().splitlines()[:200]
        (work / name).write_text("\n".join(edit(lines)) + "\n")

    return setup


def set_line(index: int, change: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        lines[index] = change(lines[index])
        return lines

    return edit


def unreadable(name: str) -> Callable[[Path, Fixture], None]:
    def setup(work: Path, fx: Fixture) -> None:
        path = work / name
        shutil.copy(fx.data, path)
        path.chmod(0)

    return setup


def toml(text: str) -> Callable[[Path, Fixture], None]:
    """``run.toml`` with ``text``, beside a copy of the data it names as ``data.txt``."""

    def setup(work: Path, fx: Fixture) -> None:
        shutil.copy(fx.data, work / "data.txt")
        (work / "run.toml").write_text(text)

    return setup


def as_root() -> str | None:
    return "root reads any file" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def cmd(*args: str) -> Callable[[Path, Fixture], Sequence[str]]:
    """Fixed arguments; ``{data}`` stands for the fixture's data file, ``{rows}`` for its first
    rows (what ``predict`` scores), ``{work}`` for the case's folder and ``{preprocess}`` (...)
    for the fixture's artifact of that stage."""

    def build(work: Path, fx: Fixture) -> list[str]:
        values = {"data": str(fx.data), "work": str(work), "rows": str(fx.root / ROWS_FILE), **fx.ids}
        return [a.format(**values) for a in args]

    return build


DATA_TOML = '[data]\npath = "data.txt"\n'
TINY = ("--embed-dim", "4", "--mlp", "8", "--epochs", "1", "--device", "cpu")

CASES: list[Case] = [
    # --- preprocess: the input file
    Case("preprocess missing file", cmd("preprocess", "missing.txt"), expect="not found"),
    Case("preprocess empty file", cmd("preprocess", "empty.txt"), write("empty.txt", ""), expect="empty"),
    Case("preprocess folder as input", cmd("preprocess", "{work}"), expect="folder"),
    Case("preprocess unreadable file", cmd("preprocess", "locked.txt"), unreadable("locked.txt"), skip=as_root),
    Case("preprocess binary file", cmd("preprocess", "bin.txt"), write("bin.txt", bytes(range(256)) * 40)),
    Case(
        "preprocess wrong column count",
        cmd("preprocess", "cols.txt"),
        edit_data("cols.txt", set_line(16, lambda line: line.rsplit("\t", 1)[0])),
        expect="columns",
    ),
    Case(
        "preprocess non-numeric integer value",
        cmd("preprocess", "nonnum.txt"),
        edit_data("nonnum.txt", set_line(3, lambda line: line.replace("\t", "\tabc", 1))),
        expect="non-numeric",
    ),
    Case(
        "preprocess label outside {0,1}",
        cmd("preprocess", "label.txt"),
        edit_data("label.txt", set_line(5, lambda line: "7" + line[1:])),
        expect="label",
    ),
    Case("preprocess too few rows", cmd("preprocess", "few.txt"), edit_data("few.txt", lambda lines: lines[:3])),
    Case("preprocess csv header only", cmd("preprocess", "h.csv", "-f", "csv"), write("h.csv", "label,a,b\n")),
    Case("preprocess csv unknown field", cmd("preprocess", "a.csv", "-f", "csv", "--fields", "a,nope"),
         write("a.csv", "label,a\n" + "1,x\n0,y\n" * 50), expect="nope"),
    Case("preprocess --split nan", cmd("preprocess", "{data}", "--split", "nan,0.1,0.1"), expect="finite"),
    Case("preprocess --split inf", cmd("preprocess", "{data}", "--split", "inf,0.1,0.1"), expect="finite"),
    Case("preprocess --split sum", cmd("preprocess", "{data}", "--split", "0.7,0.2,0.2"), expect="sum to 1"),
    Case("preprocess --split negative", cmd("preprocess", "{data}", "--split", "1.2,-0.1,-0.1"), expect="--split"),
    Case("preprocess --split syntax", cmd("preprocess", "{data}", "--split", "a,b"), expect="three numbers"),
    Case("preprocess --format unknown", cmd("preprocess", "{data}", "--format", "xml"), expect="unknown format"),
    Case("preprocess --min-count 0", cmd("preprocess", "{data}", "--min-count", "0"), expect="--min-count"),
    Case("preprocess --memory-limit", cmd("preprocess", "{data}", "--memory-limit", "lots"), expect="--memory-limit"),
    Case("preprocess --count-on", cmd("preprocess", "{data}", "--count-on", "both"), expect="--count-on"),
    Case("preprocess unknown option", cmd("preprocess", "{data}", "--bogus"), expect="--bogus"),
    Case("preprocess --seed not a number", cmd("preprocess", "{data}", "--seed", "x"), expect="--seed"),
    # --- supernet
    Case("supernet --lr nan", cmd("supernet", *TINY, "--lr", "nan"), expect="--lr must be a finite number"),
    Case("supernet --lr inf", cmd("supernet", *TINY, "--lr", "inf"), expect="--lr must be a finite number"),
    Case("supernet --lr negative", cmd("supernet", *TINY, "--lr", "-0.1"), expect="--lr must be positive"),
    Case("supernet --alpha nan", cmd("supernet", *TINY, "--alpha", "nan"), expect="--alpha"),
    Case("supernet --weight-decay inf", cmd("supernet", *TINY, "--weight-decay", "inf"), expect="--weight-decay"),
    Case("supernet --threshold-lr nan", cmd("supernet", *TINY, "--threshold-lr", "nan"), expect="--threshold-lr"),
    Case("supernet --embedding-lr nan", cmd("supernet", *TINY, "--embedding-lr", "nan"), expect="--embedding-lr"),
    Case("supernet --freq-lr-power inf", cmd("supernet", *TINY, "--freq-lr", "clip", "--freq-lr-power", "inf"),
         expect="--freq-lr-power"),
    Case("supernet --dropout nan", cmd("supernet", *TINY, "--dropout", "nan"), expect="dropout"),
    Case("supernet --dropout 1.5", cmd("supernet", *TINY, "--dropout", "1.5"), expect="dropout"),
    Case("supernet --batch-size absurd", cmd("supernet", *TINY, "--batch-size", BIG), expect="more than the"),
    Case("supernet --eval-batch-size absurd", cmd("supernet", *TINY, "--eval-batch-size", BIG), expect="more than the"),
    Case("supernet --embed-dim absurd", cmd("supernet", "--embed-dim", str(10**9), "--mlp", "8", "--device", "cpu"),
         expect="more than the"),
    Case("supernet --mlp absurd", cmd("supernet", "--embed-dim", "4", "--mlp", str(10**9), "--device", "cpu"),
         expect="more than the"),
    Case("supernet --batch-size -1", cmd("supernet", *TINY, "--batch-size", "-1"), expect="batch sizes"),  # 0 is auto
    Case("supernet --epochs 0", cmd("supernet", "--embed-dim", "4", "--mlp", "8", "--epochs", "0"), expect="--epochs"),
    Case("supernet --mlp syntax", cmd("supernet", "--mlp", "a,b"), expect="--mlp"),
    Case("supernet --model unknown", cmd("supernet", "--model", "xyz"), expect="xyz"),
    Case("supernet --mode unknown", cmd("supernet", *TINY, "--mode", "xyz"), expect="xyz"),
    Case("supernet --device unknown", cmd("supernet", *TINY, "--device", "tpu"), expect="tpu"),
    Case("supernet --from missing", cmd("supernet", *TINY, "--from", "ffffffff"), expect="ffffffff"),
    Case("supernet --lr not a number", cmd("supernet", "--lr", "fast"), expect="--lr"),
    # --- search
    Case("search --population absurd", cmd("search", "--population", str(10**11), "--topk", "2"), expect="more than the"),
    Case("search --generations absurd", cmd("search", "--generations", str(10**11)), expect="more than the"),
    Case("search --mutation-prob nan", cmd("search", "--mutation-prob", "nan"), expect="--mutation-prob"),
    Case("search --target-sparsity nan", cmd("search", "--target-sparsity", "nan"), expect="--target-sparsity"),
    Case("search --target-sparsity 1", cmd("search", "--target-sparsity", "1"), expect="--target-sparsity"),
    Case("search --topk 0", cmd("search", "--topk", "0"), expect="--topk"),
    Case("search --population 0", cmd("search", "--population", "0"), expect="--population"),
    Case("search --from a preprocess artifact", cmd("search", "--from", "{preprocess}"), expect="expected"),
    Case("search --block negative", cmd("search", "--block", "-1"), expect="--block"),
    Case("search --amp unknown", cmd("search", "--amp", "fp8"), expect="fp8"),
    # --- retrain
    Case("retrain --lr nan", cmd("retrain", "--epochs", "1", "--lr", "nan"), expect="--lr"),
    Case("retrain --batch-size absurd", cmd("retrain", "--epochs", "1", "--batch-size", BIG), expect="more than the"),
    Case("retrain --init unknown", cmd("retrain", "--epochs", "1", "--init", "xyz"), expect="xyz"),
    # --- compress
    Case("compress --finetune-lr nan", cmd("compress", "--finetune-lr", "nan"), expect="--finetune-lr"),
    Case("compress --quantizer-lr inf", cmd("compress", "--quantizer-lr", "inf"), expect="--quantizer-lr"),
    Case("compress --temperature nan", cmd("compress", "--temperature", "nan"), expect="--temperature"),
    Case("compress --codebook-share nan", cmd("compress", "--codebook-share", "nan"), expect="--codebook-share"),
    Case("compress --balance-weight -inf", cmd("compress", "--balance-weight", "-inf"), expect="--balance-weight"),
    Case("compress --codebook 1", cmd("compress", "--codebook", "1"), expect="--codebook"),
    Case("compress --batch-size absurd", cmd("compress", "--batch-size", BIG, "--min-rows", "1", "--device", "cpu"),
         expect="more than the"),
    # --- evaluate
    Case("evaluate --eval-batch-size absurd", cmd("evaluate", "--eval-batch-size", BIG, "--device", "cpu"),
         expect="more than the"),
    Case("evaluate --eval-batch-size 0", cmd("evaluate", "--eval-batch-size", "0"), expect="--eval-batch-size"),
    # --- synth
    Case("synth into a missing folder", cmd("synth", "nowhere/out.txt", "--rows", "10"), expect="does not exist"),
    Case("synth onto an existing folder", cmd("synth", "{work}", "--rows", "10"), expect="folder"),
    Case("synth --rows 0", cmd("synth", "out.txt", "--rows", "0"), expect="rows"),
    Case("synth --rows absurd", cmd("synth", "out.txt", "--rows", str(10**15)), expect="disk"),
    Case("synth --format unknown", cmd("synth", "out.txt", "--format", "xml"), expect="xml"),
    Case("demo --rows 0", cmd("demo", "--rows", "0"), expect="--rows"),
    Case("demo --epochs 0", cmd("demo", "--epochs", "0"), expect="--epochs"),
    # --- run with a TOML configuration
    Case("run missing configuration", cmd("run", "missing.toml"), expect="not found"),
    Case("run configuration is a folder", cmd("run", "{work}"), expect="folder"),
    Case("run binary configuration", cmd("run", "bin.toml"), write("bin.toml", b"\x00\x01\xff\xfe" * 64), expect="TOML"),
    Case("run huge configuration", cmd("run", "big.toml"), write("big.toml", "# " + "x" * (2 << 20) + "\n"), expect="too many"),
    Case("run NUL bytes in configuration", cmd("run", "nul.toml"), write("nul.toml", "[data]\x00\n"), expect="TOML"),
    Case("run invalid TOML", cmd("run", "run.toml"), toml("[data\npath = 1\n"), expect="invalid TOML"),
    Case("run path = 42", cmd("run", "run.toml"), toml("[data]\npath = 42\n"), expect="path = 42"),
    Case("run no path", cmd("run", "run.toml"), toml("[data]\nformat = 'criteo'\n"), expect="path"),
    Case("run missing data file", cmd("run", "run.toml"), toml('[data]\npath = "missing.txt"\n'), expect="not found"),
    Case("run unknown section", cmd("run", "run.toml"), toml(DATA_TOML + "[extra]\na = 1\n"), expect="extra"),
    Case("run [data] split type", cmd("run", "run.toml"), toml(DATA_TOML + 'split = "abc"\n'), expect="split"),
    Case("run [data] split nan", cmd("run", "run.toml"), toml(DATA_TOML + "split = [nan, 0.1, 0.1]\n"), expect="finite"),
    Case("run [model] mlp_dims type", cmd("run", "run.toml"), toml(DATA_TOML + '[model]\nmlp_dims = [8, "x"]\n'),
         expect="mlp_dims"),
    Case("run [model] dropout nan", cmd("run", "run.toml"), toml(DATA_TOML + "[model]\ndropout = nan\n"), expect="dropout"),
    Case("run [supernet] lr nan", cmd("run", "run.toml"), toml(DATA_TOML + "[supernet]\nlr = nan\n"), expect="--lr"),
    Case("run [supernet] lr type", cmd("run", "run.toml"), toml(DATA_TOML + '[supernet]\nlr = "fast"\n'), expect="lr"),
    Case("run [retrain] alpha inf", cmd("run", "run.toml"), toml(DATA_TOML + "[retrain]\nalpha = inf\n"), expect="--alpha"),
    Case("run [supernet] batch_size absurd", cmd("run", "run.toml"), toml(DATA_TOML + f"[supernet]\nbatch_size = {BIG}\n"),
         expect="more than the"),
    Case("run [search] population absurd", cmd("run", "run.toml"),
         toml(DATA_TOML + f"[search]\npopulation = {10**11}\ntopk = 2\n"), expect="more than the"),
    Case("run [search] mutation_prob nan", cmd("run", "run.toml"), toml(DATA_TOML + "[search]\nmutation_prob = nan\n"),
         expect="--mutation-prob"),
    Case("run [compress] finetune_lr nan", cmd("run", "run.toml"),
         toml(DATA_TOML + '[compress]\nvariants = ["optembed"]\nfinetune_lr = nan\n'), expect="--finetune-lr"),
    Case("run [compress] variants type", cmd("run", "run.toml"), toml(DATA_TOML + '[compress]\nvariants = "optembed"\n'),
         expect="variants"),
    Case("run [run] variants type", cmd("run", "run.toml"), toml(DATA_TOML + '[run]\nvariants = "optembed"\n'),
         expect="variants"),
    Case("run [run] plot type", cmd("run", "run.toml"), toml(DATA_TOML + '[run]\nplot = "yes"\n'), expect="plot"),
    Case("run [search] block negative", cmd("run", "run.toml"), toml(DATA_TOML + "[search]\nblock = -1\n"), expect="--block"),
    Case("run [run] device unknown", cmd("run", "run.toml"), toml(DATA_TOML + '[run]\ndevice = "tpu"\n'), expect="tpu"),
    Case("run --data missing", cmd("run", "--data", "missing.txt"), expect="not found"),
]


# ----------------------------------------------------------------------------- the fixture chain

def _importable(*names: str) -> bool:
    try:
        for name in names:
            __import__(name)
    except ImportError:
        return False
    return True


EXPORT_FORMAT = "all" if _importable("onnx", "onnxruntime") else "pt2"
ROWS_FILE = "rows.txt"  # the fixture's first rows, beside it: what predict scores
BUNDLE_DIR = "bundle"  # the fixture's export copied out with --out (a bundle folder)

# The commands that build the fixture; ``{preprocess}`` (...) stand for the ids built before. A case
# that reruns one with the same arguments finds that artifact cached (or, with --force, republishes it).
SUPERNET = ("supernet", "--from", "{preprocess}", "--embed-dim", "4", "--mlp", "8", "--device", "cpu")
RETRAIN = ("retrain", "--from", "{search}", "--device", "cpu")
COMPRESS = ("compress", "--from", "{retrain}", "--codebook", "8", "--min-rows", "1", "--device", "cpu")
CHAIN: dict[str, tuple[str, ...]] = {
    "preprocess": ("preprocess", "{data}"),
    "supernet": (*SUPERNET, "--epochs", "1", "--batch-size", "512", "--patience", "1"),
    "search": ("search", "--from", "{supernet}", "--population", "6", "--generations", "1", "--topk", "3", "--device", "cpu"),
    "retrain": (*RETRAIN, "--epochs", "1", "--batch-size", "512"),
    "compress": (*COMPRESS, "--quantizer-steps", "2", "--kmeans-iters", "1", "--finetune-epochs", "1"),
    "export": ("export", "--from", "{retrain}", "--format", EXPORT_FORMAT),
}
# Built and removed again: a case plants a resume checkpoint where ``--resume`` of these looks for it.
RESUMABLE: dict[str, tuple[str, ...]] = {
    "supernet-resume": (*CHAIN["supernet"], "--seed", "77"),
    "retrain-resume": (*CHAIN["retrain"], "--seed", "77"),
}
# Long enough (a few seconds on a CPU) to be killed while training; seeds not used elsewhere.
LONG: dict[str, tuple[str, ...]] = {
    "supernet": (*SUPERNET, "--epochs", "2", "--batch-size", "64", "--patience", "0", "--seed", "21"),
    "search": ("search", "--from", "{supernet}", "--population", "16", "--generations", "6", "--topk", "4",
               "--seed", "21", "--device", "cpu"),
    "retrain": (*RETRAIN, "--epochs", "2", "--batch-size", "64", "--patience", "0", "--seed", "21"),
    "compress": (*COMPRESS, "--quantizer-steps", "200", "--kmeans-iters", "3", "--finetune-epochs", "2", "--seed", "21"),
}
MARKER = "CODE-RAN.marker"  # what a planted payload creates (in the reading command's folder)


class SkipCase(Exception):
    """Raised by a setup or scenario: the case cannot run here (the message says why)."""


# ----------------------------------------------------------------------------- fault scenarios


@dataclass
class Proc:
    handle: _Forked | _Spawned
    out: Path
    err: Path
    started: float

    def poll(self) -> int | None:
        return self.handle.poll()

    def kill(self) -> None:
        if self.handle.poll() is None:
            self.handle.kill()
        while self.handle.poll() is None:
            time.sleep(0.01)


@dataclass
class Scene:
    """What a scenario works with: its folder (holding a private copy of the store in
    ``artifacts``) and a way to run ``optembed`` there, as a case does."""

    work: Path
    fx: Fixture
    spawn: bool
    timeout: float
    log: list[str] = field(default_factory=list)
    note: str = ""
    procs: list[Proc] = field(default_factory=list)

    @property
    def store(self) -> Path:
        return self.work / "artifacts"

    def fill(self, args: Sequence[str]) -> list[str]:
        values = {"data": str(self.fx.data), "work": str(self.work), "rows": str(self.fx.root / ROWS_FILE), **self.fx.ids}
        return [a.format(**values) for a in args]

    def start(self, args: Sequence[str], store: Path | None = None, call: Callable[[list[str]], None] | None = None) -> Proc:
        n = len(self.procs)
        out, err = self.work.parent / f"{self.work.name}.{n}.stdout", self.work.parent / f"{self.work.name}.{n}.stderr"
        env = _case_env(store or self.store)
        handle = (_Spawned if self.spawn else _Forked)(self.fill(args), self.work, env, out, err, call)
        proc = Proc(handle, out, err, time.perf_counter())
        self.procs.append(proc)
        return proc

    def wait(self, proc: Proc, args: Sequence[str]) -> Result:
        code = proc.poll()
        while code is None:
            if time.perf_counter() - proc.started > self.timeout:
                proc.kill()
                self.log.append(f"$ optembed {' '.join(args)}: timed out after {self.timeout:.0f} s")
                return Result(124, "", f"timed out after {self.timeout:.0f} s", self.timeout, [])
            time.sleep(0.02)
            code = proc.poll()
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        result = Result(code, read(proc.out), read(proc.err), time.perf_counter() - proc.started, [])
        first = next((ln for ln in result.stderr.splitlines() if ln.strip()), "")
        self.log.append(f"$ optembed {' '.join(args)} -> {code}" + (f": {first}" if first else ""))
        return result

    def cli(self, args: Sequence[str], store: Path | None = None) -> Result:
        return self.wait(self.start(args, store), args)

    def kill_when(self, proc: Proc, ready: Callable[[], bool], what: str) -> str | None:
        """SIGKILL ``proc`` as soon as ``ready()``; a problem when it ended (or hung) before."""
        while not ready():
            if proc.poll() is not None:
                return f"the command ended (exit {proc.poll()}) before {what}; nothing was killed"
            if time.perf_counter() - proc.started > self.timeout:
                proc.kill()
                return f"never saw {what}"
            time.sleep(0.005)
        if proc.poll() is not None:
            return f"the command ended before it could be killed ({what})"
        proc.kill()
        self.log.append(f"killed with SIGKILL after {time.perf_counter() - proc.started:.1f} s ({what})")
        return None


def published(store: Path, stage: str) -> set[str]:
    folder = store / stage
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()


def leftovers(store: Path) -> list[str]:
    """Temporary folders and partial files left in the store."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".tmp"))


def resume_folders(store: Path, stage: str) -> list[Path]:
    return sorted((store / stage).glob(".resume-*")) if (store / stage).is_dir() else []


def tmp_folder(stage_dir: Path, holding: str | None = None) -> Callable[[], bool]:
    """Ready when a temporary artifact folder exists in ``stage_dir`` (holding that file, if given)."""

    def ready() -> bool:
        if not stage_dir.is_dir():
            return False
        for p in stage_dir.glob(".tmp-*"):
            if holding is None or (p / holding).is_file():
                return True
        return False

    return ready


def checkpoint_written(stage_dir: Path) -> Callable[[], bool]:
    return lambda: any(stage_dir.glob(".resume-*/checkpoint.pt"))


def first_line(result: Result) -> str:
    return next((ln for ln in result.stderr.splitlines() if ln.strip()), "")


def succeeded(result: Result, what: str) -> str | None:
    if result.returncode != 0:
        return f"{what} exited {result.returncode}: {first_line(result) or '(no stderr)'}"
    if "Traceback" in result.stderr:
        return f"{what} printed a traceback"
    return None


def verified(scene: Scene, store: Path | None = None) -> str | None:
    """``optembed artifacts --verify`` passes and warns of nothing."""
    result = scene.cli(["artifacts", "--verify"], store)
    return succeeded(result, "artifacts --verify") or (f"artifacts --verify: {first_line(result)}" if first_line(result) else None)


def store_clean(store: Path, stage: str) -> str | None:
    left = leftovers(store)
    if left:
        return f"left {', '.join(left[:3])}"
    resumes = [p.name for p in resume_folders(store, stage) if any(p.iterdir())]
    return f"left the resume checkpoint {resumes[0]}" if resumes else None


def rerun(scene: Scene, stage: str, args: Sequence[str], before: set[str], expect_new: int) -> str | None:
    """Rerun ``args``: it builds (``done:``), publishes ``expect_new`` new artifacts, leaves nothing
    temporary, and the store verifies."""
    result = scene.cli(args)
    problem = succeeded(result, "the rerun")
    if problem:
        return problem
    if "done:" not in result.stdout:
        return "the rerun did not build the artifact"
    new = published(scene.store, stage) - before
    if len(new) != expect_new:
        return f"the rerun published {len(new)} new {stage} artifacts, expected {expect_new}"
    return store_clean(scene.store, stage) or verified(scene)


def killed_during(stage: str, args: Sequence[str], holding: str | None = None) -> Callable[[Scene], str | None]:
    """``kill -9`` once the stage writes its temporary folder (holding ``holding``): nothing is
    published, the store verifies, and a rerun builds the artifact."""

    def scenario(scene: Scene) -> str | None:
        before = published(scene.store, stage)
        proc = scene.start(args)
        what = f"a temporary {stage} folder" + (f" holding {holding}" if holding else "")
        problem = scene.kill_when(proc, tmp_folder(scene.store / stage, holding), what)
        if problem:
            return problem
        if published(scene.store, stage) != before:
            return "the killed run published an artifact"
        problem = verified(scene)
        if problem:
            return f"after the kill: {problem}"
        return rerun(scene, stage, args, before, 0 if "--force" in args else 1)

    return scenario


def resumed_after_kill(stage: str, args: Sequence[str]) -> Callable[[Scene], str | None]:
    """``kill -9`` once an epoch's resume checkpoint is written; ``--resume`` continues from it
    and publishes."""

    def scenario(scene: Scene) -> str | None:
        before = published(scene.store, stage)
        proc = scene.start(args)
        problem = scene.kill_when(proc, checkpoint_written(scene.store / stage), "the first resume checkpoint")
        if problem:
            return problem
        if published(scene.store, stage) != before:
            return "the killed run published an artifact"
        problem = verified(scene)
        if problem:
            return f"after the kill: {problem}"
        result = scene.cli([*args, "--resume"])
        problem = succeeded(result, "--resume")
        if problem:
            return problem
        said = re.search(r"resuming after epoch (\d+)", result.stdout + result.stderr)
        if said is None:
            return "--resume did not continue from the checkpoint (no 'resuming after epoch')"
        scene.note = said.group(0)
        if len(published(scene.store, stage) - before) != 1:
            return "--resume did not publish the artifact"
        return store_clean(scene.store, stage) or verified(scene)

    return scenario


def twice_at_once(stage: str, args: Sequence[str]) -> Callable[[Scene], str | None]:
    """Two identical runs started together: both succeed (or one finds the other's artifact
    cached), exactly one artifact, nothing temporary left, the store verifies."""

    def scenario(scene: Scene) -> str | None:
        before = published(scene.store, stage)
        procs = [scene.start(args), scene.start(args)]
        results = [scene.wait(p, args) for p in procs]
        for i, result in enumerate(results):
            problem = succeeded(result, f"run {i + 1}")
            if problem:
                return problem
            if "done:" not in result.stdout and "cached:" not in result.stdout:
                return f"run {i + 1} neither built nor found the artifact"
        new = published(scene.store, stage) - before
        if len(new) != 1:
            return f"{len(new)} new {stage} artifacts, expected 1"
        scene.note = ", ".join("built" if "done:" in r.stdout else "cached" for r in results)
        return store_clean(scene.store, stage) or verified(scene)

    return scenario


def read_while_republished(stage: str, args: Sequence[str], rounds: int = 2) -> Callable[[Scene], str | None]:
    """``optembed artifacts --verify`` in a loop while ``args`` (with --force) republishes the
    same artifact ``rounds`` times: every read succeeds and sees nothing broken."""

    def scenario(scene: Scene) -> str | None:
        reads = 0
        for _ in range(rounds):
            writer = scene.start([*args, "--force"])
            while writer.poll() is None:
                problem = verified(scene)
                reads += 1
                if problem:
                    writer.kill()
                    return f"read {reads} during the republish: {problem}"
            problem = succeeded(scene.wait(writer, args), "the republish")
            if problem:
                return problem
        scene.note = f"{reads} reads during {rounds} republishes"
        return store_clean(scene.store, stage) or verified(scene)

    return scenario


_TMPFS: list[str | None] = []


def tmpfs_unavailable() -> str | None:
    """Why no tmpfs can be mounted here (None when one can); tried once."""
    if not _TMPFS:
        reason: str | None = None
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            reason = "mounting a tmpfs needs root"
        elif shutil.which("mount") is None:
            reason = "no mount command"
        else:
            probe = Path(tempfile.mkdtemp(prefix="optembed-tmpfs-"))
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True, text=True)
            if done.returncode == 0:
                subprocess.run(["umount", str(probe)], capture_output=True)
            else:
                reason = f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
            probe.rmdir()
        _TMPFS.append(reason)
    return _TMPFS[0]


def on_full_disk(stage: str, args: Sequence[str], copy: Sequence[str], free_kib: int = 48) -> Callable[[Scene], str | None]:
    """The stage writes into a store on a small tmpfs (holding the artifacts of ``copy``) with
    only ``free_kib`` KiB left: one line, exit 2, nothing published, no temporary files; once
    space is freed a rerun succeeds."""

    def scenario(scene: Scene) -> str | None:
        mnt = scene.work / "tiny"
        mnt.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SkipCase(f"mount -t tmpfs failed: {done.stderr.strip()}")
        try:
            store = mnt / "artifacts"
            for name in copy:
                src = scene.store / name / scene.fx.ids[name]
                shutil.copytree(src, store / name / src.name)
            stat = os.statvfs(mnt)
            filler = mnt / "filler"
            filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free_kib * 1024))
            before = published(store, stage)
            result = scene.cli(args, store)
            lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
            if result.returncode != 2 or len(lines) != 1:
                return f"exit {result.returncode} with {len(lines)} stderr lines, expected 2 and one: {first_line(result)}"
            if not re.search("(no space left on device|file write failed|disk quota exceeded).* while writing", lines[0]):
                return f"the error line does not say the disk is full: {lines[0]}"
            if published(store, stage) != before:
                return "an artifact was published on the full disk"
            left = leftovers(store)
            if left:
                return f"left {', '.join(left[:3])}"
            scene.note = lines[0][:100]
            filler.unlink()
            problem = succeeded(scene.cli(args, store), "the rerun after freeing space")
            return problem or verified(scene, store)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    return scenario


FAULTS: list[Case] = [
    Case("kill -9 during supernet", None, kind="fault", scenario=killed_during("supernet", LONG["supernet"], "init.pt")),
    Case("kill -9 during search", None, kind="fault", scenario=killed_during("search", LONG["search"])),
    Case("kill -9 during retrain", None, kind="fault", scenario=killed_during("retrain", LONG["retrain"])),
    Case("kill -9 during compress", None, kind="fault", scenario=killed_during("compress", LONG["compress"])),
    Case("kill -9 during a supernet --force republish", None, kind="fault",
         scenario=killed_during("supernet", (*CHAIN["supernet"], "--force"), "init.pt")),
    Case("supernet --resume after kill -9", None, kind="fault", scenario=resumed_after_kill("supernet", LONG["supernet"])),
    Case("retrain --resume after kill -9", None, kind="fault", scenario=resumed_after_kill("retrain", LONG["retrain"])),
    Case("two identical supernet runs at once", None, kind="fault",
         scenario=twice_at_once("supernet", (*SUPERNET, "--epochs", "2", "--batch-size", "256", "--seed", "12"))),
    Case("two identical search runs at once", None, kind="fault",
         scenario=twice_at_once("search", ("search", "--from", "{supernet}", "--population", "8", "--generations", "2",
                                           "--topk", "3", "--seed", "12", "--device", "cpu"))),
    Case("reader while supernet --force republishes", None, kind="fault",
         scenario=read_while_republished("supernet", CHAIN["supernet"])),
    Case("full disk during supernet", None, kind="fault", skip=tmpfs_unavailable,
         scenario=on_full_disk("supernet", CHAIN["supernet"][:-2] + ("--patience", "2", "--seed", "5"), ["preprocess"])),
    Case("full disk during preprocess", None, kind="fault", skip=tmpfs_unavailable,
         scenario=on_full_disk("preprocess", ("preprocess", "{data}", "--seed", "5"), [], free_kib=24)),
]


# ----------------------------------------------------------------------------- damaged files


def artifact(work: Path, fx: Fixture, stage: str) -> Path:
    return work / "artifacts" / stage / fx.ids[stage]


def target(work: Path, fx: Fixture, stage: str, rel: str) -> Path:
    """The file ``rel`` (a glob pattern: its first match) of the case's copy of ``stage``."""
    folder = artifact(work, fx, stage)
    found = sorted(folder.glob(rel))
    if not found:
        raise SkipCase(f"the {stage} artifact has no {rel}")
    return found[0]


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 8, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_metric(path: Path) -> None:
    """Change one metric of a manifest, as a hand edit would (the hash is left as it was)."""
    data = json.loads(path.read_text())
    metrics = data["metrics"]
    key = next(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    metrics[key] = metrics[key] + 1
    path.write_text(json.dumps(data, indent=2) + "\n")


def damage(stage: str, rel: str, how: Callable[[Path], None]) -> Callable[[Path, Fixture], None]:
    def setup(work: Path, fx: Fixture) -> None:
        how(target(work, fx, stage, rel))

    return setup


def swap(stage: str, rel: str, src_stage: str, src_rel: str) -> Callable[[Path, Fixture], None]:
    """Copy another file (``src_rel`` of ``src_stage``) over ``rel`` of ``stage``."""

    def setup(work: Path, fx: Fixture) -> None:
        shutil.copyfile(target(work, fx, src_stage, src_rel), target(work, fx, stage, rel))

    return setup



# (stage, file, expected in the error line, the command that reads the file)
SEARCH_AGAIN = ("search", "--from", "{supernet}", "--population", "4", "--generations", "1", "--topk", "2", "--device", "cpu", "--force")
RETRAIN_AGAIN = (*CHAIN["retrain"], "--force")
COMPRESS_AGAIN = (*CHAIN["compress"], "--force")
NEW_SUPERNET = (*SUPERNET, "--epochs", "1", "--batch-size", "512", "--seed", "5")
READERS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("supernet", "model.pt", "model.pt", SEARCH_AGAIN),
    ("supernet", "init.pt", "init.pt", (*RETRAIN_AGAIN[:-1], "--init", "rewind")),
    ("supernet", "row_mask.pt", "row_mask.pt", SEARCH_AGAIN),
    ("search", "best.json", "best.json", RETRAIN_AGAIN),
    ("search", "candidates.parquet", "candidates.parquet",
     ("evaluate", "--from", "{retrain}", "--plot", "--no-latency", "--device", "cpu")),
    ("search", "row_mask.pt", "row_mask.pt", RETRAIN_AGAIN),
    ("retrain", "compact.pt", "compact.pt", COMPRESS_AGAIN),
    ("retrain", "model.pt", "model.pt", ("artifacts", "--verify")),  # read by the library only
    ("compress", "model.pt", "model.pt", ("evaluate", "--from", "{compress}", "--no-latency", "--device", "cpu")),
    ("preprocess", "train.parquet", "train.parquet", NEW_SUPERNET),
    ("preprocess", "val.parquet", "val.parquet", NEW_SUPERNET),
    ("preprocess", "test.parquet", "test.parquet", ("evaluate", "--from", "{retrain}", "--no-latency", "--device", "cpu")),
    ("preprocess", "vocab/*.parquet", "vocab/", (*NEW_SUPERNET, "--freq-lr", "clip")),
]
MANIFEST_READERS: dict[str, tuple[str, ...]] = {
    "preprocess": NEW_SUPERNET,
    "supernet": SEARCH_AGAIN,
    "search": RETRAIN_AGAIN,
    "retrain": COMPRESS_AGAIN,
    "compress": ("evaluate", "--from", "{compress}", "--no-latency", "--device", "cpu"),
}
SWAPS: list[tuple[str, str, str, str, str, tuple[str, ...]]] = [
    # (stage, file, from stage, from file, expected, reader)
    ("supernet", "model.pt", "supernet", "init.pt", "model.pt", SEARCH_AGAIN),
    ("search", "row_mask.pt", "supernet", "row_mask.pt", "row_mask.pt", RETRAIN_AGAIN),
    ("retrain", "compact.pt", "retrain", "model.pt", "compact.pt", COMPRESS_AGAIN),
    ("compress", "model.pt", "retrain", "model.pt", "model.pt",
     ("evaluate", "--from", "{compress}", "--no-latency", "--device", "cpu")),
    ("preprocess", "train.parquet", "preprocess", "val.parquet", "train.parquet", NEW_SUPERNET),
    ("preprocess", "vocab/*.parquet", "preprocess", "test.parquet", "vocab/", (*NEW_SUPERNET, "--freq-lr", "clip")),
]

CORRUPTION: list[Case] = [
    *(Case(f"{how} {stage} {rel}", cmd(*reader), damage(stage, rel, fn), expect=expect, kind="corruption")
      for stage, rel, expect, reader in READERS for how, fn in (("flipped bytes in", flip), ("truncated", truncate))),
    *(Case(f"{src_stage} {src} copied over {stage} {rel}", cmd(*reader), swap(stage, rel, src_stage, src), expect=expect,
           kind="corruption") for stage, rel, src_stage, src, expect, reader in SWAPS),
    *(Case(f"edited metric in the {stage} manifest.json", cmd(*reader), damage(stage, "manifest.json", edit_metric),
           expect="manifest.json", kind="corruption") for stage, reader in MANIFEST_READERS.items()),
    *(Case(f"{how} the supernet manifest.json", cmd(*SEARCH_AGAIN), damage("supernet", "manifest.json", fn),
           expect="manifest.json", kind="corruption") for how, fn in (("flipped bytes in", flip), ("truncated", truncate))),
    Case("supernet manifest.json missing", cmd(*SEARCH_AGAIN), damage("supernet", "manifest.json", lambda p: p.unlink()),
         expect="manifest.json", kind="corruption"),
]


# ----------------------------------------------------------------------------- planted code


class _Payload:
    """Unpickling this creates :data:`MARKER` in the current folder (``open(MARKER, 'w')``)."""

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (MARKER, "w"))


def write_payloads(folder: Path) -> None:
    """``evil-zip.pt`` (``torch.save``) and ``evil-raw.pt`` (a bare pickle) of a model-like dict
    holding a :class:`_Payload`; both are first shown to create the marker when loaded unsafely."""
    import pickle

    import torch

    evil = {"format": "optembed-model", "version": 1, "mask": _Payload()}
    torch.save(evil, folder / "evil-zip.pt")
    (folder / "evil-raw.pt").write_bytes(pickle.dumps(evil, protocol=2))
    live = folder / "live"
    live.mkdir()
    here = os.getcwd()
    os.chdir(live)
    try:
        for name, load in (("evil-raw.pt", lambda p: pickle.loads(p.read_bytes())),
                           ("evil-zip.pt", lambda p: torch.load(p, weights_only=False))):
            load(folder / name)
            if not (live / MARKER).is_file():
                raise SystemExit(f"the payload {name} does not create its marker when loaded unsafely")
            (live / MARKER).unlink()
    finally:
        os.chdir(here)
        shutil.rmtree(live)


def resign(folder: Path, rel: str) -> None:
    """Record ``rel``'s current size and hash in the manifest and re-hash the manifest, so that
    the integrity checks pass and only the loader stands between the file and the code."""
    from optembed.checksum import file_sha256
    from pipelines.store import manifest_digest

    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["files"][rel] = {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
    data["manifest_sha256"] = manifest_digest(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def plant(stage: str, rel: str, fmt: str, signed: bool) -> Callable[[Path, Fixture], None]:
    def setup(work: Path, fx: Fixture) -> None:
        path = target(work, fx, stage, rel)
        shutil.copyfile(fx.root / f"evil-{fmt}.pt", path)
        if signed:
            resign(artifact(work, fx, stage), rel)

    return setup


def plant_checkpoint(name: str, fmt: str) -> Callable[[Path, Fixture], None]:
    """The payload as the resume checkpoint of the (removed) artifact ``name`` of the fixture."""

    def setup(work: Path, fx: Fixture) -> None:
        folder = work / "artifacts" / name.split("-")[0] / f".resume-{fx.ids[name]}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fx.root / f"evil-{fmt}.pt", folder / "checkpoint.pt")

    return setup


def no_code(result: Result, case: Case) -> str | None:
    if any(Path(entry).name == MARKER for entry in result.new_entries):
        return "the planted payload ran"
    return handled(result, case)


def library_load_model(args: list[str]) -> None:
    """What a user's script does with a retrained model.pt: ``optembed.models.checkpoint.load_model``."""
    from optembed.errors import OptembedError
    from optembed.models.checkpoint import load_model

    try:
        load_model(Path(args[0]))
    except OptembedError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        raise SystemExit(2) from None


# (stage, torch file, the command that reads it)
TORCH_READERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("supernet", "model.pt", SEARCH_AGAIN),
    ("supernet", "init.pt", (*RETRAIN_AGAIN[:-1], "--init", "rewind")),
    ("supernet", "row_mask.pt", SEARCH_AGAIN),
    ("search", "row_mask.pt", RETRAIN_AGAIN),
    ("retrain", "compact.pt", COMPRESS_AGAIN),
    ("retrain", "compact.pt", ("evaluate", "--from", "{retrain}", "--no-latency", "--device", "cpu")),
    ("compress", "model.pt", ("evaluate", "--from", "{compress}", "--no-latency", "--device", "cpu")),
]
VARIANTS = (("zip", False), ("zip", True), ("raw", True))  # re-signed: past the hash checks, to the loader


def _variant(fmt: str, signed: bool) -> str:
    return f"{'torch.save' if fmt == 'zip' else 'raw pickle'}{', manifest re-signed' if signed else ''}"


CODE: list[Case] = [
    *(Case(f"payload in {stage} {rel} read by {reader[0]} ({_variant(fmt, signed)})", cmd(*reader),
           plant(stage, rel, fmt, signed), expect=rel, kind="code", check=no_code)
      for stage, rel, reader in TORCH_READERS for fmt, signed in VARIANTS),
    *(Case(f"payload in retrain model.pt read by the library ({_variant(fmt, signed)})",
           cmd("{work}/artifacts/retrain/{retrain}/model.pt"), plant("retrain", "model.pt", fmt, signed),
           expect="model.pt", kind="code", check=no_code, call=library_load_model)
      for fmt, signed in VARIANTS),
    *(Case(f"payload as the {name.split('-')[0]} resume checkpoint ({_variant(fmt, False)})",
           cmd(*RESUMABLE[name], "--resume"), plant_checkpoint(name, fmt), expect="checkpoint.pt", kind="code", check=no_code)
      for name in RESUMABLE for fmt in ("zip", "raw")),
]

import faults_bundles  # noqa: E402  (export, predict, baseline, --stream, --nproc: given this module's helpers)
from faults_bundles import republish_killed_after_exchange, republish_killed_between_renames  # noqa: E402,F401  (child entry points)

_BUNDLES = faults_bundles.cases(sys.modules[__name__])
CASES += _BUNDLES["bad-input"] + FAULTS + _BUNDLES["fault"] + CORRUPTION + _BUNDLES["corruption"] + CODE + _BUNDLES["code"]


# ----------------------------------------------------------------------------- running


def build_fixture(root: Path, rows: int = 3000) -> Fixture:
    """With the command line: synthetic data (``rows`` rows) -> preprocess -> supernet -> search
    -> retrain -> compress, export (:data:`CHAIN`), the export copied out as a bundle folder
    (:data:`BUNDLE_DIR`), the :data:`RESUMABLE` artifacts built and removed again, and the
    planted payloads (:func:`write_payloads`)."""
    os.environ["OPTEMBED_NO_PROGRESS"] = "1"
    os.environ.pop("OPTEMBED_DEBUG", None)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "synth.txt"
    store = root / "artifacts"
    os.environ["OPTEMBED_ARTIFACTS"] = str(store)
    fx = Fixture(root, data, store)
    _cli_in_process(["synth", str(data), "--rows", str(rows)])
    for stage, args in CHAIN.items():
        fx.ids[stage] = _built(fx, stage, args)
    for name, args in RESUMABLE.items():
        fx.ids[name] = _built(fx, name.split("-")[0], args)
        _cli_in_process(["rm", fx.ids[name]])
    _cli_in_process([a.format(**fx.ids) for a in CHAIN["export"]] + ["--out", str(root / BUNDLE_DIR)])
    (root / ROWS_FILE).write_text("\n".join(data.read_text().splitlines()[:60]) + "\n")
    write_payloads(root)
    return fx


def _cli_in_process(args: list[str]) -> None:
    from optembed_cli.main import main as cli_main

    try:
        cli_main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise SystemExit(f"building the fixture: optembed {' '.join(args)} failed ({exc.code})") from None


def _built(fx: Fixture, stage: str, args: Sequence[str]) -> str:
    """Run one command of the chain; the id of the artifact it published."""
    before = published(fx.store, stage)
    values = {"data": str(fx.data), **fx.ids}
    _cli_in_process([a.format(**values) for a in args])
    new = published(fx.store, stage) - before
    if len(new) != 1:
        raise SystemExit(f"building the fixture: {stage} published {len(new)} artifacts")
    return new.pop()


def build_fixture_apart(root: Path, rows: int = 3000) -> Fixture:
    """:func:`build_fixture` in a child interpreter: this process then has run no torch work
    (no thread pools), so it can fork a child per case safely."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); import faults; "
        "fx = faults.build_fixture(Path(sys.argv[1]), int(sys.argv[3])); print('FIXTURE ' + json.dumps(fx.ids))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root), str(Path(__file__).resolve().parent), str(rows)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith("FIXTURE ")]
    if proc.returncode != 0 or not said:
        raise SystemExit(f"could not build the fixture chain:\n{proc.stderr[-4000:]}")
    ids = json.loads(said[-1][len("FIXTURE "):])
    return Fixture(root, root / "synth.txt", root / "artifacts", ids)


def snapshot(work: Path) -> set[str]:
    """Every file and folder under ``work``, except that within its artifact store only the
    artifact folders (``artifacts/<stage>/<name>``, temporary ones included) count."""
    seen: set[str] = set()
    for path in work.rglob("*"):
        rel = path.relative_to(work)
        if rel.parts[0] == "artifacts" and len(rel.parts) != 3:
            continue
        seen.add(str(rel))
    return seen


class _Forked:
    """``optembed ARGS`` run by a forked copy of this process (the CLI already imported): the
    same code path as ``python -m optembed_cli`` without an interpreter start per case. ``call``
    replaces the command line's entry point."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path,
        call: Callable[[list[str]], None] | None = None,
    ) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                for fd, path in ((1, out), (2, err)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
                sys.argv = ["optembed", *args]
                from optembed_cli.main import main as cli_main

                try:
                    (call or cli_main)(args)
                    code = 0
                except SystemExit as exc:
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # what the interpreter would print for an uncaught error
                    traceback.print_exc()
                    code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


class _Spawned:
    """``python -m optembed_cli ARGS`` (or ``call`` of this module) in a new interpreter."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path,
        call: Callable[[list[str]], None] | None = None,
    ) -> None:
        if call is None:
            argv = [sys.executable, "-m", "optembed_cli", *args]
        else:
            code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import faults; faults.{call.__name__}(sys.argv[1:])"
            argv = [sys.executable, "-c", code, *args]
        with out.open("wb") as fo, err.open("wb") as fe:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=fo, stderr=fe)

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        self.proc.kill()


@dataclass
class _Run:
    case: Case
    work: Path
    before: set[str]
    handle: _Forked | _Spawned
    out: Path
    err: Path
    started: float


def _case_env(store: Path) -> dict[str, str]:
    env = {**os.environ, "OPTEMBED_ARTIFACTS": str(store), "OPTEMBED_NO_PROGRESS": "1", "PYTHONPATH": _pythonpath()}
    env.pop("OPTEMBED_DEBUG", None)
    return env


def _slug(case: Case) -> str:
    return "".join(c if c.isalnum() else "-" for c in case.name)


def prepare(case: Case, fx: Fixture, base: Path) -> Path | str:
    """The case's folder with its private copy of the store, set up; or why the case is skipped."""
    reason = case.skip() if case.skip else None
    if reason:
        return reason
    work = base / _slug(case)
    work.mkdir(parents=True)
    shutil.copytree(fx.store, work / "artifacts")
    if case.setup is not None:
        try:
            case.setup(work, fx)
        except SkipCase as exc:
            return str(exc)
    return work


def start_case(case: Case, fx: Fixture, base: Path, spawn: bool) -> _Run | str:
    """Set the case up and start its command; a skipped case gives the reason instead."""
    work = prepare(case, fx, base)
    if isinstance(work, str):
        return work
    assert case.args is not None
    args = list(case.args(work, fx))
    before = snapshot(work)
    out, err = base / f"{work.name}.stdout", base / f"{work.name}.stderr"
    handle = (_Spawned if spawn else _Forked)(args, work, _case_env(work / "artifacts"), out, err, case.call)
    return _Run(case, work, before, handle, out, err, time.perf_counter())


def finish(run: _Run, code: int) -> tuple[str | None, Result]:
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
    result = Result(code, read(run.out), read(run.err), time.perf_counter() - run.started,
                    sorted(snapshot(run.work) - run.before))
    return (run.case.check or handled)(result, run.case), result


def run_scenario(case: Case, fx: Fixture, base: Path, spawn: bool, timeout: float) -> tuple[str | None, Result | None, Path | None]:
    """Run a scenario case; ``(problem, result, work)``, result None (and problem 'skip: why')
    when it is skipped. The result's stderr is the scenario's log, its stdout its note."""
    work = prepare(case, fx, base)
    if isinstance(work, str):
        return f"skip: {work}", None, None
    assert case.scenario is not None
    scene = Scene(work, fx, spawn, timeout)
    started = time.perf_counter()
    try:
        problem = case.scenario(scene)
    except SkipCase as exc:
        return f"skip: {exc}", None, None
    except Exception as exc:  # a bug of the scenario: reported as the case's failure
        problem = f"the scenario failed: {type(exc).__name__}: {exc}"
    finally:
        for proc in scene.procs:
            proc.kill()
    return problem, Result(0, scene.note, "\n".join(scene.log), time.perf_counter() - started, []), work


def run_all(
    cases: list[Case], fx: Fixture, base: Path, jobs: int, spawn: bool, timeout: float
) -> Iterator[tuple[Case, str | None, Result | None, Path | None]]:
    """Yield ``(case, problem, result, work)`` as cases end, at most ``jobs`` single commands at
    once, then the scenarios one by one (they time their kills); a skipped case has ``result``
    None and ``problem`` 'skip: why'."""
    waiting = [c for c in cases if c.scenario is None]
    running: list[_Run] = []
    while waiting or running:
        while waiting and len(running) < jobs:
            case = waiting.pop(0)
            started = start_case(case, fx, base, spawn)
            if isinstance(started, str):
                yield case, f"skip: {started}", None, None
            else:
                running.append(started)
        time.sleep(0.02)
        for run in list(running):
            code = run.handle.poll()
            if code is None and time.perf_counter() - run.started > timeout:
                run.handle.kill()
                while code is None:
                    time.sleep(0.01)
                    code = run.handle.poll()
                run.err.write_text(run.err.read_text(errors="replace") + f"\ntimed out after {timeout:.0f} s\n")
            if code is not None:
                running.remove(run)
                yield run.case, *finish(run, code), run.work
    for case in cases:
        if case.scenario is not None:
            yield case, *run_scenario(case, fx, base, spawn, timeout)


def _pythonpath() -> str:
    current = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{current}" if current else str(ROOT)


def _restore_permissions(folder: Path) -> None:
    for path in folder.rglob("*"):
        if not path.is_symlink():
            try:
                path.chmod(0o700 if path.is_dir() else 0o600)
            except OSError:
                pass


def _unmount_all(folder: Path) -> None:
    """Unmount what a case left mounted under ``folder`` (an interrupted full-disk case)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        parts = line.split()
        if len(parts) > 1 and parts[1].startswith(str(folder) + "/"):
            subprocess.run(["umount", "-l", parts[1]], capture_output=True)


def summary(tallies: dict[str, Tally]) -> str:
    """One line: each class that has cases, in the order of :data:`CLASSES`."""
    parts = []
    for kind, fmt in CLASSES.items():
        if kind in tallies:
            tally = tallies[kind]
            parts.append(fmt(tally) + (f" ({tally.skipped} skipped)" if tally.skipped else ""))
    return "; ".join(parts)


def run_matrix(
    cases: list[Case], base: Path, jobs: int = 2, spawn: bool = False, timeout: float = 300.0, rows: int = 3000,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Tally], list[str]]:
    """Build the fixture under ``base`` and run ``cases``; the tally of each class and one line
    per failed case (``name: problem``)."""
    started = time.perf_counter()
    echo(f"building the fixture chain in {base} ...")
    fx = build_fixture_apart(base / "fixture", rows)
    if not spawn:
        import optembed_cli.main  # noqa: F401  (imported once, before the first fork)
    echo(f"fixture ready in {time.perf_counter() - started:.1f} s; {len(cases)} cases")
    tallies: dict[str, Tally] = {}
    failures: list[str] = []
    cases_dir = base / "cases"
    cases_dir.mkdir()
    for case, problem, result, work in run_all(cases, fx, cases_dir, max(1, jobs), spawn, timeout):
        tally = tallies.setdefault(case.kind, Tally())
        if result is None:
            tally.skipped += 1
            echo(f"SKIP  {case.name} ({(problem or '')[6:]})")
            continue
        tally.tried += 1
        tally.markers += len(list(work.rglob(MARKER))) if work is not None else 0
        line = result.stdout.strip() if case.scenario is not None else first_line(result)
        if problem is None:
            tally.passed += 1
            echo(f"ok    {case.name} ({result.seconds:.1f} s)" + (f": {line}" if line else ""))
        else:
            failures.append(f"{case.name}: {problem}")
            echo(f"FAIL  {case.name} ({result.seconds:.1f} s): {problem}")
            for text in (result.stderr.strip().splitlines() or ["(no stderr)"])[-5:]:
                echo(f"        {text}")
    echo(f"total {time.perf_counter() - started:.0f} s")
    return tallies, failures


def select(cases: list[Case], match: Sequence[str] | None = None, kind: str | None = None) -> list[Case]:
    """The cases whose name holds any of ``match`` (all without), of class ``kind`` (any without)."""
    return [
        c for c in cases
        if (not match or any(m.lower() in c.name.lower() for m in match)) and (kind is None or c.kind == kind)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-k", dest="match", action="append", help="only cases whose name holds this text (repeatable)")
    parser.add_argument("--kind", choices=list(CLASSES), help="only cases of this class")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="single-command cases run at once")
    parser.add_argument("--subprocess", action="store_true",
                        help="start a new interpreter per command (slower; by default a forked copy of this one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a command is killed")
    parser.add_argument("--rows", type=int, default=3000, help="rows of the synthetic data of the fixture")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    cases = select(CASES, args.match, args.kind)
    if args.list:
        for c in cases:
            print(f"{c.kind:10} {c.name}")
        return 0
    spawn = args.subprocess or not hasattr(os, "fork")
    base = Path(tempfile.mkdtemp(prefix="optembed-faults-"))
    try:
        tallies, failures = run_matrix(cases, base, args.jobs, spawn, args.timeout, args.rows,
                                       echo=lambda text: print(text, flush=True))
        if failures:
            print("failed: " + "; ".join(failures))
        print(summary(tallies))
        return 1 if failures else 0
    finally:
        _unmount_all(base)
        _restore_permissions(base)
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
