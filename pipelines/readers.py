"""Artifact readers and parameter helpers shared by the stages (one place, so a stage never
imports another stage's module for them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from optembed.errors import ArtifactError, ConfigError
from optembed.masks.fold import split_id_counts
from optembed.safe_load import FIX, expect_dict, load_tensor_file
from optembed.training.config import TrainConfig
from pipelines.data import load_dataset, read_id_counts
from pipelines.store import Manifest, Store

MODEL_OUTPUT = {"retrain": "compact", "compress": "model", "baseline": "model"}  # each trained stage's model file
ROW_MASK_KEYS = ("mask", "kept_per_field", "rows_per_field", "thresholds", "pruned")


def train_params(cfg: TrainConfig) -> dict[str, Any]:
    """Training options that change the result (:meth:`TrainConfig.to_params`: not the speed
    knobs; the later options only while they differ from what their absence meant)."""
    return cfg.to_params()


def load_row_mask(manifest: Manifest) -> dict[str, Any]:
    if manifest.stage != "supernet":
        raise ArtifactError(f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected supernet")
    return read_row_mask_file(manifest.output("row_mask"))


def read_row_mask_file(path: Path) -> dict[str, Any]:
    """A ``row_mask.pt`` (supernet or search): mask, kept and total rows per field, thresholds."""
    info = expect_dict(load_tensor_file(path, "row mask file"), path, "row mask file", ROW_MASK_KEYS)
    if not isinstance(info["mask"], torch.Tensor) or info["mask"].dtype != torch.bool:
        raise ArtifactError(f"row mask file {path} holds no boolean mask; {FIX}")
    return info


def load_selection(manifest: Manifest) -> torch.Tensor | None:
    """The training rows a supernet held out of its training for the search (``None``: none)."""
    if "selection" not in manifest.outputs:
        return None
    path = manifest.output("selection")
    info = expect_dict(load_tensor_file(path, "selection file"), path, "selection file", ("rows", "train_rows"))
    rows = info["rows"]
    if not isinstance(rows, torch.Tensor) or rows.dtype != torch.long or rows.dim() != 1:
        raise ArtifactError(f"selection file {path} holds no row indices; {FIX}")
    return rows


def search_row_mask(search: Manifest, supernet: Manifest) -> dict[str, Any]:
    """The row mask a search artifact settled on: its own row levels, else its supernet's m_e*."""
    if "row_mask" in search.outputs:
        return read_row_mask_file(search.output("row_mask"))
    return load_row_mask(supernet)


def resolve_chain(store: Store, manifest: Manifest) -> dict[str, Manifest]:
    """The artifact and all of its ancestors, by stage (not a re-training's teacher: its own chain
    would shadow the artifact's supernet and search)."""
    chain = {manifest.stage: manifest}
    frontier = [manifest]
    while frontier:
        current = frontier.pop()
        for key, fp in current.upstream.items():
            if key.endswith("#teacher"):
                continue  # a distillation's teacher is an input of the training, not an ancestor of its data or masks
            stage = key.split("#")[0]
            found = store.lookup(stage, fp)
            if found is None:
                raise ArtifactError(f"upstream {stage} artifact {fp} of {current.stage} {current.fingerprint} is missing")
            chain.setdefault(stage, found)
            frontier.append(found)
    return chain


def read_best_widths(search: Manifest, field_names: list[str]) -> list[int]:
    best = json.loads(search.output("best").read_text())
    widths = best["widths"]
    if isinstance(widths, dict):
        missing = [n for n in field_names if n not in widths]
        if missing:
            raise ArtifactError(f"search artifact {search.fingerprint} has no width for {', '.join(missing[:5])}")
        return [int(widths[n]) for n in field_names]
    if len(widths) != len(field_names):
        raise ArtifactError(f"search artifact {search.fingerprint} has {len(widths)} widths for {len(field_names)} fields")
    return [int(w) for w in widths]


def search_fold_counts(
    store: Store, search: Manifest, cardinalities: Sequence[int], device: torch.device
) -> torch.Tensor | None:
    """The counts a search folded its pruned rows with (``None``: it did not fold): a search with
    row levels folds with the training counts of its preprocess artifact, or, when that has none,
    with the validation split's id counts (as :func:`optembed.evolution.row_levels.search_row_levels`)."""
    if "row_mask" not in search.outputs:
        return None
    pre = resolve_chain(store, search)["preprocess"]
    counts = training_counts(pre)
    if counts is not None:
        return counts.to(device)
    return split_id_counts(load_dataset(pre, device, splits=("val",)).splits["val"], cardinalities, device)


def training_counts(pre: Manifest) -> torch.Tensor | None:
    """The training counts of every id of a preprocess artifact (``None`` when it has none): the
    weights of the row levels' folds and rankings."""
    try:
        return read_id_counts(pre, purpose="the row levels")
    except ConfigError:
        return None
