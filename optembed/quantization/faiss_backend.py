"""The optional faiss backend of the codebook fit: faiss's k-means and exact nearest-entry search.

Selected by ``QuantizerConfig.kmeans_backend = "faiss"`` (``compress --kmeans-backend faiss``;
needs ``pip install faiss-cpu``). It replaces the torch Lloyd iterations and the encoding of every
row; the weighted start, the weighted sample of rows, the gradient steps and everything after stay
the same. faiss runs on the CPU here whatever the device of the table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from optembed.quantization.pq import ProductQuantizer


def _group(pq: ProductQuantizer, rows: Tensor, g: int) -> np.ndarray:
    return np.ascontiguousarray(pq.split(rows.detach())[:, g].float().cpu().numpy())


@torch.no_grad()
def faiss_kmeans(pq: ProductQuantizer, rows: Tensor, weights: Tensor, iters: int, seed: int) -> None:
    """``iters`` Lloyd iterations per group from the current codebooks (faiss, ``weights`` per row)."""
    import faiss

    if rows.shape[0] < pq.codebook:  # faiss needs a row per entry; nothing to iterate on so few rows
        return
    w = weights.detach().float().cpu().numpy()
    uniform = bool(np.all(w == w[0]))
    for g in range(pq.groups):
        km = faiss.Kmeans(pq.sub_dim, pq.codebook, niter=iters, seed=seed + g, verbose=False,
                          max_points_per_centroid=rows.shape[0], min_points_per_centroid=1)
        start = np.ascontiguousarray(pq.codebooks[g].detach().float().cpu().numpy())
        km.train(_group(pq, rows, g), weights=None if uniform else w, init_centroids=start)
        pq.codebooks.data[g] = torch.from_numpy(km.centroids).to(pq.codebooks.device, pq.codebooks.dtype)


@torch.no_grad()
def faiss_encode(pq: ProductQuantizer, x: Tensor) -> Tensor:
    """Nearest-entry codes ``(N, groups)`` as ``int64`` (exact L2 search), on ``x``'s device."""
    import faiss

    codes = torch.empty(x.shape[0], pq.groups, dtype=torch.long)
    for g in range(pq.groups):
        index = faiss.IndexFlatL2(pq.sub_dim)
        index.add(np.ascontiguousarray(pq.codebooks[g].detach().float().cpu().numpy()))
        _, nearest = index.search(_group(pq, x, g), 1)
        codes[:, g] = torch.from_numpy(nearest[:, 0])
    return codes.to(x.device)
