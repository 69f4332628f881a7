"""What a practitioner tries before OptEmbed, trained on the quality benchmark's own splits.

Every alternative is a real artifact of the store (so a rerun reuses it) and is scored by the
``evaluate`` stage, like the chain's variants, so bytes are counted the same way:

- ``original-d<k>``: the Original with a smaller uniform width ``k`` (a plain smaller table); with
  a teacher (the run's Original, when the chain distils) it learns from it as the compressed
  variants do, and ``original-distilled`` is the Original of full width taught by itself: what
  distillation alone buys, without a smaller table;
- ``original-mc<k>``: the Original on a preprocess with ``--min-count k`` (a smaller vocabulary);
- ``<variant>+int8``: a re-trained variant's tables stored as row-wise int8 (``compress --method
  int8``: one uint8 code per element, a float32 scale and bias per row), what production
  serving stacks do with a table;
- ``peer``: FuxiCTR's DeepFM with its published recipe (``peer_fuxictr.py``) on the identical
  encoded splits, when FuxiCTR is installed (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from optembed.models.config import ModelConfig
from optembed.progress import NULL, Reporter
from optembed.training.config import TrainConfig
from pipelines import evaluate, preprocess, retrain
from pipelines.store import Manifest, Store

KEYS = ("test_auc", "test_logloss", "sparsity", "embedding_params", "embedding_bytes")


def _rows(store: Store, sources: list[str], device: str, reporter: Reporter) -> list[dict[str, Any]]:
    done = evaluate.run(evaluate.EvaluateStage(sources=sources, device=device, latency=False), store, reporter)
    return json.loads(done.output("metrics").read_text())["models"]


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "stage": row["stage"], **{k: row[k] for k in KEYS}}


def smaller_widths(store: Store, pre: Manifest, model: ModelConfig, train: TrainConfig, widths: list[int], device: str,
                   reporter: Reporter = NULL, teacher: str | None = None, distill: float = 0.0) -> dict[str, dict[str, Any]]:
    """``original-d<k>`` for every ``k`` in ``widths``: a fresh Original of width ``k``, distilled
    from ``teacher`` (weight ``distill``) when one is given (``k`` = the model's width:
    ``original-distilled``)."""
    out: dict[str, dict[str, Any]] = {}
    taught = replace(train, distill=distill) if teacher is not None else train
    for k in widths:
        stage = retrain.RetrainStage(source=pre.fingerprint, full=True, model=replace(model, embed_dim=k), train=taught,
                                     device=device, teacher=teacher)
        m = retrain.run(stage, store, reporter)
        name = "original-distilled" if k == model.embed_dim else f"original-d{k}"
        out[name] = _entry(_rows(store, [m.fingerprint], device, reporter)[0])
    return out


def higher_min_count(store: Store, data: Path, options: Any, model: ModelConfig, train: TrainConfig, min_count: int,
                     device: str, reporter: Reporter = NULL) -> dict[str, dict[str, Any]]:
    """``original-mc<k>``: the Original on a preprocess that keeps only values seen ``k`` times."""
    pre = preprocess.run(preprocess.PreprocessStage(data, replace(options, min_count=min_count)), store, reporter)
    stage = retrain.RetrainStage(source=pre.fingerprint, full=True, model=model, train=train, device=device)
    m = retrain.run(stage, store, reporter)
    return {f"original-mc{min_count}": _entry(_rows(store, [m.fingerprint], device, reporter)[0])}


def int8_tables(store: Store, sources: dict[str, str], device: str, reporter: Reporter = NULL) -> dict[str, dict[str, Any]]:
    """``<label>+int8`` for every ``label -> retrain fingerprint`` of ``sources``."""
    from pipelines import compress

    out: dict[str, dict[str, Any]] = {}
    for label, fp in sources.items():
        m = compress.run(compress.CompressStage(source=fp, method="int8", device=device), store, reporter)
        out[f"{label}+int8"] = _entry(_rows(store, [m.fingerprint], device, reporter)[0])
    return out


def peer(pre: Manifest, seed: int, device: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``peer``: FuxiCTR's DeepFM on ``pre``'s encoded splits; (rows, None) or ({}, why it was skipped)."""
    try:
        import peer_fuxictr
    except ImportError as exc:  # the module itself imports fuxictr lazily; a broken install lands here
        return {}, f"peer skipped: {exc}"
    try:
        peer_fuxictr.require_fuxictr()
    except Exception as exc:  # noqa: BLE001 (the reason is printed, the benchmark goes on)
        return {}, f"peer skipped: {exc}"
    result = peer_fuxictr.run(pre.path, seeds=[seed], device="cuda" if device == "cuda" else "cpu")[0]
    row = {"id": f"peer-seed{seed}", "stage": "peer", "test_auc": result["test_auc"], "test_logloss": result["test_logloss"],
           "sparsity": 0.0, "embedding_params": result["table_bytes"] // 4, "embedding_bytes": result["table_bytes"]}
    return {"peer": row}, None
