"""A deployment bundle: the model, its graphs, the preprocessing spec and ``bundle.json``, in one folder.

Layout (every path relative, so the folder can be copied anywhere)::

    bundle.json            who made it (user, host, time, optembed version), versions, source
                           fingerprints, test AUC at export, inputs/outputs, the preprocessing
                           spec, every file's size and sha256, and ``bundle_sha256``: the hash of
                           all of that (its canonical JSON without ``bundle_sha256`` itself); a
                           model of several tasks adds ``tasks``, their names, the primary first
    README.md              scoring rows in plain Python (onnxruntime, torch)
    model.pt               the model in optembed's own format: tensors and plain values, read
                           with ``torch.load(weights_only=True)`` (no code can run)
    model.onnx             the network (ONNX), when exported
    model.pt2              the network (torch.export program), when exported: for people who
                           trust the bundle's origin; optembed itself never deserializes it
    vocab/<field>.parquet  value -> id per field (id 0 = OOV, 1 = missing), plus ``row``: the
                           compact row a pruned model reads for that id

Opening a bundle (:func:`open_bundle`) checks ``bundle_sha256``, that the folder holds no link
(symbolic or hard) nor special file, every listed file's size and hash, and the graphs without
running them: the ONNX graph uses standard operator domains only and reads no weights from a
file the bundle does not list; the ``.pt2`` archive holds plain tensors and a JSON graph whose
symbolic-shape expressions follow a strict grammar and whose nodes call ATen operators only
(:func:`check_pt2`). The torch runtime rebuilds the serving network from ``model.pt`` with
optembed's own code (:func:`model_scorer`).

A model of one task gives ``(batch,)`` outputs; one of ``T`` tasks gives ``(batch, T)``, column
``t`` for task ``tasks[t]``, in a bundle of version 3 (:mod:`optembed.export.tasks`). Every scorer
checks that its network gives as many outputs per row as ``bundle.json`` lists tasks.

The hashes guard against damage and careless edits, not against someone who can write the
bundle: they can recompute every hash. Take bundles from people you trust, or compare
``bundle_sha256`` with the one the maker reports through another channel.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import socket
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from optembed.checksum import file_sha256
from optembed.errors import ArtifactError, ConfigError
from optembed.export.tasks import MULTITASK_VERSION, VERSION, Scorer, check_task_meta, checked_scorer, per_row, task_mismatch
from optembed.links import folder_problems

FORMAT = "optembed-bundle"
READ_VERSIONS = (VERSION, MULTITASK_VERSION)
BUNDLE_JSON = "bundle.json"
MODEL_FILE = "model.pt"
MODEL_KINDS = ("compact", "quantized")
GRAPH_FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
RUNTIMES = ("onnx", "torch")
# members a torch.export archive may hold; anything else (pickled objects, compiled code) is refused
_PT2_MEMBERS = (
    "data/weights/", "data/constants/tensor_", "data/constants/model_constants_config.json", "models/", "data/sample_inputs/", "archive_format",
    "archive_version", ".data/version", ".data/serialization_id", "byteorder", "extra/",
)
# The grammar of a symbolic-shape expression (``expr_str``, which torch.export's loader hands to
# sympy, i.e. to ``eval``): these names, symbol names, integers, quoted symbol names and operators.
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "FloorDiv", "CeilDiv", "CeilToInt",
    "FloorToInt", "PythonMod", "IntTrueDiv", "TruncToInt", "CleanDiv", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "And", "Or", "Not", "True", "False", "positive", "integer", "nonnegative", "oo",
})
_SYMBOL = re.compile(r"^[a-z]{1,3}[0-9]{1,9}$")
_EXPR_TOKEN = re.compile(r"\s*(?:([A-Za-z][A-Za-z0-9]*)|'([^']*)'|([0-9]{1,19})|(\*\*|[-+*/%(),=<>!]))")
_ATEN_TARGET = re.compile(r"^torch\.ops\.aten\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$|^_operator\.getitem$")
_SPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def file_records(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"size": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)} for n in sorted(names)}


def bundle_digest(meta: dict[str, Any]) -> str:
    """The sha256 of a bundle description's canonical JSON, without ``bundle_sha256`` itself."""
    body = {k: v for k, v in meta.items() if k != "bundle_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def made_by(version: str) -> dict[str, Any]:
    """Who makes a bundle: user, host, UTC time, optembed version (as the system reports them)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment nor the password database
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return {
        "user": user, "host": socket.gethostname(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "optembed": version,
    }


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

    @property
    def tasks(self) -> list[str]:
        """The tasks' names, the primary first; empty for a model of one task."""
        return list(self.meta.get("tasks", []))

    @property
    def n_tasks(self) -> int:
        return max(1, len(self.tasks))

    @property
    def digest(self) -> str:
        return str(self.meta["bundle_sha256"])

    def path(self, rel: str) -> Path:
        return _inside(self.folder, rel)

    def vocab(self, f: int) -> Path:
        return self.path(self.meta["preprocessing"]["fields"][f]["vocab"])

    def default_runtime(self) -> str:
        if "onnx" in self.graphs and _has_module("onnxruntime"):
            return "onnx"
        return "torch"

    def scorer(self, runtime: str | None = None, threads: int | None = None) -> Scorer:
        runtime = runtime or self.default_runtime()
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown --runtime {runtime!r}; choose onnx or torch")
        if runtime == "torch":
            model = self.meta["model_file"]
            path = self.path(model["path"])
            return checked_scorer(model_scorer(path, model["kind"], self.field_names, threads, self.n_tasks), self.n_tasks, path)
        if "onnx" not in self.graphs:
            have = ", ".join(self.graphs) or "none"
            raise ConfigError(f"the bundle {self.folder} has no onnx graph (graphs: {have}); export it with --format onnx or all")
        path = self.path(self.graphs["onnx"])
        return checked_scorer(onnx_scorer(path, threads, set(self.meta["files"]), self.n_tasks), self.n_tasks, path)


def _has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _inside(folder: Path, rel: str) -> Path:
    pure = PurePosixPath(rel) if isinstance(rel, str) else None
    if pure is None or not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ArtifactError(f"bundle {folder} names a file outside itself ({rel!r})")
    return folder / pure


def open_bundle(folder: Path, verify: bool = True) -> Bundle:
    """Read ``folder/bundle.json``; check its own hash, the folder for links, every file it lists
    (size, sha256) and the graphs (statically: nothing is run)."""
    folder = Path(folder).resolve()  # the folder named; what lies inside it must not be a link
    meta_path = folder / BUNDLE_JSON
    if not os.path.lexists(meta_path):
        raise ArtifactError(f"{folder} is not an export bundle (no {BUNDLE_JSON})")
    links = folder_problems(folder)
    if links:
        raise ArtifactError(f"bundle file {folder / links[0][0]} {links[0][1]}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{meta_path} is not an optembed bundle description")
    if meta.get("version") not in READ_VERSIONS:
        raise ArtifactError(
            f"{meta_path} has bundle version {meta.get('version')}, this optembed reads versions "
            f"{' and '.join(map(str, READ_VERSIONS))}; export it again with this one"
        )
    if meta.get("bundle_sha256") != bundle_digest(meta):
        raise ArtifactError(f"{meta_path} was modified after it was written (its content does not match its bundle_sha256); export the bundle again")
    _check_meta(meta, meta_path)
    bundle = Bundle(folder, meta)
    if verify:
        for rel, record in meta["files"].items():
            path = bundle.path(rel)
            if not path.is_file():
                raise ArtifactError(f"bundle file missing: {path}")
            if path.stat().st_size != record["size"] or file_sha256(path) != record["sha256"]:
                raise ArtifactError(f"bundle file {path} does not match bundle.json (changed or truncated); export the bundle again")
        listed = set(meta["files"])
        for kind, rel in bundle.graphs.items():
            if rel not in listed:
                raise ArtifactError(f"{meta_path} names the {kind} graph {rel}, which it does not list with a hash")
            if kind == "pt2":
                check_pt2(bundle.path(rel))
            elif _has_module("onnx"):
                check_onnx(bundle.path(rel), listed)
        if meta["model_file"]["path"] not in listed:
            raise ArtifactError(f"{meta_path} names the model file {meta['model_file']['path']}, which it does not list with a hash")
    return bundle


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """The description has the shape the readers rely on (else one error naming it)."""

    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"malformed {path}: {what}")

    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or not isinstance(pre.get("format"), str) or not isinstance(pre.get("fields"), list) or not pre["fields"]:
        raise bad("no preprocessing spec with a format and fields")
    if not isinstance(pre.get("options", {}), dict):
        raise bad("preprocessing options are not a table")
    for f in pre["fields"]:
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in ("name", "kind", "vocab")):
            raise bad("a field lacks its name, kind or vocabulary")
        if not all(type(f.get(k)) is int and f[k] >= 0 for k in ("oov_id", "missing_id")):
            raise bad(f"field {f['name']} has no integer oov_id / missing_id")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and type(r.get("size")) is int and isinstance(r.get("sha256"), str) for r in files.values()
    ):
        raise bad("'files' does not give every file's size and sha256")
    graphs = meta.get("graphs")
    if not isinstance(graphs, dict) or not all(k in GRAPH_FILES and isinstance(v, str) for k, v in graphs.items()):
        raise bad("'graphs' names unknown graph kinds")
    model = meta.get("model_file")
    if not isinstance(model, dict) or not isinstance(model.get("path"), str) or model.get("kind") not in MODEL_KINDS:
        raise bad("'model_file' does not name the model file and its kind")
    if not isinstance(meta.get("inputs"), list) or not meta["inputs"] or not isinstance(meta["inputs"][0], dict):
        raise bad("no inputs")
    check_task_meta(meta, bad)


