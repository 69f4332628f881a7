"""The fault matrix's cases for bundles and the commands around them: ``export``, ``predict``,
``baseline``, ``--stream`` and ``--nproc``; planted bundle files; links; killed republishes.

:func:`cases` builds them from the matrix module (``scripts/faults.py``, passed in: its
:class:`Case`, setups and checks), by class:

- bad input to ``export`` (formats, ``--out`` a file, a full folder, inside the store),
  ``predict`` (data, output name, runtime, bundle, a huge line), ``baseline``, ``--nproc`` and
  ``--stream``;
- faults: ``kill -9`` between the two renames of a ``--force`` republish (the rename patched to
  kill the process exactly there) and after its exchange, at every rename (``strace`` injecting
  SIGKILL, when it can trace), during ``export``, ``predict``, ``baseline`` and ``supernet
  --stream``; a reader while ``export --force`` republishes; ``export --out`` at its own artifact
  folder; a full disk during ``predict``;
- corruption: damaged bundle files, an edited ``bundle.json``, links (symbolic and hard) in a
  bundle or an artifact, a truncated split read by ``--stream`` behind a re-signed manifest;
- planted code: ``model.pt2`` with a symbolic-shape expression that runs code when
  deserialized, or a node calling ``torch.os.system``; ``model.onnx`` reading weights from
  outside the bundle or using a custom operator domain; every hash re-signed to match.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import planted

SECRET = "secret"  # a file beside the case's bundle that no command may read or copy
Setup = Callable[[Path, Any], None]
Edit = Callable[[Path, Path], list[str]]  # (folder, work) -> the files to re-sign


# ----------------------------------------------------------------------------- child entry points


def republish_killed_between_renames(args: list[str]) -> None:
    """``optembed ARGS`` where a republish takes the two-rename path (no exchange) and the process
    is killed (SIGKILL) right after the old folder went aside, before the new one takes its name."""
    from pipelines import swap

    swap.exchange = lambda a, b: False
    real_replace = os.replace
    aside: list[Any] = []

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if aside:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, **kw)
        if Path(dst).name.startswith(swap.OLD_PREFIX):
            aside.append(dst)

    os.replace = replace  # type: ignore[assignment]
    _main(args)


def republish_killed_after_exchange(args: list[str]) -> None:
    """``optembed ARGS`` killed (SIGKILL) right after a republish exchanged the new folder and the
    old one, before the old copy is removed."""
    from pipelines import swap

    real_exchange = swap.exchange

    def exchange(a: Path, b: Path) -> bool:
        if real_exchange(a, b):
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    swap.exchange = exchange  # type: ignore[assignment]
    _main(args)


def _main(args: list[str]) -> None:
    from optembed_cli.main import main

    main(args)


# ----------------------------------------------------------------------------- setups


def copy_bundle(work: Path, fx: Any, f: ModuleType) -> Path:
    folder = work / f.BUNDLE_DIR
    if not folder.exists():
        shutil.copytree(fx.root / f.BUNDLE_DIR, folder)
    (work / SECRET).write_text("a file outside the bundle\n")
    return folder


def planted_in(where: str, edit: Edit, f: ModuleType) -> Setup:
    """``edit`` applied to the case's bundle folder (``bundle``) or its store's export artifact
    (``artifact``); the files it names re-signed in ``bundle.json`` (and the manifest)."""

    def setup(work: Path, fx: Any) -> None:
        bundle = copy_bundle(work, fx, f)
        folder = bundle if where == "bundle" else f.artifact(work, fx, "export")
        rels = edit(folder, work)
        if rels:
            planted.resign_bundle(folder, rels)

    return setup


def expression(folder: Path, work: Path, marker: str) -> list[str]:
    planted.plant_expression(folder / "model.pt2", str(work / marker))
    return ["model.pt2"]


def node_target(folder: Path, work: Path) -> list[str]:
    planted.plant_target(folder / "model.pt2")
    return ["model.pt2"]


def external(absolute: bool) -> Edit:
    def edit(folder: Path, work: Path) -> list[str]:
        secret = work / SECRET
        planted.plant_external_data(folder / "model.onnx", str(secret) if absolute else os.path.relpath(secret, folder))
        return ["model.onnx"]

    return edit


def custom_domain(folder: Path, work: Path) -> list[str]:
    planted.plant_custom_domain(folder / "model.onnx")
    return ["model.onnx"]


def symlink_to_secret(folder: Path, work: Path) -> list[str]:
    os.symlink(work / SECRET, folder / "notes.txt")
    return []


def model_as_symlink(folder: Path, work: Path) -> list[str]:
    """``model.pt`` a link to an identical copy outside: every hash still matches."""
    outside = work / "model-elsewhere.pt"
    shutil.copy2(folder / "model.pt", outside)
    (folder / "model.pt").unlink()
    os.symlink(outside, folder / "model.pt")
    return []


def hard_linked_vocabulary(folder: Path, work: Path) -> list[str]:
    os.link(sorted((folder / "vocab").glob("*.parquet"))[0], work / "linked-elsewhere.parquet")
    return []


def edited_bundle_json(rehash: bool) -> Edit:
    """Two fields' vocabularies swapped in ``bundle.json`` (its own hash recomputed or not)."""

    def edit(folder: Path, work: Path) -> list[str]:
        import json

        from optembed.export.bundle import bundle_digest

        path = folder / "bundle.json"
        meta = json.loads(path.read_text())
        fields = meta["preprocessing"]["fields"]
        fields[13]["vocab"], fields[14]["vocab"] = fields[14]["vocab"], fields[13]["vocab"]
        if rehash:
            meta["bundle_sha256"] = bundle_digest(meta)
        path.write_text(json.dumps(meta, indent=2) + "\n")
        return []

    return edit


