"""A deployment bundle: the graphs, the preprocessing spec and ``bundle.json``, in one folder.

Layout (every path relative, so the folder can be copied anywhere)::

    bundle.json            versions, source fingerprints, test AUC at export, inputs/outputs,
                           the preprocessing spec, every file's size and sha256
    README.md              scoring rows in plain Python (onnxruntime, torch)
    model.onnx             the network (ONNX), when exported
    model.pt2              the network (torch.export program), when exported
    vocab/<field>.parquet  value -> id per field (id 0 = OOV, 1 = missing), plus ``row``: the
                           compact row a pruned model reads for that id

Opening a bundle checks every listed file's size and hash; the ``.pt2`` program is read only
after its archive is checked to hold plain tensors and the JSON graph (``torch.export.load``
would otherwise unpickle what the archive holds).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from optembed.checksum import file_sha256
from optembed.errors import ArtifactError, ConfigError

FORMAT = "optembed-bundle"
VERSION = 1
BUNDLE_JSON = "bundle.json"
GRAPH_FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
RUNTIMES = ("onnx", "torch")
RUNTIME_GRAPH = {"onnx": "onnx", "torch": "pt2"}
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # ids (B, n) int64 -> (logit, probability)
# members a torch.export archive may hold; anything else (pickled objects, compiled code) is refused
_PT2_MEMBERS = (
    "data/weights/", "data/constants/tensor_", "data/constants/model_constants_config.json", "models/", "data/sample_inputs/", "archive_format",
    "archive_version", ".data/version", ".data/serialization_id", "byteorder", "extra/",
)


def file_records(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"size": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)} for n in sorted(names)}


@dataclass
class Bundle:
    folder: Path
    meta: dict[str, Any]

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.meta["preprocessing"]["fields"]]

    @property
    def graphs(self) -> dict[str, str]:
        return dict(self.meta.get("graphs", {}))

    def path(self, rel: str) -> Path:
        return _inside(self.folder, rel)

    def vocab(self, f: int) -> Path:
        return self.path(self.meta["preprocessing"]["fields"][f]["vocab"])

    def default_runtime(self) -> str:
        if "onnx" in self.graphs and _has_module("onnxruntime"):
            return "onnx"
        if "pt2" in self.graphs:
            return "torch"
        return "onnx"

    def scorer(self, runtime: str | None = None, threads: int | None = None) -> Scorer:
        runtime = runtime or self.default_runtime()
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown --runtime {runtime!r}; choose onnx or torch")
        graph = RUNTIME_GRAPH[runtime]
        if graph not in self.graphs:
            have = ", ".join(self.graphs) or "none"
            raise ConfigError(f"the bundle {self.folder} has no {graph} graph (it has: {have}); export it with --format {graph} or all")
        path = self.path(self.graphs[graph])
        return onnx_scorer(path, threads) if runtime == "onnx" else torch_scorer(path)


def _has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _inside(folder: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not rel:
        raise ArtifactError(f"bundle {folder} names a file outside itself ({rel!r})")
    return folder / pure


def open_bundle(folder: Path, verify: bool = True) -> Bundle:
    """Read ``folder/bundle.json`` and check every file it lists (size, sha256)."""
    folder = Path(folder)
    meta_path = folder / BUNDLE_JSON
    if not meta_path.is_file():
        raise ArtifactError(f"{folder} is not an export bundle (no {BUNDLE_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{meta_path} is not an optembed bundle description")
    if meta.get("version") != VERSION:
        raise ArtifactError(f"{meta_path} has bundle version {meta.get('version')}, expected {VERSION}")
    for key in ("preprocessing", "graphs", "files"):
        if key not in meta:
            raise ArtifactError(f"{meta_path} lacks {key!r}")
    bundle = Bundle(folder, meta)
    if verify:
        for rel, record in meta["files"].items():
            path = bundle.path(rel)
            if not path.is_file():
                raise ArtifactError(f"bundle file missing: {path}")
            if path.stat().st_size != record["size"] or file_sha256(path) != record["sha256"]:
                raise ArtifactError(f"bundle file {path} does not match bundle.json (changed or truncated); export the bundle again")
    return bundle


def onnx_scorer(path: Path, threads: int | None = None) -> Scorer:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("--runtime onnx needs onnxruntime: pip install 'optembed[export]' (or --runtime torch)") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise ArtifactError(f"cannot load {path}: {str(exc).splitlines()[0][:300]}") from None
    name = session.get_inputs()[0].name

    def score(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, prob = session.run(None, {name: np.ascontiguousarray(ids, dtype=np.int64)})
        return logit, prob

    return score


def check_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` archive holding anything but plain tensors, the JSON graph and the
    sample inputs (which must load with ``weights_only``): what ``torch.export.load`` would
    otherwise unpickle."""
    import io

    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                inner = name.split("/", 1)[1] if "/" in name else name
                if not inner.startswith(_PT2_MEMBERS):
                    raise ArtifactError(f"refusing to read {path}: it holds {name} (not a plain tensor or graph)")
                if inner.endswith("_config.json"):
                    config = json.loads(archive.read(name)).get("config", {})
                    if any(meta.get("use_pickle") for meta in config.values()):
                        raise ArtifactError(f"refusing to read {path}: it holds pickled objects")
                if inner.startswith("data/sample_inputs/"):
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def torch_scorer(path: Path) -> Scorer:
    import torch

    check_pt2(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ArtifactError(f"cannot load {path}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}") from None
    module = program.module()

    def score(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logit, prob = module(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)))
        return logit.numpy(), prob.numpy()

    return score
