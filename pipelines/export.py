"""The ``export`` stage: a retrain or compress artifact -> a self-contained deployment bundle.

The bundle (see :mod:`optembed.export.bundle`) is the artifact folder itself: the model file
(a copy of the source artifact's, checked against its manifest), the network as an ONNX graph
and/or a ``torch.export`` program (``formats``), the preprocessing spec with every field's
vocabulary, a self-hashed ``bundle.json`` recording who made it, and a README. With ``out`` the
bundle is also copied to that folder: the files ``bundle.json`` lists and ``bundle.json``, after
checking them, never following a link, and replacing a previous bundle there in one step
(:mod:`pipelines.swap`). ``out`` may not lie inside the artifact store (nor hold it).

Checks made at export: the test split's AUC and logloss of the in-package model (recorded in
``bundle.json``), and every exported graph's largest logit difference from the in-package model
on the first test rows and on random ids; a difference above ``TOLERANCE`` stops the export.

A model of several tasks (one per label of its preprocess artifact) is exported with one logit and
probability per task, ``(batch, T)``; ``bundle.json`` (version 3) lists the tasks' names, the
primary first, and records each task's test AUC and logloss under ``metrics.tasks``, as the
manifest does under ``tasks`` (:mod:`optembed.export.tasks`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import optembed
from optembed.checksum import file_sha256
from optembed.errors import ArtifactError, ConfigError
from optembed.data.labels import label_columns, task_names
from optembed.export.bundle import (
    BUNDLE_JSON, FORMAT, GRAPH_FILES, MODEL_FILE, bundle_digest, file_records, made_by, onnx_scorer, open_bundle, torch_scorer,
)
from optembed.export.tasks import bundle_version
from optembed.export.graph import INPUT_NAME, OUTPUT_NAMES, ServingNet
from optembed.export.readme import bundle_readme
from optembed.export.writers import ONNX_OPSET, export_program, onnx_available, save_onnx, save_pt2
from optembed.fingerprint import UNFINGERPRINTED, fingerprint_params
from optembed.links import copy_regular
from optembed.models.base import CTRModel
from optembed.models.checkpoint import load_model
from optembed.progress import NULL, Reporter
from optembed.training.evaluate import evaluate
from pipelines.data import load_dataset, read_schema
from pipelines.readers import MODEL_OUTPUT, resolve_chain
from pipelines import swap
from pipelines.stage import execute
from pipelines.store import Manifest, Store, strict_dumps, write_error

STAGE = "export"
VERSION = 2  # bundle version 2: the model file inside, a self-hashed bundle.json
SOURCES = ("retrain", "compress")
FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # largest logit difference allowed between an exported graph and the model
CHECK_ROWS = 4096
NUMERIC_TRANSFORM = "v > 2 -> floor(ln(v)^2), else v; the token is its text (integral values without a decimal point)"
DERIVED = {
    "avazu": "hour (YYMMDDHH) -> hour_of_day, weekday (0 = Sunday), is_weekend; the id column is dropped",
    "kdd12": "label = Click > 0",
}
PREPROCESS_OPTIONS = ("label", "fields", "numeric", "delimiter", "keep_impression", "min_count", "count_on")


@dataclass
class ExportStage:
    # retrain or compress artifact; None = the newest of either
    source: str | None = field(default=None, metadata=UNFINGERPRINTED)
    out: Path | None = field(default=None, metadata=UNFINGERPRINTED)  # also copy the bundle here
    formats: tuple[str, ...] = FORMATS
    force: bool = field(default=False, metadata=UNFINGERPRINTED)

    def validate(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown --format {', '.join(bad) or '(none)'}; choose onnx, pt2 or all")
        if "onnx" in self.formats:
            missing = onnx_available()
            if missing is not None:
                raise ConfigError(f"ONNX export needs the {missing} package: pip install 'optembed[export]' (or --format pt2)")
        if self.out is not None:
            out = Path(self.out)
            if out.exists() and not out.is_dir():
                raise ConfigError(f"--out {out} is a file, not a folder")
            if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_JSON).is_file():
                raise ConfigError(f"--out {out} is a folder that is not empty and holds no bundle; choose a new folder")
            if (out / BUNDLE_JSON).is_file() and not self.force:
                raise ConfigError(f"--out {out} already holds a bundle; pass --force to replace it")


def stage_params(config: ExportStage) -> dict[str, Any]:
    """The fingerprinted parameters: the formats, and the ONNX opset when ONNX is written."""
    return {**fingerprint_params(config), "opset": ONNX_OPSET if "onnx" in config.formats else None}


def parse_formats(value: str) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == ["all"]:
        return FORMATS
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise ConfigError(f"unknown --format {', '.join(bad) or '(none)'}; choose onnx, pt2 or all")
    return tuple(f for f in FORMATS if f in items)




def load_source(manifest: Manifest) -> tuple[CTRModel, list[str]]:
    """The deployable model of a retrain or compress artifact, and its field names."""
    model, payload = load_model(manifest.output(MODEL_OUTPUT[manifest.stage]))
    return model, list(payload["field_names"])


def copy_model_file(source: Manifest, dest: Path) -> None:
    """The source artifact's model file, copied (never through a link) and compared with the hash
    its manifest records."""
    rel = source.outputs[MODEL_OUTPUT[source.stage]]
    src = source.file(rel)
    copy_regular(src, dest)
    record = source.files.get(rel)
    if record is not None and file_sha256(dest) != record.get("sha256"):
        raise ArtifactError(f"{source.stage} artifact {source.fingerprint}: {rel} has changed since it was written (sha256 mismatch) ({src}); {source.fix}")


def check_out(out: Path, store: Store) -> None:
    """``--out`` must lie outside the artifact store (and not hold it): replacing that folder would
    remove artifacts (the exported one itself, when it is its own folder)."""
    where = Path(os.path.abspath(out)).resolve()
    root = store.root
    if where == root or where.is_relative_to(root):
        raise ConfigError(f"--out {out} is inside the artifact store {root}; choose a folder outside it")
    if root.is_relative_to(where):
        raise ConfigError(f"--out {out} holds the artifact store {root}; choose a folder outside it")


def preprocessing_spec(pre: Manifest, schema: dict[str, Any]) -> dict[str, Any]:
    fields = [
        {
            "name": f["name"], "kind": f["kind"], "cardinality": int(f["cardinality"]), "oov_id": int(f["oov_id"]),
            "missing_id": int(f["missing_id"]), "vocab": f["vocab"],
            **({"bucketing": f["bucketing"]} if "bucketing" in f else {}),  # quantile bins, applied as recorded
        }
        for f in schema["fields"]
    ]
    spec: dict[str, Any] = {
        "format": schema["format"],
        "options": {k: pre.params.get(k) for k in PREPROCESS_OPTIONS if k in pre.params},
        "label": schema.get("source_label"),
        "numeric_transform": NUMERIC_TRANSFORM,
        "fields": fields,
    }
    if schema["format"] in DERIVED:
        spec["derived"] = DERIVED[schema["format"]]
    return spec


def write_vocabularies(pre: Manifest, schema: dict[str, Any], model: CTRModel, tmp: Path) -> None:
    """Each field's vocabulary (value, id, count, special) plus ``row``: the row its id reads."""
    for f, field in enumerate(schema["fields"]):
        table = pq.read_table(pre.file(field["vocab"]), columns=["value", "id", "count", "special"])
        remap = model.embedder.field_remap(f).cpu().long().numpy()  # type: ignore[operator]
        ids = table.column("id").to_numpy()
        if ids.size and (ids.min() < 0 or ids.max() >= remap.size):
            raise ArtifactError(f"vocabulary of {field['name']} has ids beyond the model's {remap.size} (another preprocess artifact?)")
        table = table.append_column("row", pa.array(remap[ids].astype(np.int32)))
        dest = tmp / field["vocab"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, dest)


