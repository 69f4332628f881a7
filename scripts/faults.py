"""Fault matrix: run the ``optembed`` command on bad inputs and check how each one is handled.

    python3 scripts/faults.py [-k SUBSTRING] [--jobs N] [--list] [--keep]

A tiny chain (synthetic data -> preprocess -> supernet -> search -> retrain) is built once; every
case then runs the real command line (``optembed_cli.main.main``, in a forked copy of this
process that imported it once, or with ``--subprocess`` in a new interpreter) in a folder of its
own with a private copy of that artifact store. Cases are entries of :data:`CASES`, each a name, a class, a setup
function that writes the files it needs, the command's arguments and a check. A bad input is
*handled* when the command exits with code 2, prints exactly one non-empty line on stderr, no
traceback, and leaves no new artifact folder (nor any new file beside those the setup wrote).

The last line sums up each class that has cases, e.g.
``bad inputs tried 70, handled 70``; the exit status is 0 when every case passed.
"""

from __future__ import annotations

import argparse
import json
import os
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    """One bad input. ``setup(work, fixture)`` writes what the command reads into its own folder
    ``work`` (the command's working directory); ``args(work, fixture)`` gives the arguments after
    ``optembed``. ``expect`` must appear in the error line; ``check`` judges the result (by
    default :func:`handled`); ``skip`` returns a reason not to run the case here, or None."""

    name: str
    args: Callable[[Path, Fixture], Sequence[str]]
    setup: Callable[[Path, Fixture], None] | None = None
    expect: str | None = None
    kind: str = "bad-input"
    check: Callable[[Result, Case], str | None] | None = None
    skip: Callable[[], str | None] | None = None


