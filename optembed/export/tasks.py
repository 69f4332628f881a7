"""Bundles of several tasks: the outputs' shape, the ``tasks`` list of ``bundle.json``, and the check
that a network gives as many outputs per row as the bundle lists tasks.

A model of one task gives ``(batch,)`` logits and probabilities, in a bundle of :data:`VERSION`
without a ``tasks`` key (the format it always had); one of ``T`` tasks gives ``(batch, T)``,
column ``t`` for ``tasks[t]`` (the primary task first), in a bundle of :data:`MULTITASK_VERSION`,
which an optembed reading one task only refuses rather than misreads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optembed.errors import ArtifactError

VERSION = 2  # a model of one task
MULTITASK_VERSION = 3  # a model of several tasks: bundle.json lists them under "tasks"
_META = "bundle.json"  # beside the network files
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # ids (B, n) int64 -> (logit, probability): (B,) or (B, T)


def bundle_version(tasks: int) -> int:
    return VERSION if tasks == 1 else MULTITASK_VERSION


def task_mismatch(path: Path, columns: int | str, tasks: int) -> ArtifactError:
    """The one error of a network whose outputs per row disagree with ``bundle.json``'s tasks."""
    listed = f"{tasks} tasks" if tasks > 1 else "one task"
    return ArtifactError(
        f"{path} gives {columns} score{'' if columns == 1 else 's'} per row but {path.parent / _META} lists {listed}; "
        "export the bundle again"
    )


def output_shape(rows: int, tasks: int) -> tuple[int, ...]:
    """The shape of a scorer's outputs for ``rows`` rows: ``(rows,)`` for one task, else ``(rows, tasks)``."""
    return (rows,) if tasks == 1 else (rows, tasks)


def per_row(shape: Sequence[Any]) -> int | str | None:
    """Outputs per row of an output of ``shape`` (the batch first): 1 for ``(B,)``, ``T`` for
    ``(B, T)``, None for ``(B, T)`` of a symbolic ``T``, and the dimensions as text otherwise."""
    if len(shape) == 1:
        return 1
    if len(shape) == 2:
        return shape[1] if isinstance(shape[1], int) else None
    return "x".join(map(str, shape[1:])) or "no"


def checked_scorer(score: Scorer, tasks: int, path: Path) -> Scorer:
    """``score`` whose every answer is checked to have the shape ``tasks`` gives (else
    :func:`task_mismatch` naming ``path``, the network's file)."""

    def checked(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, prob = score(ids)
        want = output_shape(len(ids), tasks)
        for out in (logit, prob):
            if np.shape(out) != want:
                raise task_mismatch(path, per_row(np.shape(out)) or "?", tasks)
        return logit, prob

    return checked


def check_task_meta(meta: dict[str, Any], bad: Callable[[str], ArtifactError]) -> None:
    """A bundle of version 3 lists two or more distinct task names, one of version 2 none; the
    outputs' shapes, when given, agree with that count."""
    tasks = meta.get("tasks")
    if meta["version"] == VERSION:
        if tasks is not None:
            raise bad(f"a bundle of version {VERSION} (one task) lists tasks; a bundle of several tasks has version {MULTITASK_VERSION}")
        count = 1
    else:
        if not isinstance(tasks, list) or len(tasks) < 2 or not all(isinstance(t, str) and t for t in tasks) or len(set(tasks)) != len(tasks):
            raise bad(f"a bundle of version {MULTITASK_VERSION} lists no two or more distinct task names under 'tasks'")
        count = len(tasks)
    want = ["batch"] if count == 1 else ["batch", count]
    for out in meta.get("outputs") or []:
        if isinstance(out, dict) and "shape" in out and out["shape"] != want:
            raise bad(f"output {out.get('name')!r} has shape {out['shape']}, but the bundle lists {count} task(s) ({want})")