def damaged_bundle_file(rel: str, how: Callable[[Path], None], f: ModuleType) -> Setup:
    def setup(work: Path, fx: Any) -> None:
        how(copy_bundle(work, fx, f) / rel)

    return setup


def link_in_artifact(stage: str, f: ModuleType) -> Setup:
    def setup(work: Path, fx: Any) -> None:
        (work / SECRET).write_text("a file outside the store\n")
        os.symlink(work / SECRET, f.artifact(work, fx, stage) / "notes.txt")

    return setup


def truncated_resigned(stage: str, rel: str, f: ModuleType) -> Setup:
    """``rel`` truncated and the manifest re-signed to match: only the reader can tell."""

    def setup(work: Path, fx: Any) -> None:
        f.truncate(f.target(work, fx, stage, rel))
        f.resign(f.artifact(work, fx, stage), rel)

    return setup


def huge_line(name: str, mib: int = 70) -> Setup:
    def setup(work: Path, fx: Any) -> None:
        with open(work / name, "wb") as fh:
            fh.write(b"1\t" + b"7" * (mib << 20) + b"\n")

    return setup


def onnx_missing(f: ModuleType) -> Callable[[], str | None]:
    return lambda: None if f.EXPORT_FORMAT == "all" else "onnx / onnxruntime not installed"


# ----------------------------------------------------------------------------- scenarios


def killed_republish(f: ModuleType, call: Callable[[list[str]], None], between: bool) -> Callable[[Any], str | None]:
    """``preprocess --force`` killed at one patched point of its republish; then ``gc`` first
    (which must keep the artifact), a verified read, and a rerun."""
    args = ("preprocess", "{data}", "--force")

    def scenario(scene: Any) -> str | None:
        stage_dir = scene.store / "preprocess"
        fp = scene.fx.ids["preprocess"]
        result = scene.wait(scene.start(args, call=call), args)
        if result.returncode not in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return f"the patched republish was not killed (exit {result.returncode}): {f.first_line(result)}"
        left = sorted(p.name for p in stage_dir.iterdir())
        if between and (fp in left or not any(n.startswith(f".old-{fp}-") for n in left)):
            return f"not killed between the renames (left {left})"
        if not between and (fp not in left or not any(n.startswith(f".tmp-{fp}-") for n in left)):
            return f"not killed after the exchange (left {left})"
        problem = f.succeeded(scene.cli(["gc"]), "gc")
        if problem:
            return problem
        if sorted(p.name for p in stage_dir.iterdir()) != [fp]:
            return f"after gc the preprocess folder holds {sorted(p.name for p in stage_dir.iterdir())}, expected only {fp}"
        problem = f.succeeded(scene.cli(["show", fp, "--verify"]), "show --verify") or f.verified(scene)
        if problem:
            return problem
        scene.note = "killed " + ("between the renames" if between else "after the exchange") + "; gc kept the artifact"
        return f.rerun(scene, "preprocess", args, {fp}, 0)

    return scenario


