"""Loading a preprocess artifact's splits as tensors for training and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from optembed.data.tensors import SplitTensors, read_split
from optembed.errors import ArtifactError, ConfigError
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
from optembed.validation import check_training_memory
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


def read_id_counts(manifest: Manifest, purpose: str = "--freq-lr") -> torch.Tensor:
    """Training counts of every id, ``LongTensor(total cardinality)`` in the shared table's row
    order (field by field, id 0 = OOV, 1 = missing, 2.. kept values), from ``vocab/<field>.parquet``.

    Raises :class:`ConfigError` (one line, starting with ``purpose``) when the artifact has no
    usable counts.
    """
    import pyarrow.parquet as pq

    schema = read_schema(manifest)
    if manifest.path is None or "vocab" not in manifest.outputs:
        raise ConfigError(f"{purpose} needs id counts, but preprocess artifact {manifest.fingerprint} has no vocabularies")
    parts = []
    for f in schema["fields"]:
        card = int(f["cardinality"])
        rel = f.get("vocab")
        path = manifest.file(rel, must_exist=False) if isinstance(rel, str) and rel else None
        if path is None or not path.is_file():
            raise ConfigError(
                f"{purpose} needs id counts, but preprocess artifact {manifest.fingerprint} has no vocabulary "
                f"file for field {f['name']}"
            )
        table = pq.read_table(path)
        if "id" not in table.column_names or "count" not in table.column_names:
            raise ConfigError(f"{purpose} needs id counts, but {path} has no id/count columns")
        ids = torch.as_tensor(table.column("id").to_numpy(zero_copy_only=False).astype("int64"))
        counts = torch.as_tensor(table.column("count").fill_null(0).to_numpy(zero_copy_only=False).astype("int64"))
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= card):
            raise ConfigError(f"{purpose}: {path} has ids outside 0..{card - 1}")
        out = torch.zeros(card, dtype=torch.long)
        out.index_add_(0, ids, counts)
        parts.append(out)
    return torch.cat(parts)


def check_training_fits(
    manifest: Manifest, train: TrainConfig, model: ModelConfig, device: torch.device
) -> None:
    """Refuse, before any data is loaded, batch sizes and model sizes whose memory alone exceeds
    the device's (see :func:`optembed.validation.training_bytes`)."""
    fields = read_schema(manifest)["fields"]
    rows = sum(int(f["cardinality"]) for f in fields)
    check_training_memory(
        train.batch_size, train.eval_batch_size, rows, len(fields), model.embed_dim, model.mlp_dims, device
    )
