"""Shared pieces of the model benchmarks: Criteo-shaped tensors and RESULTS.md sections."""

from __future__ import annotations

import datetime as dt
import platform
import re
from pathlib import Path

import numpy as np
import torch

from optembed.data.synth import CRITEO_CAT_SIZE, CRITEO_INT_SIZE
from optembed.data.tensors import SplitTensors

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# Criteo-like per-field vocabularies (+ OOV and missing ids): 39 fields, ~1.1M rows in all.
CARDINALITIES = [s + 2 for s in CRITEO_INT_SIZE + CRITEO_CAT_SIZE]


def criteo_shaped(rows: int, seed: int = 0, cardinalities: list[int] | None = None) -> SplitTensors:
    """Zipf-like ids per field and labels from a planted first-order logistic model (~25% positives)."""
    cards = cardinalities or CARDINALITIES
    rng = np.random.default_rng(seed)
    cols, logit = [], np.zeros(rows)
    effect_rng = np.random.default_rng(1234)  # the same planted model for every split
    for f, card in enumerate(cards):
        u = rng.random(rows)
        ids = np.minimum((card ** u).astype(np.int64) - 1, card - 1)  # log-uniform ~ Zipf(1)
        cols.append(ids)
        effect = effect_rng.standard_normal(card) * (0.6 if f % 3 else 0.0)
        logit += effect[ids] / np.sqrt(len(cards) / 3)
    logit += -1.3
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return SplitTensors(torch.from_numpy(np.stack(cols, axis=1)), torch.from_numpy(y))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import os

    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, python {platform.python_version()}"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
