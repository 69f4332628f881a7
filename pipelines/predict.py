"""``predict``: score a raw data file with an export bundle, writing one score per row.

The bundle is a folder (``optembed export --out DIR``, copied anywhere) or an artifact of the
store: an ``export`` artifact, or a ``retrain``/``compress`` artifact whose newest export is used
(its ``bundle.json`` is then also checked against the store manifest's record). Opening it checks
everything it holds without running any of it (:func:`optembed.export.bundle.open_bundle`); the
torch runtime rebuilds the network from the bundle's model file with optembed's own code.

The file is encoded with the bundle's preprocessing (:mod:`optembed.export.encode`), scored in
batches by the chosen runtime and written to ``out`` (``.parquet`` or ``.csv``): ``row`` (the
row's position among the file's data rows as read), ``score`` (the probability) and ``label``
when the file has one; then AUC and logloss are computed. A bundle of several tasks adds
``score_<task>`` for every task (``score`` stays the primary task's) and ``label_<task>`` for
every task whose label column the file has; the metrics are then each labelled task's too
(``tasks``), the plain keys the primary's (:mod:`optembed.export.score`). A file with some of the
label columns is scored, and evaluated on those. The output appears only when complete:
the work happens in a temporary sibling folder ``.<name>.tmp-<pid>``, which a killed run leaves
and the next run into the same folder removes. A failed write (full disk) is one line blaming
the disk. Nothing is added to the store.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from optembed.data.long_lines import check_line_lengths
from optembed.data.validation import check_input
from optembed.errors import ArtifactError, ConfigError
from optembed.export.bundle import BUNDLE_JSON, Bundle, open_bundle
from optembed.export.encode import FieldVocab, encode_file
from optembed.export.score import OUTPUT_FORMATS, output_format, score_file
from optembed.progress import NULL, Reporter
from pipelines.store import Manifest, Store, release_frames, write_error
from pipelines.swap import pid_alive

_TMP_OUTPUT = re.compile(r"^\..+(" + "|".join(re.escape(s) for s in OUTPUT_FORMATS) + r")\.tmp-(\d+)$")


@dataclass
class PredictConfig:
    bundle: str  # a bundle folder, or an export / retrain / compress artifact id
    data: Path
    out: Path
    fmt: str | None = None  # default: the format the model was trained on
    runtime: str | None = None  # onnx | torch; default onnx when onnxruntime is installed
    batch_size: int = 4096
    skip_bad_rows: bool = False
    threads: int | None = None
    memory_limit: str = "2GB"


@dataclass
class PredictResult:
    out: Path
    rows: int
    runtime: str
    bundle: str
    has_label: bool
    bad_rows: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    bundle_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "rows": self.rows, "runtime": self.runtime, "bundle": self.bundle,
            "bundle_sha256": self.bundle_sha256, "has_label": self.has_label, "bad_rows_skipped": self.bad_rows, **self.metrics,
            "seconds": round(self.seconds, 3),
        }


def resolve_bundle(ref: str, store: Store) -> Bundle:
    path = Path(ref)
    if path.is_dir() and not Path(os.path.abspath(path)).resolve().is_relative_to(store.root):
        if not os.path.lexists(path / BUNDLE_JSON):
            raise ArtifactError(f"{path} is not an export bundle (no {BUNDLE_JSON})")
        return open_bundle(path)
    manifest = store.resolve(ref, ("export", "retrain", "compress"))
    if manifest.stage != "export":
        exports = [m for m in store.list("export") if m.upstream.get(manifest.stage) == manifest.fingerprint]
        if not exports:
            raise ArtifactError(
                f"{manifest.stage} artifact {manifest.fingerprint} has no export; run 'optembed export --from {manifest.fingerprint[:10]}' first"
            )
        manifest = max(exports, key=lambda m: (m.created, m.fingerprint))
    return open_artifact_bundle(manifest)


def open_artifact_bundle(manifest: Manifest) -> Bundle:
    """An export artifact's bundle: ``bundle.json`` checked against the store manifest (size and
    hash), then the bundle against ``bundle.json``."""
    assert manifest.path is not None
    if BUNDLE_JSON not in manifest.files:
        raise ArtifactError(f"export artifact {manifest.fingerprint}: its manifest does not record {BUNDLE_JSON}; {manifest.fix}")
    manifest.file(BUNDLE_JSON)
    return open_bundle(Path(manifest.path))


def clean_stale_outputs(folder: Path) -> list[Path]:
    """Remove the temporary folders (``.<name>.tmp-<pid>``) that killed runs of predict left in
    ``folder``; those of live processes stay."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _TMP_OUTPUT.match(entry.name)
        if found is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(found.group(2))
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def run(config: PredictConfig, store: Store, reporter: Reporter = NULL) -> PredictResult:
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {config.batch_size}")
    out = Path(config.out)
    output_format(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a .parquet or .csv file name")
    if not out.parent.exists():
        raise ConfigError(f"the folder of --out does not exist: {out.parent}")
    data = Path(config.data)
    check_input(data)
    started = time.perf_counter()
    bundle = resolve_bundle(config.bundle, store)
    runtime = config.runtime or bundle.default_runtime()
    scorer = bundle.scorer(runtime, config.threads)
    pre = bundle.meta["preprocessing"]
    fmt = config.fmt or pre["format"]
    vocabs = [FieldVocab.from_record(f, bundle.vocab(i)) for i, f in enumerate(pre["fields"])]
    if fmt != "parquet":
        check_line_lengths(data)
    clean_stale_outputs(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    failure: ArtifactError | None = None
    try:
        tmp.mkdir()
        encoded = encode_file(
            data, fmt, dict(pre.get("options") or {}), vocabs, tmp / "encoded.parquet", config.skip_bad_rows,
            config.memory_limit, config.threads, bundle.tasks,
        )
        reporter.message(f"encoded {encoded.rows:,} rows of {data.name} ({fmt})")  # after: a bad file gets its one error line only
        scored = score_file(
            tmp / "encoded.parquet", scorer, len(vocabs), encoded.label_tasks, tmp / out.name, config.batch_size, reporter, bundle.tasks,
        )
        os.replace(tmp / out.name, out)
    except (OSError, RuntimeError, duckdb.Error) as exc:
        failure = write_error(exc, f"the scores {out}", "nothing was written")
        if failure is None:
            raise
        release_frames(exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failure is not None:
        raise failure
    metrics = {k: v for k, v in scored.metrics.items() if k != "rows"}
    return PredictResult(
        out, scored.rows, runtime, str(bundle.folder), encoded.has_label, encoded.bad_rows, metrics, time.perf_counter() - started,
        bundle.digest,
    )
