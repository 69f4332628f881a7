"""Options shared by the stage commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.store import ENV_VAR, Store

ArtifactsOpt = Annotated[
    Path | None,
    typer.Option("--artifacts", help=f"Artifact store folder (default: ${ENV_VAR} or ./artifacts).", show_default=False),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if an identical artifact exists.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the manifest as JSON on stdout.")]
FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="Upstream artifact: fingerprint prefix or folder (default: the newest).", show_default=False),
]


def open_store(artifacts: Path | None) -> Store:
    return Store(artifacts)


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None