# -- the torch runtime: the model rebuilt with optembed's code --------------------------------------


def model_scorer(
    path: Path, kind: str, field_names: list[str] | None = None, threads: int | None = None, tasks: int | None = None,
) -> Scorer:
    """Score with the model file ``path`` (``kind`` compact or quantized, read with
    ``weights_only``) wrapped in :class:`~optembed.export.graph.ServingNet`; with ``tasks``, a
    model predicting another number of tasks is refused."""
    import torch

    from optembed.export.graph import ServingNet
    from optembed.models.checkpoint import load_model

    model, payload = load_model(path)
    if model.embedder.kind != kind:
        raise ArtifactError(f"the model file {path} holds a {model.embedder.kind} model, the bundle says {kind}")
    names = list(payload["field_names"])
    if field_names is not None and names != list(field_names):
        raise ArtifactError(f"the model file {path} has other fields than the bundle's preprocessing ({len(names)} vs {len(field_names)})")
    if tasks is not None and model.tasks != tasks:
        raise task_mismatch(path, model.tasks, tasks)
    net = ServingNet(model, names).eval()
    if threads:
        torch.set_num_threads(threads)

    def score(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logit, prob = net(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)))
        return logit.numpy(), prob.numpy()

    return score


# -- ONNX -------------------------------------------------------------------------------------------


