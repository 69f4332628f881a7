"""The ``export`` stage: a retrain or compress artifact -> a self-contained deployment bundle.

The bundle (see :mod:`optembed.export.bundle`) is the artifact folder itself: the network as an
ONNX graph and/or a ``torch.export`` program (``formats``), the preprocessing spec with every
field's vocabulary, ``bundle.json`` and a README. With ``out`` the bundle is also copied to that
folder (everything but the store's ``manifest.json``).

Checks made at export: the test split's AUC and logloss of the in-package model (recorded in
``bundle.json``), and every exported graph's largest logit difference from the in-package model
on the first test rows and on random ids; a difference above ``TOLERANCE`` stops the export.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import optembed
from optembed.errors import ArtifactError, ConfigError
from optembed.export.bundle import BUNDLE_JSON, FORMAT, GRAPH_FILES, VERSION as BUNDLE_VERSION, file_records, onnx_scorer, torch_scorer
from optembed.export.graph import INPUT_NAME, OUTPUT_NAMES, ServingNet
from optembed.export.readme import bundle_readme
from optembed.export.writers import ONNX_OPSET, export_program, onnx_available, save_onnx, save_pt2
from optembed.models.compact import CompactModel, load_compact
from optembed.progress import NULL, Reporter
from optembed.quantization.model import QuantizedModel, load_quantized
from optembed.training.evaluate import evaluate
from pipelines.data import load_dataset, read_schema
from pipelines.readers import resolve_chain
from pipelines.stage import execute
from pipelines.store import MANIFEST, Manifest, Store, strict_dumps

STAGE = "export"
VERSION = 1
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
    source: str | None = None  # retrain or compress artifact; None = the newest of either
    out: Path | None = None  # also copy the bundle here
    formats: tuple[str, ...] = FORMATS
    force: bool = False

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


def parse_formats(value: str) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == ["all"]:
        return FORMATS
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise ConfigError(f"unknown --format {', '.join(bad) or '(none)'}; choose onnx, pt2 or all")
    return tuple(f for f in FORMATS if f in items)


def load_source(manifest: Manifest) -> CompactModel | QuantizedModel:
    if manifest.stage == "retrain":
        return load_compact(manifest.output("compact"))[0]
    return load_quantized(manifest.output("model"))[0]


def preprocessing_spec(pre: Manifest, schema: dict[str, Any]) -> dict[str, Any]:
    fields = [
        {
            "name": f["name"], "kind": f["kind"], "cardinality": int(f["cardinality"]), "oov_id": int(f["oov_id"]),
            "missing_id": int(f["missing_id"]), "vocab": f["vocab"],
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


def write_vocabularies(pre: Manifest, schema: dict[str, Any], model: CompactModel | QuantizedModel, tmp: Path) -> None:
    """Each field's vocabulary (value, id, count, special) plus ``row``: the row its id reads."""
    for f, field in enumerate(schema["fields"]):
        table = pq.read_table(pre.file(field["vocab"]), columns=["value", "id", "count", "special"])
        remap = model.field_remap(f).cpu().long().numpy()
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
            scorer = torch_scorer(path)
        got = scorer(x.numpy())[0]
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
    source = store.resolve(config.source, SOURCES)
    chain = resolve_chain(store, source)
    pre = chain["preprocess"]
    schema = read_schema(pre)
    params = {"formats": list(config.formats), "opset": ONNX_OPSET if "onnx" in config.formats else None}
    upstream = {source.stage: source, "preprocess": pre}

    def build(tmp: Path, manifest: Manifest) -> None:
        task = reporter.task("export", total=4 + len(config.formats), unit="step")
        model = load_source(source).eval()
        if list(model.field_names) != [f["name"] for f in schema["fields"]]:
            raise ArtifactError(f"{source.stage} artifact {source.fingerprint} has other fields than its preprocess artifact")
        net = ServingNet(model).eval()
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
        meta = {
            "format": FORMAT,
            "version": BUNDLE_VERSION,
            "versions": _versions(opset),
            "onnx_opset": opset,
            "source": {
                "stage": source.stage, "fingerprint": source.fingerprint, "variant": source.metrics.get("variant"),
                **{stage: m.fingerprint for stage, m in chain.items() if stage != source.stage},
            },
            "model": {
                "name": model.backbone.cfg.name, "embed_dim": model.dim, "kind": model.backbone.embedder.kind,
                "widths": list(model.widths), "kept_rows": list(model.kept),
            },
            "inputs": [{"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", net.n_fields]}],
            "outputs": [{"name": n, "dtype": "float32", "shape": ["batch"]} for n in OUTPUT_NAMES],
            "graphs": {kind: GRAPH_FILES[kind] for kind in graphs},
            "preprocessing": preprocessing_spec(pre, schema),
            "metrics": {
                "test_auc": metrics["auc"], "test_logloss": metrics["logloss"], "test_rows": len(test),
                "source_test_auc": source.metrics.get("test_auc"), **checks,
            },
        }
        (tmp / "README.md").write_text(bundle_readme(meta))
        listed = [*[GRAPH_FILES[k] for k in graphs], "README.md", *[f["vocab"] for f in schema["fields"]]]
        meta["files"] = file_records(tmp, listed)
        (tmp / BUNDLE_JSON).write_text(strict_dumps(meta) + "\n")
        task.advance(1)
        task.close()
        manifest.outputs = {"bundle": BUNDLE_JSON, "readme": "README.md", **{k: GRAPH_FILES[k] for k in graphs}}
        manifest.metrics = {
            "variant": source.metrics.get("variant"),
            "source_stage": source.stage,
            "test_auc": metrics["auc"],
            "test_logloss": metrics["logloss"],
            "onnx_opset": opset,
            **checks,
            **{f"{k}_bytes": p.stat().st_size for k, p in graphs.items()},
        }

    manifest = execute(store, STAGE, VERSION, params, upstream, build, force=config.force, device="cpu")
    if config.out is not None:
        copy_bundle(manifest, Path(config.out))
    return manifest


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
    """Copy the artifact's bundle files (all but ``manifest.json``) to ``out``, atomically: into a
    temporary sibling folder first, which then replaces ``out``."""
    assert manifest.path is not None
    src = Path(manifest.path)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if path.is_file() and rel.as_posix() != MANIFEST:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, tmp / rel)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise ArtifactError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    shutil.rmtree(old, ignore_errors=True)
    return out
