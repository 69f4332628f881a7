"""Loading a preprocess artifact's splits as tensors for training and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from optembed.data.tensors import SplitTensors, read_split
from optembed.errors import ArtifactError
from pipelines.store import Manifest

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    schema: dict[str, Any]
    splits: dict[str, SplitTensors]

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.schema["fields"]]

    @property
    def cardinalities(self) -> list[int]:
        return [int(f["cardinality"]) for f in self.schema["fields"]]


def read_schema(manifest: Manifest) -> dict[str, Any]:
    if manifest.stage != "preprocess":
        raise ArtifactError(f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected preprocess")
    return json.loads(manifest.output("schema").read_text())


def load_dataset(
    manifest: Manifest, device: torch.device, splits: tuple[str, ...] = SPLITS, max_rows: int | None = None
) -> Dataset:
    """Read the requested splits and place them on ``device`` (pinned host memory if too big)."""
    schema = read_schema(manifest)
    names = [f["name"] for f in schema["fields"]]
    loaded = {s: read_split(manifest.output(s), names, max_rows=max_rows).to(device) for s in splits}
    return Dataset(schema, loaded)
