"""A re-training's teacher: a trained retrain artifact of the same data, whose probabilities are
soft labels beside the labels (``--teacher ID``, weight ``--distill``; see
:mod:`optembed.training.distill`). The teacher is an upstream of the trained artifact under
:data:`TEACHER_KEY`, so the artifact's fingerprint depends on it; it is not an ancestor of the
artifact's data or masks (:func:`pipelines.readers.resolve_chain` does not follow it)."""

from __future__ import annotations

import torch

from optembed.errors import ArtifactError, ConfigError
from optembed.models.checkpoint import load_model
from optembed.training.distill import Teacher
from pipelines.readers import resolve_chain
from pipelines.store import Manifest, Store

TEACHER_KEY = "retrain#teacher"


def resolve(store: Store, teacher: str | None, distill: float, pre: Manifest) -> Manifest | None:
    """The teacher artifact ``teacher`` (id prefix or folder; None: no teacher), checked: a retrain
    artifact of the preprocess ``pre``, given together with a weight ``distill`` > 0."""
    if teacher is None:
        if distill > 0:
            raise ConfigError(f"--distill {distill:g} needs a teacher: --teacher ID (a retrain artifact of the same data)")
        return None
    if distill == 0:
        raise ConfigError("--teacher needs a distillation weight above 0 (--distill)")
    found = store.resolve(teacher, ("retrain",))
    theirs = resolve_chain(store, found)["preprocess"]
    if theirs.fingerprint != pre.fingerprint:
        raise ArtifactError(
            f"teacher retrain {found.fingerprint} was trained on preprocess {theirs.fingerprint}, this training reads "
            f"preprocess {pre.fingerprint}; a teacher must have seen the same data and ids"
        )
    return found


def load(manifest: Manifest | None, device: torch.device) -> Teacher | None:
    """The teacher's model, frozen on ``device`` (None without a teacher)."""
    if manifest is None:
        return None
    model, _ = load_model(manifest.output("model"))
    return Teacher(model, device)


def upstream(manifest: Manifest | None) -> dict[str, Manifest]:
    """The teacher as an upstream entry (empty without one)."""
    return {TEACHER_KEY: manifest} if manifest is not None else {}


def metrics(manifest: Manifest | None, distill: float) -> dict[str, object]:
    """The manifest metrics naming the teacher and its weight (empty without one)."""
    return {"teacher": manifest.fingerprint, "distill": distill} if manifest is not None else {}