def _check_graphs(net: ServingNet, graphs: dict[str, Path], x: torch.Tensor) -> dict[str, float]:
    """Largest logit difference of every exported graph from ``net`` on ``x``."""
    with torch.inference_mode():
        want = net(x)[0].numpy()
    out: dict[str, float] = {}
    for kind, path in graphs.items():
        if kind == "onnx":
            try:
                scorer = onnx_scorer(path)
            except ConfigError:  # onnxruntime not installed: the graph is written, not checked
                continue
        else:
            scorer = torch_scorer(path)  # the file this process has just written
        got = scorer(x.numpy())[0]
        if np.shape(got) != want.shape:
            raise ArtifactError(f"the exported {kind} graph gives logits of shape {np.shape(got)}, the model {want.shape}")
        diff = float(np.abs(got.reshape(-1) - want.reshape(-1)).max()) if want.size else 0.0
        if not np.isfinite(diff) or diff > TOLERANCE:
            raise ArtifactError(f"the exported {kind} graph's logits differ from the model's by {diff:.3g} (> {TOLERANCE:g})")
        out[f"max_abs_diff_{kind}"] = diff
    return out


def _random_ids(cards: list[int], rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (rows,), generator=g) for c in cards], dim=1)


def run(config: ExportStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    if config.out is not None:
        check_out(Path(config.out), store)
    source = store.resolve(config.source, SOURCES)
    chain = resolve_chain(store, source)
    pre = chain["preprocess"]
    schema = read_schema(pre)
    params = stage_params(config)
    if len(label_columns(schema)) > 1:  # bundle version 3 (one task: the parameters, and so the fingerprints, as before)
        params["tasks"] = len(label_columns(schema))
    upstream = {source.stage: source, "preprocess": pre}

    def build(tmp: Path, manifest: Manifest) -> None:
        task = reporter.task("export", total=4 + len(config.formats), unit="step")
        model, field_names = load_source(source)
        if field_names != [f["name"] for f in schema["fields"]]:
            raise ArtifactError(f"{source.stage} artifact {source.fingerprint} has other fields than its preprocess artifact")
        tasks = model_tasks(model, schema, source)
        net = ServingNet(model, field_names).eval()
        copy_model_file(source, tmp / MODEL_FILE)
        task.update(description="vocabularies")
        write_vocabularies(pre, schema, model, tmp)
        task.advance(1)
        task.update(description="tracing (torch.export)")
        program = export_program(net, net.n_fields)
        task.advance(1)
        graphs: dict[str, Path] = {}
        opset = None
        if "pt2" in config.formats:
            task.update(description="writing model.pt2")
            save_pt2(program, tmp / GRAPH_FILES["pt2"])
            graphs["pt2"] = tmp / GRAPH_FILES["pt2"]
            task.advance(1)
        if "onnx" in config.formats:
            task.update(description="writing model.onnx")
            opset = save_onnx(program, tmp / GRAPH_FILES["onnx"], net.n_fields)
            graphs["onnx"] = tmp / GRAPH_FILES["onnx"]
            task.advance(1)
        task.update(description="checking on the test split")
        test = load_dataset(pre, torch.device("cpu"), splits=("test",)).splits["test"]
        metrics = evaluate(model, test, torch.device("cpu"))
        cards = [int(f["cardinality"]) for f in schema["fields"]]
        probe = torch.cat([test.x[:CHECK_ROWS].long(), _random_ids(cards, 512)])
        checks = _check_graphs(net, graphs, probe)
        task.advance(1)
        per_task = task_metrics(metrics, tasks)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": bundle_version(model.tasks),
            "made_by": made_by(optembed.__version__),
            "versions": _versions(opset),
            "onnx_opset": opset,
            "source": {
                "stage": source.stage, "fingerprint": source.fingerprint, "variant": source.metrics.get("variant"),
                **{stage: m.fingerprint for stage, m in chain.items() if stage != source.stage},
            },
            "model": {
                "name": model.cfg.name, "embed_dim": model.embed_dim, "kind": model.embedder.kind,
                "widths": model.embedder.field_widths(), "kept_rows": model.embedder.field_rows(),
            },
            "inputs": [{"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", net.n_fields]}],
            "outputs": [{"name": n, "dtype": "float32", "shape": ["batch", *([model.tasks] if tasks else [])]} for n in OUTPUT_NAMES],
            **({"tasks": tasks} if tasks else {}),
            "model_file": {"path": MODEL_FILE, "kind": model.embedder.kind},
            "graphs": {kind: GRAPH_FILES[kind] for kind in graphs},
            "preprocessing": preprocessing_spec(pre, schema),
            "metrics": {
                "test_auc": metrics["auc"], "test_logloss": metrics["logloss"], "test_rows": len(test),
                "source_test_auc": source.metrics.get("test_auc"), **checks, **({"tasks": per_task} if tasks else {}),
            },
        }
        (tmp / "README.md").write_text(bundle_readme(meta))
        listed = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p.name != BUNDLE_JSON]
        meta["files"] = file_records(tmp, listed)
        meta = json.loads(strict_dumps(meta))  # the JSON as written, which the hash covers
        meta["bundle_sha256"] = bundle_digest(meta)
        (tmp / BUNDLE_JSON).write_text(strict_dumps(meta) + "\n")
        task.advance(1)
        task.close()
        manifest.outputs = {"bundle": BUNDLE_JSON, "readme": "README.md", "model": MODEL_FILE, **{k: GRAPH_FILES[k] for k in graphs}}
        manifest.metrics = {
            "variant": source.metrics.get("variant"),
            "source_stage": source.stage,
            "test_auc": metrics["auc"],
            "test_logloss": metrics["logloss"],
            "onnx_opset": opset,
            **checks,
            **{f"{k}_bytes": p.stat().st_size for k, p in graphs.items()},
            **({"tasks": per_task} if tasks else {}),
        }

    manifest = execute(store, STAGE, VERSION, params, upstream, build, force=config.force, device="cpu")
    if config.out is not None:
        copy_bundle(manifest, Path(config.out))
    return manifest


