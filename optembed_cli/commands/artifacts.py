"""``optembed artifacts`` and ``optembed show``: browse the artifact store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from optembed_cli import ui
from optembed_cli.options import ArtifactsOpt, open_store

KEY_PARAMS = ("fmt", "model", "mode", "variant", "population", "generations", "init", "groups")
KEY_METRICS = ("rows", "val_auc", "test_auc", "best_val_auc", "sparsity", "test_logloss", "embedding_params")


@ui.handle_errors
def artifacts(
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    artifacts: ArtifactsOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print the manifests as a JSON list.")] = False,
) -> None:
    """List the artifacts in the store."""
    store = open_store(artifacts)
    found = store.list(stage)
    if json:
        import json as _json

        ui.out.print_json(_json.dumps([m.to_dict() | {"path": str(m.path)} for m in found]))
        return
    if not found:
        ui.out.print(f"no artifacts in {store.root}")
        return
    table = Table(title=f"artifacts in {store.root}", header_style="bold")
    for col in ("stage", "id", "created", "params", "metrics"):
        table.add_column(col)
    for m in found:
        params = ", ".join(f"{k}={_short(m.params[k])}" for k in KEY_PARAMS if k in m.params)
        metrics = ", ".join(f"{k}={ui.fmt(m.metrics[k])}" for k in KEY_METRICS if k in m.metrics)
        table.add_row(m.stage, m.fingerprint, m.created.replace("+00:00", "Z"), params, metrics)
    ui.out.print(table)


@ui.handle_errors
def show(
    ref: Annotated[str, typer.Argument(help="Artifact fingerprint prefix or folder.", show_default=False)],
    artifacts: ArtifactsOpt = None,
) -> None:
    """Print one artifact's manifest as JSON."""
    manifest = open_store(artifacts).resolve(ref)
    ui.out.print_json(manifest.to_json())


def _short(value: object) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    return ui.fmt(value)
