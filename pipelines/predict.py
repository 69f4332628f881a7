"""``predict``: score a raw data file with an export bundle, writing one score per row.

The bundle is a folder (``optembed export --out DIR``, copied anywhere) or an artifact of the
store: an ``export`` artifact, or a ``retrain``/``compress`` artifact whose newest export is used.
The file is encoded with the bundle's preprocessing (:mod:`optembed.export.encode`), scored in
batches by the chosen runtime and written to ``out`` (``.parquet`` or ``.csv``): ``row`` (the
row's position among the file's data rows as read), ``score`` (the probability) and ``label``
when the file has one; then AUC and logloss are computed. The output appears only when complete.
Nothing is added to the store.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optembed.data.validation import check_input
from optembed.errors import ArtifactError, ConfigError
from optembed.export.bundle import Bundle, open_bundle
from optembed.export.encode import FieldVocab, encode_file
from optembed.export.score import output_format, score_file
from optembed.progress import NULL, Reporter
from pipelines.store import Store


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "rows": self.rows, "runtime": self.runtime, "bundle": self.bundle,
            "has_label": self.has_label, "bad_rows_skipped": self.bad_rows, **self.metrics, "seconds": round(self.seconds, 3),
        }


def resolve_bundle(ref: str, store: Store) -> Bundle:
    path = Path(ref)
    if path.is_dir() and (path / "bundle.json").is_file():
        return open_bundle(path)
    manifest = store.resolve(ref, ("export", "retrain", "compress"))
    if manifest.stage != "export":
        exports = [m for m in store.list("export") if m.upstream.get(manifest.stage) == manifest.fingerprint]
        if not exports:
            raise ArtifactError(
                f"{manifest.stage} artifact {manifest.fingerprint} has no export; run 'optembed export --from {manifest.fingerprint[:10]}' first"
            )
        manifest = max(exports, key=lambda m: (m.created, m.fingerprint))
    assert manifest.path is not None
    return open_bundle(Path(manifest.path))


def run(config: PredictConfig, store: Store, reporter: Reporter = NULL) -> PredictResult:
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {config.batch_size}")
    out = Path(config.out)
    output_format(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a .parquet or .csv file name")
    if not out.parent.exists():
        raise ConfigError(f"the folder of --out does not exist: {out.parent}")
    check_input(Path(config.data))
    started = time.perf_counter()
    bundle = resolve_bundle(config.bundle, store)
    runtime = config.runtime or bundle.default_runtime()
    scorer = bundle.scorer(runtime, config.threads)
    pre = bundle.meta["preprocessing"]
    vocabs = [
        FieldVocab(f["name"], bundle.vocab(i), int(f["oov_id"]), int(f["missing_id"])) for i, f in enumerate(pre["fields"])
    ]
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        reporter.message(f"encoding {Path(config.data).name} ({config.fmt or pre['format']})")
        encoded = encode_file(
            Path(config.data), config.fmt or pre["format"], dict(pre.get("options") or {}), vocabs, tmp / "encoded.parquet",
            config.skip_bad_rows, config.memory_limit, config.threads,
        )
        scored = score_file(tmp / "encoded.parquet", scorer, len(vocabs), encoded.has_label, tmp / out.name, config.batch_size, reporter)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics = {k: v for k, v in scored.metrics.items() if k != "rows"}
    return PredictResult(
        out, scored.rows, runtime, str(bundle.folder), encoded.has_label, encoded.bad_rows, metrics, time.perf_counter() - started
    )