# The classes of cases and how their summary reads (tried, passed).
CLASSES: dict[str, Callable[[int, int], str]] = {
    "bad-input": lambda n, m: f"bad inputs tried {n}, handled {m}",
    "fault": lambda n, m: f"faults tried {n}, survived {m}",
    "corruption": lambda n, m: f"corruption detected {m}/{n}",
    "code": lambda n, m: f"code executed {n - m}",
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
    """Fixed arguments; ``{data}`` stands for the fixture's data file, ``{work}`` for the case's
    folder and ``{preprocess}`` (...) for the fixture's artifact of that stage."""

    def build(work: Path, fx: Fixture) -> list[str]:
        values = {"data": str(fx.data), "work": str(work), **fx.ids}
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
    Case("supernet --batch-size 0", cmd("supernet", *TINY, "--batch-size", "0"), expect="batch sizes"),
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
    Case("compress --batch-size absurd", cmd("compress", "--batch-size", BIG, "--device", "cpu"), expect="more than the"),
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


# ----------------------------------------------------------------------------- running


def build_fixture(root: Path) -> Fixture:
    """Synthetic data (3,000 rows) -> preprocess -> supernet -> search -> retrain."""
    os.environ.setdefault("OPTEMBED_NO_PROGRESS", "1")
    from optembed.data.preprocess import PreprocessConfig
    from optembed.data.synth import generate
    from optembed.evolution import EvolutionConfig
    from optembed.models.config import ModelConfig
    from optembed.training.config import TrainConfig
    from pipelines import preprocess, retrain, search, supernet
    from pipelines.store import Store

    root.mkdir(parents=True, exist_ok=True)
    data = root / "synth.txt"
    generate(data, 3000, fmt="criteo", seed=0)
    store = Store(root / "artifacts")
    pre = preprocess.run(preprocess.PreprocessStage(data, PreprocessConfig()), store)
    train = TrainConfig(epochs=1, batch_size=512, patience=1)
    model = ModelConfig("deepfm", embed_dim=4, mlp_dims=(8,))
    sn = supernet.run(supernet.SupernetStage(model=model, train=train, source=pre.fingerprint, device="cpu"), store)
    evolution = EvolutionConfig(population=6, generations=1, topk=3)
    found = search.run(search.SearchStage(source=sn.fingerprint, evolution=evolution, device="cpu"), store)
    rt = retrain.run(retrain.RetrainStage(source=found.fingerprint, train=train, device="cpu"), store)
    ids = {"preprocess": pre.fingerprint, "supernet": sn.fingerprint, "search": found.fingerprint, "retrain": rt.fingerprint}
    return Fixture(root, data, store.root, ids)


def build_fixture_apart(root: Path) -> Fixture:
    """:func:`build_fixture` in a child interpreter: this process then has run no torch work
    (no thread pools), so it can fork a child per case safely."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); import faults; "
        "fx = faults.build_fixture(Path(sys.argv[1])); print(json.dumps(fx.ids))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root), str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    if proc.returncode != 0:
        raise SystemExit(f"could not build the fixture chain:\n{proc.stderr}")
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
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
    same code path as ``python -m optembed_cli`` without an interpreter start per case."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path) -> None:
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
                    cli_main(args)
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
    """``python -m optembed_cli ARGS`` in a new interpreter."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], out: Path, err: Path) -> None:
        with out.open("wb") as fo, err.open("wb") as fe:
            self.proc = subprocess.Popen([sys.executable, "-m", "optembed_cli", *args], cwd=cwd, env=env, stdout=fo, stderr=fe)

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


def start_case(case: Case, fx: Fixture, base: Path, spawn: bool) -> _Run | str:
    """Set the case up and start its command; a skipped case gives the reason instead."""
    reason = case.skip() if case.skip else None
    if reason:
        return reason
    slug = "".join(c if c.isalnum() else "-" for c in case.name)
    work = base / slug
    work.mkdir(parents=True)
    store = work / "artifacts"
    shutil.copytree(fx.store, store)
    if case.setup is not None:
        case.setup(work, fx)
    args = list(case.args(work, fx))
    before = snapshot(work)
    env = {**os.environ, "OPTEMBED_ARTIFACTS": str(store), "OPTEMBED_NO_PROGRESS": "1", "PYTHONPATH": _pythonpath()}
    env.pop("OPTEMBED_DEBUG", None)
    out, err = base / f"{slug}.stdout", base / f"{slug}.stderr"
    handle = (_Spawned if spawn else _Forked)(args, work, env, out, err)
    return _Run(case, work, before, handle, out, err, time.perf_counter())


def finish(run: _Run, code: int) -> tuple[str | None, Result]:
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
    result = Result(code, read(run.out), read(run.err), time.perf_counter() - run.started,
                    sorted(snapshot(run.work) - run.before))
    return (run.case.check or handled)(result, run.case), result


def run_all(
    cases: list[Case], fx: Fixture, base: Path, jobs: int, spawn: bool, timeout: float
) -> Iterator[tuple[Case, str | None, Result | None]]:
    """Yield ``(case, problem, result)`` as cases end, at most ``jobs`` at once; a skipped case
    has ``result`` None and ``problem`` 'skip: why'."""
    waiting = list(cases)
    running: list[_Run] = []
    while waiting or running:
        while waiting and len(running) < jobs:
            case = waiting.pop(0)
            started = start_case(case, fx, base, spawn)
            if isinstance(started, str):
                yield case, f"skip: {started}", None
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
                yield run.case, *finish(run, code)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-k", dest="match", help="only cases whose name holds this text")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="cases run at once")
    parser.add_argument("--subprocess", action="store_true",
                        help="start a new interpreter per case (slower; by default a forked copy of this one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a case is killed")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.match or args.match.lower() in c.name.lower()]
    if args.list:
        for c in cases:
            print(f"{c.kind:10} {c.name}")
        return 0
    spawn = args.subprocess or not hasattr(os, "fork")
    base = Path(tempfile.mkdtemp(prefix="optembed-faults-"))
    try:
        started = time.perf_counter()
        print(f"building the fixture chain in {base} ...", flush=True)
        fx = build_fixture_apart(base / "fixture")
        if not spawn:
            import optembed_cli.main  # noqa: F401  (imported once, before the first fork)
        print(f"fixture ready in {time.perf_counter() - started:.1f} s; {len(cases)} cases", flush=True)
        tried: dict[str, int] = {}
        passed: dict[str, int] = {}
        failures: list[str] = []
        cases_dir = base / "cases"
        cases_dir.mkdir()
        for case, problem, result in run_all(cases, fx, cases_dir, max(1, args.jobs), spawn, args.timeout):
            if result is None:
                print(f"SKIP  {case.name} ({(problem or '')[6:]})", flush=True)
                continue
            tried[case.kind] = tried.get(case.kind, 0) + 1
            line = next((ln for ln in result.stderr.splitlines() if ln.strip()), "")
            if problem is None:
                passed[case.kind] = passed.get(case.kind, 0) + 1
                print(f"ok    {case.name} ({result.seconds:.1f} s): {line}", flush=True)
            else:
                failures.append(case.name)
                print(f"FAIL  {case.name} ({result.seconds:.1f} s): {problem}", flush=True)
                for text in (result.stderr.strip().splitlines() or ["(no stderr)"])[-5:]:
                    print(f"        {text}")
        print(f"total {time.perf_counter() - started:.0f} s")
        if failures:
            print("failed: " + "; ".join(failures))
        print("; ".join(fmt(tried[k], passed.get(k, 0)) for k, fmt in CLASSES.items() if k in tried))
        return 1 if failures else 0
    finally:
        _restore_permissions(base)
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
