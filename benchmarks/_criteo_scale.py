"""Synthetic click data with a Criteo-scale vocabulary, written as a Parquet file.

``optembed synth`` draws ids from steep Zipf laws, so even millions of rows leave most of
Criteo's ~1M values unseen (1M rows give ~0.2M table rows). Here each of the 39 fields has
Criteo's dictionary size (``CRITEO_INT_SIZE`` + ``CRITEO_CAT_SIZE``, 1,046,633 values) and draws
its ids from a mixture: with probability ``head`` a log-uniform (Zipf(1)-like) popular head,
else uniform over the whole dictionary, so a million rows see most values. Two fields in three
are informative: each value carries a first-order effect and a rank-``RANK`` latent factor that
shrink with the value's popularity rank, and the label logit is

    bias + a * sum_f first_f[v_f] + b * sum_{f < g} <u_f[v_f], u_g[v_g]>

with ``a``, ``b`` scaled so both parts have the given spread and ``bias`` bisected to ~25%
positives. Columns: ``label`` (int8) then ``I1..I13``, ``C1..C26`` (int32 value ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from optembed.data.synth import CRITEO_CAT_SIZE, CRITEO_INT_SIZE

SIZES = list(CRITEO_INT_SIZE + CRITEO_CAT_SIZE)
NAMES = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
RANK = 4
FIRST_STD, PAIR_STD, POSITIVE = 1.0, 1.5, 0.25
HALF_RANK = 20.0  # popularity rank at which effects have shrunk by 1/sqrt(2)


def _ids(rng: np.random.Generator, size: int, n: int, head: float) -> np.ndarray:
    zipf = np.minimum((size ** rng.random(n)).astype(np.int64) - 1, size - 1)
    uniform = rng.integers(0, size, n)
    return np.where(rng.random(n) < head, zipf, uniform).astype(np.int32)


def _terms(ids: list[np.ndarray], first: list, factor: list) -> tuple[np.ndarray, np.ndarray]:
    n = len(ids[0])
    lin, total, squares = np.zeros(n), np.zeros((n, RANK)), np.zeros(n)
    for i, a, u in zip(ids, first, factor):
        if a is None:
            continue
        lin += a[i]
        v = u[i]
        total += v
        squares += (v * v).sum(1)
    return lin, 0.5 * ((total * total).sum(1) - squares)


def write(path: Path, rows: int, seed: int = 0, head: float = 0.5) -> dict[str, int]:
    """Write ``rows`` rows to ``path``; returns the dictionary size per field."""
    rng = np.random.default_rng(seed)
    first: list[np.ndarray | None] = []
    factor: list[np.ndarray | None] = []
    for f, size in enumerate(SIZES):
        if f % 3 == 0:  # noise field
            first.append(None)
            factor.append(None)
            continue
        scale = (1.0 + np.arange(size) / HALF_RANK) ** -0.5
        first.append(rng.standard_normal(size) * scale)
        factor.append(rng.standard_normal((size, RANK)) * scale[:, None])
    ids = [_ids(rng, size, rows, head) for size in SIZES]
    lin, pair = _terms(ids, first, factor)
    z = FIRST_STD * lin / max(lin.std(), 1e-12) + PAIR_STD * pair / max(pair.std(), 1e-12)
    lo, hi = -20.0, 20.0
    for _ in range(50):  # the bias giving the target positive ratio
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 / (1 + np.exp(-(z + mid)))).mean() < POSITIVE else (lo, mid)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(z + lo)))).astype(np.int8)
    table = pa.table({"label": y, **{name: col for name, col in zip(NAMES, ids)}})
    pq.write_table(table, path)
    return dict(zip(NAMES, SIZES))