def strace_unavailable() -> str | None:
    if shutil.which("strace") is None:
        return "no strace"
    probe = subprocess.run(["strace", "-qq", "-o", "/dev/null", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"strace cannot trace here: {probe.stderr.strip()[:100]}"


def killed_at_every_rename(f: ModuleType, limit: int = 24) -> Callable[[Any], str | None]:
    """``strace`` kills ``preprocess --force`` at its 1st, 2nd, ... rename system call until a run
    completes: after each kill the artifact is findable and whole, and ``artifacts --verify``
    passes (it puts back a copy a kill left aside)."""

    def scenario(scene: Any) -> str | None:
        fp = scene.fx.ids["preprocess"]
        env = f._case_env(scene.store)
        for when in range(1, limit + 1):
            argv = [
                "strace", "-qq", "-f", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
                "-e", f"inject=rename,renameat,renameat2:signal=SIGKILL:when={when}",
                sys.executable, "-m", "optembed_cli", *scene.fill(("preprocess", "{data}", "--force")),
            ]
            done = subprocess.run(argv, cwd=scene.work, env=env, capture_output=True, text=True, timeout=scene.timeout)
            scene.log.append(f"$ strace ... when={when} optembed preprocess --force -> {done.returncode}")
            if done.returncode == 0:
                scene.note = f"killed at rename 1 to {when - 1} (of {when - 1}); each left a whole artifact; the run past them published"
                return f.store_clean(scene.store, "preprocess") or f.verified(scene)
            if done.returncode not in (-signal.SIGKILL, 128 + signal.SIGKILL):
                return f"rename {when}: exit {done.returncode}: {done.stderr.strip()[-300:]}"
            problem = f.succeeded(scene.cli(["show", fp, "--verify"]), f"after the kill at rename {when}: show --verify")
            if problem:
                return problem
            problem = f.verified(scene)
            if problem:
                return f"after the kill at rename {when}: {problem}"
        return f"still killed after {limit} renames"

    return scenario


def export_into_itself(f: ModuleType) -> Callable[[Any], str | None]:
    """``export --out`` at the exported artifact's own folder: one line, the artifact untouched."""

    def scenario(scene: Any) -> str | None:
        out = scene.store / "export" / scene.fx.ids["export"]
        result = scene.cli([*f.CHAIN["export"], "--out", str(out), "--force"])
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        if result.returncode != 2 or len(lines) != 1 or "--out" not in lines[0]:
            return f"exit {result.returncode} with {len(lines)} stderr lines: {f.first_line(result)}"
        scene.note = lines[0][:100]
        return f.verified(scene) or f.succeeded(
            scene.cli(["predict", scene.fx.ids["export"], "{rows}", "--out", "scores.csv", "--runtime", "torch"]), "predict after it"
        )

    return scenario


def killed_predict(f: ModuleType) -> Callable[[Any], str | None]:
    """``kill -9`` once predict's temporary output folder exists: no scores file; the next run
    removes the folder and writes the scores."""
    args = ("predict", "{export}", "big.txt", "--out", "scores.parquet", "--runtime", "torch", "--batch-size", "64")

    def scenario(scene: Any) -> str | None:
        lines = scene.fx.data.read_text().splitlines()
        (scene.work / "big.txt").write_text("\n".join(lines * 20) + "\n")
        proc = scene.start(args)
        problem = scene.kill_when(proc, lambda: any(scene.work.glob(".scores.parquet.tmp-*")), "predict's temporary output")
        if problem:
            return problem
        if (scene.work / "scores.parquet").exists():
            return "the killed predict left a scores file"
        problem = f.succeeded(scene.cli(args), "the rerun")
        if problem:
            return problem
        left = list(scene.work.glob(".scores.parquet.tmp-*"))
        return f"the rerun left {left[0].name}" if left else None

    return scenario


def predict_on_full_disk(f: ModuleType, free_kib: int = 16) -> Callable[[Any], str | None]:
    """predict writes its scores on a tmpfs with ``free_kib`` KiB left: one line blaming the disk
    (not the input), nothing left there; once space is freed a rerun succeeds."""

    def scenario(scene: Any) -> str | None:
        mnt = scene.work / "tiny"
        mnt.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
        if done.returncode != 0:
            raise f.SkipCase(f"mount -t tmpfs failed: {done.stderr.strip()}")
        try:
            stat = os.statvfs(mnt)
            filler = mnt / "filler"
            filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - free_kib * 1024))
            args = ["predict", "{export}", "{data}", "--out", str(mnt / "scores.csv"), "--runtime", "torch"]
            result = scene.cli(args)
            lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
            if result.returncode != 2 or len(lines) != 1:
                return f"exit {result.returncode} with {len(lines)} stderr lines, expected 2 and one: {f.first_line(result)}"
            if not re.search("(no space left on device|disk quota exceeded|file write failed).* while writing", lines[0], re.I):
                return f"the error line does not blame the disk: {lines[0]}"
            left = sorted(p.name for p in mnt.iterdir() if p.name != "filler")
            if left:
                return f"left {', '.join(left)}"
            scene.note = lines[0][:100]
            filler.unlink()
            return f.succeeded(scene.cli(args), "the rerun after freeing space")
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    return scenario