def model_tasks(model: CTRModel, schema: dict[str, Any], source: Manifest) -> list[str]:
    """The names of the model's tasks (its preprocess artifact's labels, the primary first); empty
    for one task. A model predicting another number of tasks than the data has labels is refused."""
    labels = len(label_columns(schema))
    if model.tasks != labels:
        raise ArtifactError(
            f"{source.stage} artifact {source.fingerprint} predicts {model.tasks} task(s) but its preprocess artifact has "
            f"{labels} label column(s); {source.fix}"
        )
    return task_names(schema) if model.tasks > 1 else []


def task_metrics(metrics: dict[str, float], tasks: list[str]) -> dict[str, dict[str, float]]:
    """``{task: {"test_auc", "test_logloss"}}`` of :func:`~optembed.training.evaluate.evaluate`'s numbers."""
    return {t: {"test_auc": metrics[f"auc_{t}"], "test_logloss": metrics[f"logloss_{t}"]} for t in tasks}


def _versions(opset: int | None) -> dict[str, Any]:
    import platform

    out: dict[str, Any] = {"optembed": optembed.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def copy_bundle(manifest: Manifest, out: Path) -> Path:
    """Copy the artifact's bundle (the files ``bundle.json`` lists, and ``bundle.json``) to
    ``out`` after checking it (:func:`open_bundle`: hashes, no links), never following a link:
    into a temporary sibling folder first, which then replaces ``out`` in one step."""
    assert manifest.path is not None
    src = Path(manifest.path)
    manifest.file(BUNDLE_JSON)  # the store's record of bundle.json
    bundle = open_bundle(src)
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_siblings(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in [*bundle.meta["files"], BUNDLE_JSON]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            copy_regular(bundle.path(rel), tmp / rel)
        if out.exists():
            swap.replace_folder(tmp, out)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_error(exc, f"the bundle {out}")
        raise failure or ArtifactError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def clean_siblings(out: Path) -> None:
    """What a killed copy to ``out`` left beside it: the previous bundle renamed aside (renamed
    back when ``out`` is missing) and temporary folders of dead processes (removed)."""
    own = re.compile(rf"^\.{re.escape(out.name)}\.tmp-(\d+)$")
    swap.recover(out.parent, lambda p: p.name.startswith(f"{swap.OLD_PREFIX}{out.name}-") and (p / BUNDLE_JSON).is_file())
    for entry in out.parent.iterdir():
        found = own.match(entry.name)
        aside = swap.parse_aside(entry.name)
        pid = int(found.group(1)) if found else (aside[1] if aside and aside[0] == out.name and out.exists() else None)
        if pid is not None and not entry.is_symlink() and entry.is_dir() and not swap.pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