def _onnx_graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _onnx_graphs(attr.g)
            for sub in attr.graphs:
                yield from _onnx_graphs(sub)


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def check_onnx(path: Path, listed: set[str]) -> None:
    """Refuse an ONNX graph that uses an operator domain other than ONNX's own (a custom
    operator) or reads weights from a file other than one the bundle lists beside it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's decode errors
        raise ArtifactError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    local = {f.domain for f in model.functions}
    for opset in model.opset_import:
        if opset.domain not in ONNX_DOMAINS and opset.domain not in local:
            raise ArtifactError(f"refusing to read {path}: it imports the custom operator domain {opset.domain!r}")
    graphs = [g for g in _onnx_graphs(model.graph)]
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    for node in nodes:
        if node.domain not in ONNX_DOMAINS and node.domain not in local:
            raise ArtifactError(f"refusing to read {path}: node {node.name or node.op_type} uses the custom operator domain {node.domain!r}")
    for graph in graphs:
        for tensor in _onnx_tensors(graph):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            where = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if where not in listed or "/" in where or "\\" in where or where in (BUNDLE_JSON, path.name):
                raise ArtifactError(
                    f"refusing to read {path}: tensor {tensor.name!r} reads its data from {where!r}, not a file the bundle lists beside it"
                )


def onnx_scorer(path: Path, threads: int | None = None, listed: set[str] | None = None, tasks: int | None = None) -> Scorer:
    """Score with the ONNX graph ``path`` in onnxruntime (checked by :func:`check_onnx` first
    when ``listed``, the bundle's files, is given); with ``tasks``, a graph whose declared
    outputs have another number of columns is refused."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("--runtime onnx needs onnxruntime: pip install 'optembed[export]' (or --runtime torch)") from None
    if listed is not None:
        if not _has_module("onnx"):
            raise ConfigError("checking an ONNX graph needs the onnx package: pip install 'optembed[export]' (or --runtime torch)")
        check_onnx(path, listed)
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
    if tasks is not None:
        for out in session.get_outputs():
            columns = per_row(list(out.shape or []))
            if columns != tasks and (columns is not None or tasks == 1):
                raise task_mismatch(path, "an unknown number of" if columns is None else columns, tasks)

    def score(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, prob = session.run(None, {name: np.ascontiguousarray(ids, dtype=np.int64)})
        return logit, prob

    return score


# -- the .pt2 archive: checked without deserializing it ---------------------------------------------


def check_expression(text: Any) -> bool:
    """Whether ``text`` is a symbolic-shape expression of the strict grammar (:data:`_EXPR_NAMES`,
    symbol names, integers, operators): nothing else may reach sympy's parser."""
    if not isinstance(text, str) or len(text) > 4000:
        return False
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            return True
        found = _EXPR_TOKEN.match(text, at)
        if found is None:
            return False
        name, quoted = found.group(1), found.group(2)
        if name is not None and name not in _EXPR_NAMES and not _SYMBOL.match(name):
            return False
        if quoted is not None and not _SYMBOL.match(quoted):
            return False
        at = found.end()
    return True


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(key, value)`` of the nested dicts in ``value``."""
    todo = [value]
    while todo:
        current = todo.pop()
        if isinstance(current, dict):
            for k, v in current.items():
                yield k, v
                todo.append(v)
        elif isinstance(current, list):
            todo.extend(current)


def _spec_types(text: Any) -> Iterator[Any]:
    try:
        spec = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        yield "(unreadable)"
        return
    for key, value in _walk(spec):
        if key == "type":
            yield value


def check_graph_json(graph: Any, path: Path, member: str) -> None:
    """Refuse a torch.export JSON graph with anything its loader would evaluate or import beyond
    plain ATen operators: expressions outside the grammar, other call targets, guard code, custom
    objects, foreign container types."""

    def refuse(what: str) -> ArtifactError:
        return ArtifactError(f"refusing to read {path}: {member} {what}")

    if not isinstance(graph, dict):
        raise refuse("is not a graph")
    if graph.get("guards_code"):
        raise refuse("holds guard code")
    constraints = graph.get("range_constraints", {})
    if not isinstance(constraints, dict) or not all(isinstance(k, str) and _SYMBOL.match(k) for k in constraints):
        raise refuse("has a range constraint that is not a symbol name")
    for key, value in _walk(graph):
        if key == "expr_str" and not check_expression(value):
            raise refuse(f"holds an expression outside the symbolic-shape grammar ({str(value)[:60]!r})")
        elif key == "target" and not (isinstance(value, str) and _ATEN_TARGET.match(value)):
            raise refuse(f"calls {str(value)[:60]!r}, not an ATen operator")
        elif key == "custom_obj_values" and value:
            raise refuse("holds custom objects")
        elif key in ("in_spec", "out_spec") and any(t not in _SPEC_TYPES for t in _spec_types(value)):
            raise refuse(f"has a {key} with a container type other than tuple, list or dict")


def check_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` archive holding anything but plain tensors, the JSON graph (checked by
    :func:`check_graph_json`) and sample inputs that load with ``weights_only``: what
    ``torch.export.load`` would otherwise unpickle or evaluate."""
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
                elif inner.startswith("models/") and inner.endswith(".json"):
                    check_graph_json(json.loads(archive.read(name)), path, name)
                elif inner.startswith("models/"):
                    raise ArtifactError(f"refusing to read {path}: it holds {name} (not a JSON graph)")
                if inner.startswith("data/sample_inputs/"):
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"cannot read {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def torch_scorer(path: Path) -> Scorer:
    """Score with the ``torch.export`` program ``path``. Only for a file this process has just
    written (export's own check) or one whose origin the caller trusts: ``torch.export.load``
    evaluates what the archive holds. :func:`check_pt2` runs first."""
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