# ----------------------------------------------------------------------------- the cases


def cases(f: ModuleType) -> dict[str, list[Any]]:
    """The cases of this module by class, built with the matrix module ``f``'s helpers."""
    Case, cmd = f.Case, f.cmd
    fmt = f.EXPORT_FORMAT
    export_args = ("export", "--from", "{retrain}", "--format", fmt)
    on_bundle = ("predict", "{work}/bundle", "{rows}", "--out", "scores.csv")
    on_export = ("predict", "{export}", "{rows}", "--out", "scores.csv")
    bundle = lambda work, fx: copy_bundle(work, fx, f)  # noqa: E731
    baseline = ("baseline", "--method", "qr", "--embed-dim", "4", "--mlp", "8", "--device", "cpu")
    tiny = f.TINY
    marker = f.MARKER
    onnx = onnx_missing(f)

    bad_input = [
        Case("export --format unknown", cmd("export", "--from", "{retrain}", "--format", "tflite"), expect="unknown --format"),
        Case("export --from a preprocess artifact", cmd("export", "--from", "{preprocess}"), expect="expected"),
        Case("export --out a file", cmd(*export_args, "--out", "f.txt"), f.write("f.txt", "x"), expect="is a file"),
        Case("export --out a folder holding other files", cmd(*export_args, "--out", "full"), f.write("full/a.txt", "x"),
             expect="not empty"),
        Case("export --out a bundle without --force", cmd(*export_args, "--out", "{work}/bundle"), bundle, expect="already holds"),
        Case("export --out inside the store", cmd(*export_args, "--out", "{work}/artifacts/export/new"), expect="inside the artifact store"),
        Case("export --out the artifact's own folder", cmd(*export_args, "--out", "{work}/artifacts/export/{export}", "--force"),
             expect="inside the artifact store"),
        Case("predict missing data file", cmd(*on_export[:2], "missing.txt", *on_export[3:]), expect="not found"),
        Case("predict --out not .parquet or .csv", cmd(*on_export[:3], "--out", "scores.txt"), expect=".parquet or .csv"),
        Case("predict --out a folder", cmd(*on_export[:3], "--out", "{work}"), expect="--out"),
        Case("predict --runtime unknown", cmd(*on_export, "--runtime", "tpu"), expect="--runtime"),
        Case("predict --batch-size 0", cmd(*on_export, "--batch-size", "0"), expect="--batch-size"),
        Case("predict a folder that is no bundle", cmd("predict", "{work}/empty", "{rows}", "--out", "s.csv"),
             f.write("empty/a.txt", "x"), expect="not an export bundle"),
        Case("predict an unknown id", cmd("predict", "ffffffff", "{rows}", "--out", "s.csv"), expect="ffffffff"),
        Case("predict a supernet artifact", cmd("predict", "{supernet}", "{rows}", "--out", "s.csv"), expect="expected"),
        Case("predict wrong column count", cmd("predict", "{export}", "cols.txt", "--out", "s.csv", "--runtime", "torch"),
             f.edit_data("cols.txt", f.set_line(7, lambda line: line.rsplit("\t", 2)[0])), expect="columns"),
        Case("predict a 70 MB line", cmd("predict", "{export}", "huge.txt", "--out", "s.csv", "--runtime", "torch"),
             huge_line("huge.txt"), expect="or longer"),
        Case("baseline --method unknown", cmd("baseline", "--method", "xyz"), expect="xyz"),
        Case("baseline --lr nan", cmd(*baseline, "--lr", "nan"), expect="--lr"),
        Case("baseline --from a supernet artifact", cmd(*baseline, "--from", "{supernet}"), expect="expected"),
        Case("baseline --batch-size absurd", cmd(*baseline, "--batch-size", f.BIG), expect="more than the"),
        Case("supernet --nproc 0", cmd("supernet", *tiny, "--nproc", "0"), expect="--nproc"),
        Case("supernet --nproc 2 --lr nan", cmd("supernet", *tiny, "--nproc", "2", "--lr", "nan"), expect="--lr"),
        Case("supernet --nproc 2 --dropout 1.5", cmd("supernet", *tiny, "--nproc", "2", "--dropout", "1.5"), expect="dropout"),
        Case("supernet --stream --shuffle-buffer 0", cmd("supernet", *tiny, "--stream", "--shuffle-buffer", "0"), expect="--shuffle-buffer"),
        Case("supernet --stream --batch-size absurd", cmd("supernet", *tiny, "--stream", "--batch-size", f.BIG), expect="more than the"),
    ]

    faults = [
        Case("kill -9 between the two renames of a preprocess --force republish", None, kind="fault",
             scenario=killed_republish(f, republish_killed_between_renames, between=True)),
        Case("kill -9 after the exchange of a preprocess --force republish", None, kind="fault",
             scenario=killed_republish(f, republish_killed_after_exchange, between=False)),
        Case("kill -9 at every rename of a preprocess --force republish (strace)", None, kind="fault", skip=strace_unavailable,
             scenario=killed_at_every_rename(f)),
        Case("export --out into its own artifact folder", None, kind="fault", scenario=export_into_itself(f)),
        Case("kill -9 during export", None, kind="fault",
             scenario=f.killed_during("export", ("export", "--from", "{compress}", "--format", fmt))),
        Case("reader while export --force republishes", None, kind="fault", scenario=f.read_while_republished("export", export_args)),
        Case("kill -9 during predict", None, kind="fault", scenario=killed_predict(f)),
        Case("kill -9 during baseline", None, kind="fault",
             scenario=f.killed_during("baseline", ("baseline", "--method", "qr", "--from", "{preprocess}", "--embed-dim", "4",
                                                   "--mlp", "8", "--epochs", "2", "--batch-size", "64", "--seed", "21", "--device", "cpu"))),
        Case("kill -9 during supernet --stream", None, kind="fault",
             scenario=f.killed_during("supernet", (*f.LONG["supernet"][:-1], "22", "--stream"), "init.pt")),
        Case("full disk during predict", None, kind="fault", skip=f.tmpfs_unavailable, scenario=predict_on_full_disk(f)),
    ]

    corruption = [
        Case("flipped bytes in a bundle's model.pt read by predict", cmd(*on_bundle, "--runtime", "torch"),
             damaged_bundle_file("model.pt", f.flip, f), expect="model.pt", kind="corruption"),
        Case("truncated bundle model.onnx read by predict", cmd(*on_bundle, "--runtime", "onnx"),
             damaged_bundle_file("model.onnx", f.truncate, f), expect="model.onnx", kind="corruption", skip=onnx),
        Case("truncated bundle vocabulary read by predict", cmd(*on_bundle, "--runtime", "torch"),
             damaged_bundle_file("vocab/C1.parquet", f.truncate, f), expect="C1.parquet", kind="corruption"),
        Case("bundle.json vocabularies swapped read by predict", cmd(*on_bundle, "--runtime", "torch"),
             planted_in("bundle", edited_bundle_json(rehash=False), f), expect="bundle.json", kind="corruption"),
        Case("bundle.json vocabularies swapped and re-hashed in the store read by predict", cmd(*on_export, "--runtime", "torch"),
             planted_in("artifact", edited_bundle_json(rehash=True), f), expect="bundle.json", kind="corruption"),
        Case("symlink to a secret in a bundle read by predict", cmd(*on_bundle, "--runtime", "torch"),
             planted_in("bundle", symlink_to_secret, f), expect="notes.txt", kind="corruption"),
        Case("bundle model.pt replaced by a symlink read by predict", cmd(*on_bundle, "--runtime", "torch"),
             planted_in("bundle", model_as_symlink, f), expect="model.pt", kind="corruption"),
        Case("hard-linked vocabulary in a bundle read by predict", cmd(*on_bundle, "--runtime", "torch"),
             planted_in("bundle", hard_linked_vocabulary, f), expect="hard link", kind="corruption"),
        Case("symlink to a secret in the export artifact read by predict", cmd(*on_export, "--runtime", "torch"),
             planted_in("artifact", symlink_to_secret, f), expect="notes.txt", kind="corruption"),
        Case("symlink to a secret in the export artifact copied by export --out", cmd(*export_args, "--out", "copied"),
             planted_in("artifact", symlink_to_secret, f), expect="notes.txt", kind="corruption"),
        Case("export artifact model.pt replaced by a symlink copied by export --out", cmd(*export_args, "--out", "copied"),
             planted_in("artifact", model_as_symlink, f), expect="model.pt", kind="corruption"),
        Case("symlink to a secret in the export artifact read by show --verify", cmd("show", "{export}", "--verify"),
             link_in_artifact("export", f), expect="notes.txt", kind="corruption"),
        Case("symlink to a secret in the supernet artifact read by artifacts --verify", cmd("artifacts", "--verify"),
             link_in_artifact("supernet", f), expect="notes.txt", kind="corruption"),
        Case("truncated preprocess train.parquet read by supernet --stream (manifest re-signed)",
             cmd(*f.NEW_SUPERNET, "--stream"), truncated_resigned("preprocess", "train.parquet", f), expect="train.parquet",
             kind="corruption"),
    ]

    def code(name: str, args: Sequence[str], setup: Setup, expect: str, skip: Callable[[], str | None] | None = None) -> Any:
        return Case(name, cmd(*args), setup, expect=expect, kind="code", check=f.no_code, skip=skip)

    planted_code = [
        *(code(f"sympify expression in model.pt2 read by predict ({where}, re-signed)",
               (*(on_bundle if where == "bundle" else on_export), "--runtime", "torch"),
               planted_in(where, lambda folder, work: expression(folder, work, marker), f), "model.pt2")
          for where in ("bundle", "artifact")),
        *(code(f"torch.os.system node in model.pt2 read by predict ({where}, re-signed)",
               (*(on_bundle if where == "bundle" else on_export), "--runtime", "torch"), planted_in(where, node_target, f), "model.pt2")
          for where in ("bundle", "artifact")),
        code("sympify expression in model.pt2 copied by export --out (re-signed)", (*export_args, "--out", "copied"),
             planted_in("artifact", lambda folder, work: expression(folder, work, marker), f), "model.pt2"),
        code("ONNX external data ../secret read by predict (bundle, re-signed)", (*on_bundle, "--runtime", "onnx"),
             planted_in("bundle", external(absolute=False), f), "model.onnx", onnx),
        code("ONNX external data at an absolute path read by predict (artifact, re-signed)", (*on_export, "--runtime", "onnx"),
             planted_in("artifact", external(absolute=True), f), "model.onnx", onnx),
        code("ONNX custom operator domain read by predict (bundle, re-signed)", (*on_bundle, "--runtime", "onnx"),
             planted_in("bundle", custom_domain, f), "model.onnx", onnx),
    ]
    return {"bad-input": bad_input, "fault": faults, "corruption": corruption, "code": planted_code}
