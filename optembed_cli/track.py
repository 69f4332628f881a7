"""``--track mlflow``: the tracker opened before a stage runs (so that a missing package or an
unreachable backend stops the command before any work) and each finished artifact logged.

Nothing here imports MLflow unless the flag is given (:mod:`pipelines.tracking` does, then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optembed_cli import ui
from pipelines.store import Manifest

if TYPE_CHECKING:
    from pipelines.tracking import Tracker


def open_tracker(track: object) -> Tracker | None:
    """The tracker of ``--track`` (None without the flag); fails with one line when MLflow is missing."""
    if track is None:
        return None
    from pipelines.tracking import Tracker

    return Tracker()


def log(tracker: Tracker | None, manifest: Manifest, parent: str | None = None, name: str | None = None) -> None:
    """Log ``manifest`` as a run (nested under ``parent``) and say where it went, on stderr."""
    if tracker is None:
        return
    run_id = tracker.log_manifest(manifest, parent=parent, name=name)
    ui.info(f"mlflow: {name or manifest.stage} logged as run {run_id} ({tracker.uri})")
