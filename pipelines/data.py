"""Loading a preprocess artifact's splits as tensors for training and evaluation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.data.labels import label_columns, task_names
from optembed.data.selection import held_count
from optembed.data.stream import DEFAULT_BUFFER_ROWS, StreamSplit
from optembed.data.tensors import SplitTensors, fits_on_device, read_split
from optembed.errors import ArtifactError, ConfigError
from optembed.models.config import ModelConfig
from optembed.training import recipe
from optembed.training.config import TrainConfig
from optembed.validation import check_training_memory
from pipelines.store import Manifest

SPLITS = ("train", "val", "test")
HOST_MEMORY_FRACTION = 0.5  # a split is loaded whole while it takes at most this share of free host memory


@dataclass
class Dataset:
    schema: dict[str, Any]
    splits: dict[str, SplitTensors]  # or StreamSplit: the same interface, read from Parquet as it goes
    streamed: list[str] = field(default_factory=list)  # the splits that stream

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.schema["fields"]]

    @property
    def tasks(self) -> list[str]:
        """The tasks' names, the primary first (one name for a one-label artifact)."""
        return task_names(self.schema)

    @property
    def cardinalities(self) -> list[int]:
        return [int(f["cardinality"]) for f in self.schema["fields"]]


def read_schema(manifest: Manifest) -> dict[str, Any]:
    if manifest.stage != "preprocess":
        raise ArtifactError(f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected preprocess")
    return json.loads(manifest.output("schema").read_text())


def load_dataset(
    manifest: Manifest,
    device: torch.device,
    splits: tuple[str, ...] = SPLITS,
    max_rows: int | None = None,
    stream: bool = False,
    buffer_rows: int = DEFAULT_BUFFER_ROWS,
) -> Dataset:
    """Read the requested splits and place them on ``device``: on the device when they fit, else
    (CUDA) in pinned host memory when that fits, else - and always with ``stream`` - as a
    :class:`StreamSplit` read from the Parquet file in chunks of ``buffer_rows`` rows."""
    schema = read_schema(manifest)
    names = [f["name"] for f in schema["fields"]]
    labels = label_columns(schema)
    tasks = task_names(schema) if len(labels) > 1 else []
    loaded: dict[str, Any] = {}
    streamed = []
    for s in splits:
        path = manifest.output(s)
        rows = _parquet_rows(path) if path.is_file() else 0
        rows = rows if max_rows is None else min(rows, max_rows)
        if stream or not fits_in_memory(rows * 4 * (len(names) + len(labels)), device):
            loaded[s] = StreamSplit(
                path, names, labels[0], buffer_rows=buffer_rows, hi=rows, extra_labels=tuple(labels[1:]), tasks=tuple(tasks)
            )
            streamed.append(s)
        else:
            labelled = labels[0] if len(labels) == 1 else labels
            loaded[s] = read_split(path, names, labelled, max_rows=max_rows, tasks=tasks).to(device)
    return Dataset(schema, loaded, streamed)


def _parquet_rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(f"cannot read split {path} (truncated or not Parquet: {str(exc).splitlines()[0][:200]}); rerun preprocess with --force") from None


def fits_in_memory(nbytes: int, device: torch.device) -> bool:
    """Whether a split of ``nbytes`` is loaded whole: it fits the device's budget, or (CUDA) pinned
    host memory's. The host's budget is shared by the processes of a data-parallel run on it."""
    if device.type == "cuda" and fits_on_device(nbytes, device):
        return True
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return nbytes <= HOST_MEMORY_FRACTION * free_host_bytes() / ranks_here


def free_host_bytes() -> int:
    """Available host memory (``MemAvailable``; the physical size where that is unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


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


def resolve_training(
    manifest: Manifest, train: TrainConfig, model: ModelConfig, device: torch.device, held_out: float = 0.0
) -> tuple[TrainConfig, list[str]]:
    """``train`` with its auto options (batch size 0, embedding L2 None) sized from the
    preprocess artifact's training rows (less the share ``held_out`` of them that the training does
    not see: a supernet's selection split), checked to fit the device (:func:`check_training_fits`),
    and the note that says what was chosen (for the stage's manifest; empty when nothing was auto)."""
    rows = int(manifest.metrics.get("rows_train", 0))
    rows -= held_count(rows, held_out)
    resolved, note = recipe.resolve(train, rows)
    check_training_fits(manifest, resolved, model, device)
    return resolved, [] if note is None else [note]


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
