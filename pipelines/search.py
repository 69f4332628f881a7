"""The ``search`` stage: evolutionary search of one embedding width per field on a supernet.

Fitness is the validation AUC of the supernet under its frozen row mask m_e* and the
candidate's prefix widths (no training). Outputs: ``candidates.parquet`` (every member of every
generation with its widths, parameters and AUC), ``convergence.parquet`` (one row per
generation) and ``best.json`` (the best widths by field name, read by ``retrain``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from optembed.errors import ArtifactError, ConfigError, TrainingError
from optembed.evolution import EvolutionConfig, evolve
from optembed.evolution.fitness import BatchedScorer
from optembed.models.base import mode_flags
from optembed.models.checkpoint import load_model, read_model_payload
from optembed.progress import NULL, Reporter
from optembed.training.device import resolve_device
from optembed.training.evaluate import require_rankable
from optembed.validation import check_search_memory
from pipelines.data import load_dataset
from pipelines.stage import execute
from pipelines.store import Manifest, Store
from pipelines.supernet import load_row_mask

STAGE = "search"
VERSION = 1
UPSTREAM = "supernet"


@dataclass
class SearchStage:
    source: str | None = None  # supernet artifact (fingerprint prefix or folder); None = newest
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    device: str = "auto"
    rows_per_pass: int | None = None  # rows per backbone call; None: by device (CPUs prefer cache-sized calls)
    block: int = 16  # columns per block of the first layer shared by all candidates (0: stack the candidates)
    amp: str = "none"
    force: bool = False

    def validate(self) -> None:
        self.evolution.validate()
        if self.rows_per_pass is not None and self.rows_per_pass < 1:
            raise ConfigError("--rows-per-pass must be positive")
        if self.block < 0:
            raise ConfigError(f"--block must be 0 (stack the candidates) or positive, got {self.block}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"unknown --amp '{self.amp}'; choose none or bf16")


def _supernet_for_search(store: Store, source: str | None) -> tuple[Manifest, dict[str, Any]]:
    sn = store.resolve(source, UPSTREAM)
    payload = read_model_payload(sn.output("model"))
    _, sample_dims = mode_flags(payload["mode"])
    if not sample_dims:
        raise ConfigError(
            f"supernet {sn.fingerprint} was trained with --mode {payload['mode']}, without random widths, so its "
            "widths cannot be searched; train one with --mode optembed or --mode dims-only"
        )
    return sn, payload


def run(config: SearchStage, store: Store, reporter: Reporter = NULL) -> Manifest:
    config.validate()
    evo = config.evolution
    sn, payload = _supernet_for_search(store, config.source)
    pre_fp = payload.get("preprocess") or sn.upstream.get("preprocess")
    pre = store.lookup("preprocess", pre_fp) if pre_fp else None
    if pre is None:
        raise ArtifactError(f"the preprocess artifact {pre_fp} of supernet {sn.fingerprint} is missing from {store.root}")
    mask_info = load_row_mask(sn)
    kept = np.asarray(mask_info["kept_per_field"], dtype=np.int64)
    total_rows = int(sum(mask_info["rows_per_field"]))
    dim = int(payload["model_config"]["embed_dim"])
    budget = evo.budget(total_rows, dim)
    if budget is not None and int(kept.sum()) > budget:
        raise ConfigError(
            f"no candidate can meet the budget: width 1 in every field already needs {int(kept.sum()):,} embedding "
            f"parameters under supernet {sn.fingerprint}'s row mask, above the budget of {budget:,}"
        )
    device = resolve_device(config.device)
    val_rows = int(pre.metrics.get("rows_val") or 0)
    check_search_memory(evo.population, evo.generations, len(kept), val_rows, device)
    params = {"evolution": evo.to_dict(), "amp": config.amp}

    def build(tmp: Path, manifest: Manifest) -> None:
        model, payload = load_model(sn.output("model"), device)
        if mask_info["pruned"]:
            model.set_row_mask(mask_info["mask"])
        data = load_dataset(pre, device, splits=("val",))
        val = data.splits["val"]
        require_rankable(val, purpose="rank the candidates")
        rows_per_pass = config.rows_per_pass or (262_144 if device.type == "cuda" else 4096)
        scorer = BatchedScorer(
            model, val, device, rows_per_pass=rows_per_pass, amp=config.amp, block=config.block or None
        )
        full_auc = float(scorer(np.full((1, model.n_fields), dim, dtype=np.int64))[0])
        task = reporter.task("search", total=evo.generations + 1, unit="gen")

        def progress(row: dict[str, Any]) -> None:
            task.update(description=f"search: generation {row['generation']}, best val AUC {row['best_auc']:.5f}")
            task.advance(1)

        started = time.perf_counter()
        result = evolve(scorer, kept, dim, evo, total_rows=total_rows, on_generation=progress)
        seconds = time.perf_counter() - started
        task.close()
        if not np.isfinite(result.best_score):
            raise TrainingError("every candidate scored NaN; the supernet's outputs are not finite")
        names = data.field_names
        history = [{**row, "sparsity": 1.0 - row["params"] / (total_rows * dim)} for row in result.history]
        pq.write_table(pa.Table.from_pylist(history), tmp / "candidates.parquet")
        pq.write_table(pa.Table.from_pylist(result.convergence), tmp / "convergence.parquet")
        best = {
            "widths": {n: int(w) for n, w in zip(names, result.best)},
            "val_auc": result.best_score,
            "params": result.best_params,
            "sparsity": 1.0 - result.best_params / (total_rows * dim),
            "full_width_val_auc": full_auc,
            "supernet": sn.fingerprint,
        }
        (tmp / "best.json").write_text(json.dumps(best, indent=2) + "\n")
        manifest.outputs = {"candidates": "candidates.parquet", "convergence": "convergence.parquet", "best": "best.json"}
        generations = len(result.convergence)
        manifest.metrics = {
            "best_val_auc": result.best_score,
            "full_width_val_auc": full_auc,
            "best_params": result.best_params,
            "sparsity": best["sparsity"],
            "row_sparsity": 1.0 - int(kept.sum()) / total_rows,
            "mean_width": float(np.average(result.best, weights=np.maximum(kept, 1))),
            "evaluations": result.evaluations,
            "generations": generations - 1,
            "seconds": round(seconds, 3),
            "seconds_per_generation": round(seconds / max(generations, 1), 4),
            "val_rows": len(val),
            "device": str(device),
        }

    return execute(store, STAGE, VERSION, params, {UPSTREAM: sn}, build, force=config.force)


def read_convergence(manifest: Manifest) -> list[dict[str, Any]]:
    if manifest.stage != STAGE:
        raise ArtifactError(f"artifact {manifest.fingerprint} is a {manifest.stage} artifact, expected search")
    return pq.read_table(manifest.output("convergence")).to_pylist()
